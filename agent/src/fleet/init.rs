//! `buildagent fleet init`: the fleet's AWS resources, then the command lines that use them.

use std::io::Write;
use std::process::ExitCode;

use buildagent_fleet::setup::{self, Clients, FleetSpec};
use buildagent_runner::plan;

use super::InitArgs;
use crate::run::invalid;

/// Creates (or keeps) the resources and prints them.
pub fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let queue = super::queue(&args.queue)?;
    let table = super::table(&args.table)?;
    let visibility = plan::parse_duration(&args.visibility_timeout)
        .map_err(|e| invalid(format!("--visibility-timeout: {e}")))?;
    let spec = FleetSpec {
        queue: queue.to_string(),
        table: table.to_string(),
        bucket: args.bucket.clone(),
        log_group: args.log_group.clone(),
        visibility_timeout: visibility,
        max_receive_count: args.max_receive_count,
    };
    spec.check().map_err(|e| invalid(e.to_string()))?;
    let fleet = super::runtime()?.block_on(async {
        let clients = Clients::from_env(super::DEFAULT_REGION).await;
        setup::init(&clients, &spec).await
    })?;
    let mut out = std::io::stdout().lock();
    for action in &fleet.actions {
        eprintln!("{action}");
    }
    writeln!(out, "queue: {}", fleet.queue_url)?;
    writeln!(
        out,
        "dead-letter queue: {} (after {} receives)",
        fleet.dead_letter_url, spec.max_receive_count
    )?;
    writeln!(out, "table: {}", fleet.table)?;
    writeln!(out, "bucket: {}", fleet.bucket)?;
    match &fleet.log_group {
        Some(group) => writeln!(out, "log group: {group}")?,
        None => writeln!(
            out,
            "log group: /aws/codebuild/<project> (made by the workers)"
        )?,
    }
    writeln!(out)?;
    writeln!(
        out,
        "worker: buildagent worker --queue {} --table {}",
        fleet.queue_url, fleet.table
    )?;
    let log_group = fleet
        .log_group
        .as_ref()
        .map(|g| format!(" --log-group {g}"))
        .unwrap_or_default();
    writeln!(
        out,
        "submit: buildagent submit --queue {} --table {} --source-bucket {}{log_group} -s DIR",
        fleet.queue_url, fleet.table, fleet.bucket
    )?;
    Ok(ExitCode::SUCCESS)
}
