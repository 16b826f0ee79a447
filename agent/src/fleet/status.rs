//! `buildagent status`, `stop` and `list`: the records, as a table or as BatchGetBuilds' JSON.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use buildagent_fleet::record::{rfc3339, BuildRecord, BuildStatus, RecordError, StopOutcome};
use buildagent_fleet::setup::Clients;
use serde_json::json;

use super::{ListArgs, OutputFormat, StatusArgs, StopArgs};
use crate::run::invalid;

/// Prints the records of the ids; exit status 1 when one is not found (the JSON lists it in
/// `buildsNotFound`, as BatchGetBuilds).
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let table = super::table(&args.table)?;
    let (records, region) = super::runtime()?.block_on(async {
        let clients = Clients::from_env(super::DEFAULT_REGION).await;
        let store = super::store(&clients, table);
        let records = store
            .get_many(&args.ids)
            .await
            .map_err(super::record_error)?;
        anyhow::Ok((records, clients.region))
    })?;
    let mut missing: Vec<&String> = Vec::new();
    for id in &args.ids {
        if !records.iter().any(|r| &r.id == id) && !missing.contains(&id) {
            missing.push(id);
        }
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Json => {
            let value = json!({
                "builds": records.iter().map(|r| r.to_codebuild_json(&region, super::ACCOUNT)).collect::<Vec<_>>(),
                "buildsNotFound": missing,
            });
            serde_json::to_writer_pretty(&mut out, &value)?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            write_table(&mut out, &records)?;
            for id in &missing {
                eprintln!("no build `{id}` in table {table}");
            }
        }
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Stops a build: at once when it is queued, through its worker when it runs; a finished one is
/// an error naming its status (exit status 1).
pub fn stop(args: &StopArgs) -> anyhow::Result<ExitCode> {
    let table = super::table(&args.table)?;
    let outcome = super::runtime()?.block_on(async {
        let clients = Clients::from_env(super::DEFAULT_REGION).await;
        super::store(&clients, table).request_stop(&args.id).await
    });
    let id = &args.id;
    match outcome {
        Ok(StopOutcome::Stopped) => println!("{id}: STOPPED (it was queued)"),
        Ok(StopOutcome::Requested) => {
            println!("{id}: stop requested; its worker stops the build within seconds")
        }
        // Nothing is changed; an error, so that a script learns the build was not stopped.
        Err(e @ RecordError::AlreadyFinished { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(RecordError::NotFound(_)) => {
            return Err(invalid(format!("no build `{id}` in table {table}")))
        }
        Err(e) => return Err(super::record_error(e)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists the builds, newest first.
pub fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let table = super::table(&args.table)?;
    let status = args
        .status
        .as_deref()
        .map(str::parse::<BuildStatus>)
        .transpose()
        .map_err(|e| invalid(format!("--status: {e}")))?;
    let (records, region) = super::runtime()?.block_on(async {
        let clients = Clients::from_env(super::DEFAULT_REGION).await;
        let store = super::store(&clients, table);
        let records = store
            .list(args.project.as_deref(), status)
            .await
            .map_err(super::record_error)?;
        anyhow::Ok((records, clients.region))
    })?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Json => {
            let value = json!({
                "builds": records.iter().map(|r| r.to_codebuild_json(&region, super::ACCOUNT)).collect::<Vec<_>>(),
            });
            serde_json::to_writer_pretty(&mut out, &value)?;
            writeln!(out)?;
        }
        OutputFormat::Table => write_table(&mut out, &records)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per build: id, number, status, phase, submit time, duration, attempt and worker,
/// and the reason of a build that did not succeed.
fn write_table(out: &mut impl Write, records: &[BuildRecord]) -> std::io::Result<()> {
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            let end = r.end_time.unwrap_or_else(SystemTime::now);
            let duration = r
                .start_time
                .map(|start| format_duration(end.duration_since(start).unwrap_or_default()))
                .unwrap_or_else(|| "-".into());
            let worker = match &r.worker {
                Some(w) => format!("{} ({})", w, r.attempt),
                None => "-".into(),
            };
            let mut status = r.status.to_string();
            if r.stop_requested && r.status == BuildStatus::InProgress {
                status.push_str(" (stopping)");
            }
            [
                r.id.clone(),
                r.build_number.to_string(),
                status,
                r.current_phase.clone(),
                rfc3339(r.queued_at),
                duration,
                worker,
            ]
        })
        .collect();
    let header = [
        "ID",
        "NUMBER",
        "STATUS",
        "PHASE",
        "SUBMITTED",
        "DURATION",
        "WORKER (ATTEMPT)",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &header)?;
    for (row, record) in rows.iter().zip(records) {
        line(out, &row.iter().map(String::as_str).collect::<Vec<_>>())?;
        if let Some(reason) = &record.status_reason {
            writeln!(out, "  {reason}")?;
        }
    }
    Ok(())
}

fn format_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}.{}s", secs, d.subsec_millis() / 100)
    }
}
