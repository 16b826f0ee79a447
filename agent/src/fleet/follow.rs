//! A build's log by its id: the record says where the log is, CloudWatch Logs has it; following
//! reads both until the record says the build has finished.

use std::io::{self, Write};
use std::time::Duration;

use buildagent_fleet::record::{BuildRecord, RecordStore};
use buildagent_runner::logs::read::read_available;

use crate::run::invalid;

/// How often a follower asks for new lines and reads the record.
const POLL: Duration = Duration::from_secs(1);

/// Prints the log of build `id` to stdout; with `follow`, until the build has finished (the
/// record says so and every line written before is printed). Returns the last record read, or
/// `None` when interrupted (Ctrl-C).
pub async fn print_log(
    logs: &aws_sdk_cloudwatchlogs::Client,
    store: &RecordStore,
    id: &str,
    follow: bool,
    color: bool,
) -> anyhow::Result<Option<BuildRecord>> {
    let read = follow_log(logs, store, id, follow, color);
    tokio::select! {
        result = read => result.map(Some),
        _ = tokio::signal::ctrl_c() => Ok(None),
    }
}

async fn follow_log(
    logs: &aws_sdk_cloudwatchlogs::Client,
    store: &RecordStore,
    id: &str,
    follow: bool,
    color: bool,
) -> anyhow::Result<BuildRecord> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut token: Option<String> = None;
    let mut record = get(store, id).await?;
    loop {
        // Read the status before the log: a build seen finished has written its last line.
        let finished = record.status.is_finished();
        if let Some(location) = &record.logs {
            drain(
                logs,
                &location.group_name,
                &location.stream_name,
                &mut token,
                &mut out,
                color,
                follow,
            )
            .await?;
        }
        if finished || !follow {
            out.flush()?;
            if record.logs.is_none() {
                eprintln!("build {id} has no log ({})", record.status);
            }
            return Ok(record);
        }
        tokio::time::sleep(POLL).await;
        record = get(store, id).await?;
    }
}

/// The record of `id`; a missing one is bad input.
pub async fn get(store: &RecordStore, id: &str) -> anyhow::Result<BuildRecord> {
    store
        .get(id)
        .await
        .map_err(super::record_error)?
        .ok_or_else(|| invalid(format!("no build `{id}` in table {}", store.table())))
}

/// Prints the stream's events after `token`, up to its end for now (a stream not made yet has
/// none: the worker names it before its first line arrives); `flush`: at once.
async fn drain(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    token: &mut Option<String>,
    out: &mut impl Write,
    color: bool,
    flush: bool,
) -> anyhow::Result<()> {
    let mut failed = None;
    read_available(
        logs,
        group,
        stream,
        token,
        |_, message| match crate::logs::print(&mut *out, message, color) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    )
    .await?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if flush {
        out.flush()?;
    }
    Ok(())
}

/// `buildagent logs --table T ID [-f]`.
pub fn logs(
    table: &str,
    id: &str,
    follow: bool,
    color: crate::cli::ColorChoice,
) -> anyhow::Result<std::process::ExitCode> {
    use std::io::IsTerminal;
    let color = crate::color::enabled(color, io::stdout().is_terminal());
    super::runtime()?.block_on(async {
        let clients = buildagent_fleet::setup::Clients::from_env(super::DEFAULT_REGION).await;
        let store = super::store(&clients, table);
        print_log(&clients.logs, &store, id, follow, color).await?;
        Ok(std::process::ExitCode::SUCCESS)
    })
}
