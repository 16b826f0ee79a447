//! `buildagent logs GROUP[:STREAM] [-f]`: a build's log read back from CloudWatch Logs.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use buildagent_runner::logs::read::{latest_stream, read_stream};
use buildagent_runner::logs::StreamName;

use crate::cli::{ColorChoice, LogsArgs};
use crate::run::InvalidInput;

/// How often `-f` asks for new lines.
const POLL: Duration = Duration::from_secs(1);

/// Prints the stream (following it with `-f` until interrupted).
pub fn run(args: &LogsArgs, color: ColorChoice) -> anyhow::Result<ExitCode> {
    if let Some(table) = args.table.as_deref().filter(|t| !t.is_empty()) {
        if is_build_id(&args.stream) {
            return crate::fleet::follow::logs(table, &args.stream, args.follow, color);
        }
    }
    let name: StreamName = args
        .stream
        .parse()
        .map_err(|e| anyhow::Error::new(InvalidInput(format!("{e}"))))?;
    let color = crate::color::enabled(color, io::stdout().is_terminal());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = buildagent_runner::logs::read::client_from_env("us-east-1").await;
        let stream = match &name.stream {
            Some(stream) => stream.clone(),
            None => latest_stream(&client, &name.group).await?,
        };
        let mut out = io::BufWriter::new(io::stdout().lock());
        let mut failed: Option<io::Error> = None;
        let read = read_stream(
            &client,
            &name.group,
            &stream,
            args.follow.then_some(POLL),
            |_, message| {
                let written = print(&mut out, message, color).and_then(|()| {
                    // Following: each line as it comes; else at the end.
                    if args.follow {
                        out.flush()
                    } else {
                        Ok(())
                    }
                });
                match written {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            },
        );
        tokio::select! {
            result = read => result?,
            _ = tokio::signal::ctrl_c() => {}
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}

/// A fleet build's id, `project:uuid` (a log group has a `/` or no uuid after its `:`).
fn is_build_id(text: &str) -> bool {
    text.split_once(':').is_some_and(|(project, uuid)| {
        !project.is_empty()
            && project
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && uuid::Uuid::parse_str(uuid).is_ok()
    })
}

/// One event's message, as the terminal renderer draws it (the `[Container]` stamp dimmed).
pub fn print(out: &mut impl Write, message: &str, color: bool) -> io::Result<()> {
    // `[Container] YYYY/MM/DD HH:MM:SS.ffffff` is 38 bytes.
    if color && message.starts_with("[Container] ") && message.is_char_boundary(38) {
        let (stamp, rest) = message.split_at(38);
        return write!(out, "\x1b[2m{stamp}\x1b[0m{rest}");
    }
    out.write_all(message.as_bytes())
}
