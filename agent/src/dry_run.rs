//! `buildagent run --dry-run`: where each variable of the build comes from, and nothing run.
//!
//! The environment is assembled exactly as DOWNLOAD_SOURCE assembles it, Parameter Store and
//! Secrets Manager values included (from `--secrets-file` or AWS), so a value that cannot be
//! resolved is reported as the build would report it, with the same exit status (1). No command
//! runs, the source is not copied, no cache is restored, nothing is written.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use buildagent_runner::engine::{Build, BuildOptions, ResolvedEnvironment};
use buildagent_runner::executor::HostExecutor;
use buildagent_runner::plan::{Origin, Variable};
use buildagent_runner::secrets::{ResolveError, ValueSource};
use buildagent_spec::Buildspec;

/// What a secret's value is shown as.
const REDACTED: &str = "***";

/// The layers from the lowest precedence to the highest, the order the listing follows.
const LAYERS: [Origin; 7] = [
    Origin::Executor,
    Origin::Buildspec,
    Origin::ParameterStore,
    Origin::SecretsManager,
    Origin::EnvFile,
    Origin::Agent,
    Origin::Override,
];

/// Variables of this machine's environment that are credentials: never printed, although a
/// build would not mask them (only `-c` passes them as masked overrides).
const CREDENTIALS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Resolves the build's environment and prints it (JSON with `json`). `image`: the build would
/// run in a build image, whose `ENV` (the executor layer) a dry run does not read.
pub fn run(
    spec: Buildspec,
    options: BuildOptions,
    json: bool,
    image: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The executor is never asked to run anything: resolving the environment only reads.
    let build = Build::new(spec, options, Arc::new(HostExecutor::new()));
    let resolved = runtime.block_on(build.resolve_environment());
    let mut out = io::stdout().lock();
    match resolved {
        Ok(env) if json => write_json(&mut out, &env)?,
        Ok(env) => write_text(&mut out, &env, image)?,
        Err(e) => {
            out.flush()?;
            report_failure(&e, json)?;
            return Ok(ExitCode::from(1));
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The value as shown: `***` for a secret or a credential, else the value with control
/// characters escaped (one variable per line).
fn shown(var: &Variable) -> String {
    if var.secret || (var.origin == Origin::Executor && CREDENTIALS.contains(&var.name.as_str())) {
        REDACTED.to_string()
    } else {
        var.value.escape_debug().to_string()
    }
}

/// The variables in listing order: by layer, then in the order they were first set.
fn ordered(env: &ResolvedEnvironment) -> Vec<&Variable> {
    let mut vars: Vec<&Variable> = env.environment.variables().iter().collect();
    vars.sort_by_key(|v| LAYERS.iter().position(|o| *o == v.origin));
    vars
}

/// Where a resolved value came from: `/app/db/password from AWS`.
fn detail(env: &ResolvedEnvironment, var: &Variable) -> Option<String> {
    let value = env
        .resolved
        .iter()
        .find(|r| r.name == var.name && r.origin == var.origin)?;
    let source = match value.source {
        ValueSource::Aws => "AWS",
        ValueSource::SecretsFile => "--secrets-file",
    };
    Some(format!("{} from {source}", value.reference))
}

fn write_text(out: &mut impl Write, env: &ResolvedEnvironment, image: bool) -> io::Result<()> {
    let vars = ordered(env);
    writeln!(
        out,
        "Dry run: the environment the build would start with (nothing was run). Each variable is \
         listed under the highest layer that sets it, lowest layer first; secrets are shown as {REDACTED}."
    )?;
    if image {
        writeln!(
            out,
            "The executor layer (the build image's ENV) is not read in a dry run."
        )?;
    }
    let origin_width = vars
        .iter()
        .map(|v| v.origin.to_string().len())
        .chain([6])
        .max()
        .unwrap_or(6);
    let name_width = vars
        .iter()
        .map(|v| v.name.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    writeln!(
        out,
        "{:origin_width$}  {:name_width$}  VALUE",
        "ORIGIN", "NAME"
    )?;
    for var in vars {
        let mut line = format!(
            "{:origin_width$}  {:name_width$}  {}",
            var.origin.to_string(),
            var.name,
            shown(var)
        );
        if let Some(detail) = detail(env, var) {
            line.push_str(&format!("  ({detail})"));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn write_json(out: &mut impl Write, env: &ResolvedEnvironment) -> io::Result<()> {
    let variables: Vec<serde_json::Value> = ordered(env)
        .into_iter()
        .map(|var| {
            let resolved = env
                .resolved
                .iter()
                .find(|r| r.name == var.name && r.origin == var.origin);
            serde_json::json!({
                "name": var.name,
                "value": shown(var),
                "origin": var.origin,
                "secret": var.secret,
                "reference": resolved.map(|r| r.reference.as_str()),
                "source": resolved.map(|r| r.source),
            })
        })
        .collect();
    let object = serde_json::json!({ "dry_run": true, "variables": variables });
    serde_json::to_writer(&mut *out, &object)?;
    writeln!(out)
}

/// The failure a build would end with, as its log would show it (on standard error).
fn report_failure(e: &ResolveError, json: bool) -> io::Result<()> {
    let mut err = io::stderr().lock();
    if json {
        let object = serde_json::json!({
            "dry_run": true,
            "phase": "DOWNLOAD_SOURCE",
            "status": "FAILED",
            "context": { "code": e.context_code(), "message": e.message },
        });
        serde_json::to_writer(&mut err, &object)?;
        writeln!(err)
    } else {
        writeln!(err, "Phase complete: DOWNLOAD_SOURCE State: FAILED")?;
        writeln!(
            err,
            "Phase context status code: {} Message: {}",
            e.context_code(),
            e.message
        )
    }
}
