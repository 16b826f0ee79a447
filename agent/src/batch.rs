//! `buildagent run --batch`: the buildspec's `batch` section, every build of it on this machine.
//!
//! The options of a single run are made as `run` makes them ([`crate::run::prepare`]) and become
//! the template of every child; the runner's [`Batch`] does the rest. This module validates the
//! batch (exit status 2 before anything runs), loads each child's buildspec, and renders the
//! batch's events ([`crate::batch_render`]).

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use buildagent_runner::batch::events::BatchEvent;
use buildagent_runner::batch::plan::{self, BatchKind};
use buildagent_runner::batch::{Batch, BatchChild, BatchOptions, Launcher};
use buildagent_runner::events::CancelReason;
use buildagent_runner::executor::{enable_child_subreaper, HostExecutor, StopRequest};
use buildagent_runner::location::Location;
use buildagent_spec::{parse_file, ParseOptions};
use tokio_util::sync::CancellationToken;

use crate::batch_render::{self, BatchReporter};
use crate::cli::{ColorChoice, LogFormat, RunArgs};
use crate::run::{invalid, prepare, Prepared};

/// Runs the batch and returns its exit status.
pub fn run(args: &RunArgs, color: ColorChoice) -> anyhow::Result<ExitCode> {
    if args.mount_source {
        return Err(invalid(
            "--batch builds each build in its own copy of the source; -m cannot be used with it",
        ));
    }
    if args.output_env.is_some() {
        return Err(invalid(
            "--output-env is for a single build; with --batch each build's exported variables are in its log and JSON events",
        ));
    }
    if args.cloudwatch_logs.is_some() || args.s3_logs.is_some() {
        // Each child would need its own stream or object; until that exists, say so up front.
        return Err(invalid(
            "--cloudwatch-logs and --s3-logs are for a single build; with --batch use --log-dir (one log per build)",
        ));
    }
    let batch_timeout = match &args.batch_timeout {
        Some(text) => Some(
            buildagent_runner::plan::parse_duration(text)
                .map_err(|e| invalid(format!("--batch-timeout: {e}")))?,
        ),
        None => None,
    };
    if args.jobs == Some(0) {
        return Err(invalid("-j 0: at least one build must be able to run"));
    }
    let Prepared {
        spec,
        text,
        buildspec_path,
        primary,
        options: template,
        staging,
    } = prepare(args, color)?;
    // Each build of a batch copies the source afresh; a fetched source would be fetched once per
    // build into one place. Until the batch fetches once and copies, it takes directories only.
    let (Some(primary), true) = (primary, template.fetch.sources.is_empty()) else {
        return Err(invalid(
            "--batch builds from local source directories; fetch a Git or S3 source first (git clone) and pass the directory with -s",
        ));
    };
    if args.combine_artifacts && matches!(template.artifacts, Some(Location::S3(_))) {
        return Err(invalid(
            "--combine-artifacts needs a local -a directory (s3:// artifacts go to <prefix>/<identifier>/)",
        ));
    }
    let shown = buildspec_path.display().to_string();
    let stderr_color = crate::color::stderr(color);
    let Some(batch) = spec.batch.clone() else {
        return Err(invalid(format!(
            "{shown} has no `batch` section: --batch needs one (build-list, build-graph, build-matrix or build-fanout)"
        )));
    };
    let Some(kind) = BatchKind::of(&batch) else {
        return Err(invalid(format!(
            "{shown}: the `batch` section defines no builds"
        )));
    };
    let problems = buildagent_spec::batch::check(&batch, args.max_builds);
    if !problems.is_empty() {
        for d in &problems {
            eprintln!("{}", d.render(&text, &shown, stderr_color));
        }
        return Err(invalid(format!("{shown}: the batch cannot run")));
    }

    // Every child's buildspec is read now: a batch with a broken one does not start at all.
    let mut children = Vec::new();
    for child in plan::expand(&batch) {
        let (spec, path) = match &child.buildspec {
            None => (spec.clone(), buildspec_path.clone()),
            Some(relative) => {
                let path = primary.join(relative);
                let (child_text, parsed) = parse_file(
                    &path,
                    &ParseOptions {
                        strict: args.strict,
                    },
                )
                .map_err(|e| {
                    invalid(format!(
                        "build `{}`: buildspec {}: {e}",
                        child.identifier,
                        path.display()
                    ))
                })?;
                let child_shown = path.display().to_string();
                for d in &parsed.diagnostics {
                    eprintln!("{}", d.render(&child_text, &child_shown, stderr_color));
                }
                let Some(child_spec) = parsed.buildspec else {
                    return Err(invalid(format!(
                        "build `{}`: {child_shown} is not a valid buildspec",
                        child.identifier
                    )));
                };
                (child_spec, path)
            }
        };
        children.push(BatchChild {
            plan: child,
            spec,
            buildspec_path: path,
        });
    }

    let work_dir = match &staging {
        Some(dir) => dir.path().to_path_buf(),
        None => std::env::temp_dir(),
    };
    let mut options = BatchOptions::new(work_dir);
    if let Some(jobs) = args.jobs {
        options.jobs = jobs;
    }
    options.fast_fail = args.fast_fail || batch.fast_fail;
    options.timeout = batch_timeout;
    options.combine_artifacts = args.combine_artifacts;
    options.new_uuid = Arc::new(|| uuid::Uuid::new_v4().to_string());
    let launcher = match crate::run::container_options(args, &template) {
        Some(container) => Launcher::Containers(container),
        None => Launcher::Host,
    };

    let format = args.log_format.unwrap_or(if io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Codebuild
    });
    if args.dry_run {
        return dry_run(kind, &children, &options);
    }
    let stdout_color = crate::color::enabled(color, io::stdout().is_terminal());
    let mut reporters: Vec<Box<dyn BatchReporter + Send>> =
        vec![batch_render::for_stdout(format, stdout_color)];
    if let Some(path) = &args.log_file {
        let file = std::fs::File::create(path)
            .with_context(|| format!("--log-file {}", path.display()))?;
        reporters.push(Box::new(batch_render::Prefixed::new(
            io::BufWriter::new(file),
            false,
        )));
    }
    if let Some(dir) = &args.log_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--log-dir {}", dir.display()))?;
        reporters.push(Box::new(batch_render::LogDir::new(dir)));
    }

    // Each build's cgroup holds its daemons, when the machine gives it one; otherwise they are
    // reparented to the agent, and each build's end ends those that carry its
    // CODEBUILD_BUILD_ID (the batch's end, those that cleared their environment).
    let contained = HostExecutor::cgroups_available();
    if !contained {
        if let Err(e) = enable_child_subreaper() {
            eprintln!("warning: cannot become a child subreaper ({e}); daemons the builds start may outlive them");
        }
    }
    // One thread carries every build, as it carries one in `run`: builds mostly wait for their
    // commands (the batch runs them as local tasks).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let runner = Batch::new(kind, children, template, options, launcher);
    let result = runtime.block_on(async move {
        let stop = StopRequest::new();
        let kill_now = CancellationToken::new();
        let signals = tokio::spawn(crate::run::watch_signals(stop.clone(), kill_now.clone()));
        let render_error: Arc<Mutex<Option<io::Error>>> = Arc::default();
        let errors = render_error.clone();
        let stop_on_error = stop.clone();
        let result = runner
            .run(stop.clone(), kill_now, move |event: BatchEvent| {
                for r in reporters.iter_mut() {
                    if let Err(e) = r.report(&event) {
                        // A closed stdout stops the batch; it still cleans up.
                        let mut slot = errors.lock().unwrap_or_else(|p| p.into_inner());
                        if slot.is_none() {
                            *slot = Some(e);
                            stop_on_error.request(CancelReason::Signal);
                        }
                    }
                }
            })
            .await;
        signals.abort();
        result
    });
    drop(staging);
    let _ = io::stdout().flush();
    Ok(crate::run::exit_code(result.status))
}

/// `--dry-run --batch`: the builds the batch would run, and nothing else.
fn dry_run(
    kind: BatchKind,
    children: &[BatchChild],
    options: &BatchOptions,
) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{} with {} build(s), {} at a time{}",
        kind.as_str(),
        children.len(),
        options.jobs,
        if options.fast_fail { ", fast-fail" } else { "" }
    )?;
    for child in children {
        let plan = &child.plan;
        let mut line = format!("  {}", plan.identifier);
        if !plan.description.is_empty() {
            line.push_str(&format!("  [{}]", plan.description));
        }
        if !plan.depend_on.is_empty() {
            line.push_str(&format!("  after {}", plan.depend_on.join(", ")));
        }
        if plan.ignore_failure {
            line.push_str("  (failure ignored)");
        }
        line.push_str(&format!("  buildspec {}", display(&child.buildspec_path)));
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
