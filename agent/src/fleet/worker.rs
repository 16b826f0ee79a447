//! `buildagent worker`: the fleet's worker ([`buildagent_fleet::worker`]) with the agent's
//! launcher, which runs each job as `buildagent run` runs a build (the same preparation, the
//! same engine), in process, on a thread and a runtime of its own, with no signal handler and
//! no terminal output.
//!
//! A job becomes the `run` arguments it stands for: `-s` for its sources, `-b` for its
//! buildspec (an inline one is written to the build's directory), `--env-var` for plain-text
//! overrides and `--secret` for Parameter Store and Secrets Manager ones (resolved here, so
//! they are masked), `-i` for its image (with `--executor docker`), `--timeout`, `-a` for S3
//! artifacts, `--cloudwatch-logs /aws/codebuild/<project>:<uuid>` unless disabled,
//! `--s3-logs`, `--git-clone-depth`, `--git-submodules`; and `--no-cache` (builds of a project
//! run side by side here, and a job names no cache).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use buildagent_fleet::job::{Job, VariableType};
use buildagent_fleet::worker::{
    LaunchError, LaunchRequest, Launcher, Notice, Worker, WorkerOptions,
};
use buildagent_runner::engine::BuildOptions;
use buildagent_runner::engine::BuildResult;
use buildagent_runner::events::Stream;
use buildagent_runner::events::{Event, EventKind};
use buildagent_runner::executor::{enable_child_subreaper, Executor, HostExecutor};
use buildagent_runner::fetch::SourceLocation;
use buildagent_runner::secrets::OfflineValues;
use buildagent_spec::{Env, ParameterVariable, SecretReference, SecretVariable, Span, Spanned};
use clap::{Args, Parser, ValueEnum};

use crate::cli::{ColorChoice, RunArgs};
use crate::run::{self, InvalidInput, Launch};

/// `buildagent worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The job queue: its URL, or its name.
    #[arg(long, env = "BUILDAGENT_QUEUE", value_name = "URL|NAME")]
    pub queue: String,

    /// The DynamoDB table of build records.
    #[arg(long, env = "BUILDAGENT_TABLE", value_name = "NAME")]
    pub table: String,

    /// Builds run at once.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub slots: u32,

    /// Where builds run: on this machine, or (jobs with an `imageOverride`) in a container of
    /// that image through Docker.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Host)]
    pub executor: ExecutorKind,

    /// Serve `/healthz`, `/readyz` and `/metrics` on this address (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Exit 0 after this long with nothing running and nothing received.
    #[arg(long, value_name = "DURATION")]
    pub idle_exit: Option<String>,

    /// Take one build, run it, and exit with its status (as `run`).
    #[arg(long)]
    pub once: bool,

    /// How long running builds may go on after the first SIGTERM or SIGINT; then they are
    /// stopped and go back to the queue.
    #[arg(long, default_value = "30m", value_name = "DURATION")]
    pub drain_timeout: String,

    /// Where each build's directory is made (default: the temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// `--executor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// On this machine (an `imageOverride` is ignored, with a warning in the build's log).
    Host,
    /// In a container of the job's `imageOverride` (jobs without one run on this machine).
    Docker,
}

/// Runs the worker until drained, `--once`'s build ended, or `--idle-exit`.
pub fn run(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let invalid = |m: String| anyhow::Error::new(InvalidInput(m));
    let parse = |flag: &str, text: &str| {
        buildagent_runner::plan::parse_duration(text).map_err(|e| invalid(format!("{flag}: {e}")))
    };
    let drain_timeout = parse("--drain-timeout", &args.drain_timeout)?;
    let idle_exit = match &args.idle_exit {
        Some(text) => Some(parse("--idle-exit", text)?),
        None => None,
    };
    let mut options = WorkerOptions::new();
    options.slots = if args.once { 1 } else { args.slots as usize };
    options.once = args.once;
    options.idle_exit = idle_exit;
    options.drain_timeout = drain_timeout;
    if let Some(dir) = &args.work_dir {
        options.work_dir =
            std::path::absolute(dir).with_context(|| format!("--work-dir {}", dir.display()))?;
    }
    // Each build's cgroup holds its daemons when the machine delegates cgroups. Otherwise the
    // worker becomes the daemons' subreaper, as `run` does: a build's sweep knows its own by the
    // CODEBUILD_BUILD_ID in their environment, and never touches another build's. Daemons that
    // cleared their environment belong to no build: `sweeper`, made before any build, ends them
    // when the worker exits.
    let mut sweeper = None;
    if args.executor == ExecutorKind::Host && !HostExecutor::cgroups_available() {
        match enable_child_subreaper() {
            Ok(()) => {
                sweeper = Some(HostExecutor::new());
                eprintln!(
                    "warning: no cgroup v2 delegation here: a build's daemons (setsid) are known \
                     by their CODEBUILD_BUILD_ID; those that clear their environment are ended \
                     when the worker exits"
                );
            }
            Err(e) => eprintln!(
                "warning: no cgroup v2 delegation here, and cannot become a child subreaper \
                 ({e}): a build's daemons (setsid) are not ended with it"
            ),
        }
    }
    // The worker's own loop is light (polls, records); each build has its own thread and runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let worker_id = options.worker_id.clone();
    let slots = options.slots;
    let summary = runtime.block_on(async move {
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".to_string());
        let (queue, records) =
            buildagent_fleet::worker::connect(&region, &args.queue, &args.table).await?;
        let launcher = Arc::new(AgentLauncher {
            docker: args.executor == ExecutorKind::Docker,
            region,
        });
        eprintln!(
            "worker {worker_id}: queue {}, table {}, {slots} slot{}",
            queue.url(),
            args.table,
            if slots == 1 { "" } else { "s" }
        );
        let worker = Worker::new(queue, records, launcher, options, print_notice);
        let server = match args.listen {
            Some(addr) => {
                let listener = buildagent_fleet::worker::http::bind(addr)
                    .await
                    .with_context(|| format!("--listen {addr}"))?;
                eprintln!("listening on http://{}", listener.local_addr()?);
                Some(tokio::spawn(buildagent_fleet::worker::serve_http(
                    listener,
                    worker.health(),
                )))
            }
            None => None,
        };
        let signals = tokio::spawn(watch_signals(worker.shutdown()));
        let summary = worker.run().await;
        signals.abort();
        if let Some(server) = server {
            server.abort();
        }
        if let Some(sweeper) = sweeper {
            let mut ignore = |_: Stream, _: &[u8]| {};
            if let Ok(leaked) = sweeper
                .sweep(BuildOptions::DEFAULT_GRACE, &mut ignore)
                .await
            {
                for p in leaked {
                    eprintln!(
                        "warning: ended a daemon no build claimed: {} ({})",
                        p.pid, p.command_line
                    );
                }
            }
        }
        anyhow::Ok(summary?)
    })?;
    Ok(match (args.once, summary.last_status) {
        (true, Some(status)) => run::exit_code(status),
        _ => ExitCode::SUCCESS,
    })
}

/// The first SIGTERM or SIGINT drains; the second stops the running builds.
async fn watch_signals(shutdown: buildagent_fleet::worker::Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        seen += 1;
        if seen == 1 {
            shutdown.drain();
        } else {
            shutdown.force();
        }
    }
}

/// One line per build start and end (and per problem) on standard error.
fn print_notice(notice: Notice) {
    match notice {
        Notice::Started { id, attempt } if attempt > 1 => {
            eprintln!("started {id} (attempt {attempt})")
        }
        Notice::Started { id, .. } => eprintln!("started {id}"),
        Notice::Finished {
            id,
            status,
            duration,
            reason,
        } => match reason {
            Some(reason) => eprintln!(
                "finished {id} {status} in {:.1}s: {reason}",
                duration.as_secs_f64()
            ),
            None => eprintln!("finished {id} {status} in {:.1}s", duration.as_secs_f64()),
        },
        Notice::Requeued { id } => eprintln!("requeued {id}: stopped by the shutdown"),
        Notice::Invalid { id, reason } => eprintln!("invalid job {id}: {reason}"),
        Notice::Dropped { id, status } => eprintln!("dropped a message of {id} ({status})"),
        Notice::Draining => eprintln!("draining: no new builds"),
        Notice::Problem(message) => eprintln!("warning: {message}"),
        _ => {}
    }
}

/// Runs jobs as `buildagent run` runs builds.
struct AgentLauncher {
    /// `--executor docker`: jobs with an image run in it.
    docker: bool,
    /// The region of the AWS calls (secrets).
    region: String,
}

/// `run`'s arguments, parsed from a job's command line.
#[derive(Parser)]
struct RunLine {
    #[command(flatten)]
    run: RunArgs,
}

impl Launcher for AgentLauncher {
    fn run(
        &self,
        request: LaunchRequest,
        events: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<BuildResult, LaunchError> {
        // One thread: a build runs one command at a time (as `run`).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LaunchError::Fault(format!("starting the build's runtime: {e}")))?;
        runtime.block_on(self.launch(request, events))
    }
}

impl AgentLauncher {
    async fn launch(
        &self,
        request: LaunchRequest,
        events: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<BuildResult, LaunchError> {
        let LaunchRequest {
            job,
            build_number,
            work_dir,
            stop,
            kill_now,
        } = request;
        let mut warnings = Vec::new();
        let (argv, buildspec_in_source) = self.command_line(&job, &work_dir, &mut warnings).await?;
        let args = RunLine::try_parse_from(&argv)
            .map_err(|e| LaunchError::Invalid(format!("job: {}", e.render().to_string().trim())))?
            .run;
        let mut diagnostics = Vec::new();
        let prepared = run::prepare_in(&args, ColorChoice::Never, Some(&work_dir), &mut |line| {
            diagnostics.push(line)
        })
        .map_err(|e| {
            let mut message = format!("{e:#}");
            for d in &diagnostics {
                message.push('\n');
                message.push_str(d);
            }
            if e.downcast_ref::<InvalidInput>().is_some() {
                LaunchError::Invalid(message)
            } else {
                LaunchError::Fault(message)
            }
        })?;
        let run::Prepared {
            spec,
            mut options,
            staging,
            ..
        } = prepared;
        // The build is the job's: its project, uuid and number, not the source's.
        options.identity.project = job.project_name.clone();
        options.identity.uuid = job.uuid().to_string();
        options.identity.number = build_number;
        options.identity.start_time = SystemTime::now();
        if let Some(name) = buildspec_in_source {
            options.buildspec_path = options.source_dir.join(&name);
            options.fetch.buildspec_name = Some(name);
        }
        let sinks = crate::log_sinks::SinkArgs::parse(&args)
            .map_err(|e| LaunchError::Invalid(format!("{e:#}")))?
            .start(&options.identity.uuid, &options.identity.region)
            .await
            .map_err(|e| LaunchError::Fault(format!("{e:#}")))?;
        let image = run::container_for(&args, &options, staging.as_ref());
        let launch = Launch {
            spec,
            options,
            image,
            sinks,
            host: HostExecutor::for_one_of_many,
        };
        let mut warned = false;
        let result = run::execute(launch, stop, kill_now, &mut |_| {}, |event: &Event| {
            events(event);
            // The job's own warnings go in its log, after the start.
            if !warned && matches!(event.kind, EventKind::BuildStarted { .. }) {
                warned = true;
                for message in warnings.drain(..) {
                    events(&Event::new(
                        SystemTime::now(),
                        event.elapsed,
                        EventKind::Warning { message },
                    ));
                }
            }
        })
        .await
        .map_err(|e| LaunchError::Fault(format!("{e:#}")));
        drop(staging);
        result
    }

    /// The `run` command line a job stands for, and the buildspec's path in a fetched source
    /// (when the job names one). Resolves Parameter Store and Secrets Manager overrides.
    async fn command_line(
        &self,
        job: &Job,
        work_dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<(Vec<String>, Option<PathBuf>), LaunchError> {
        let invalid = |m: String| LaunchError::Invalid(m);
        let mut argv: Vec<String> = vec!["run".into()];
        fn push(argv: &mut Vec<String>, flag: &str, value: String) {
            argv.push(flag.to_string());
            argv.push(value);
        }
        let remote = |field: &str, text: &str| {
            match SourceLocation::parse(text) {
            Ok(SourceLocation::Dir(_)) => Err(invalid(format!(
                "`{field}` `{text}`: the worker fetches s3:// and Git sources, not a path on its machine"
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(invalid(format!("`{field}`: {e}"))),
        }
        };
        let primary = job
            .source_location_override
            .as_deref()
            .filter(|l| !l.is_empty() && *l != "NO_SOURCE");
        match primary {
            Some(location) => {
                remote("sourceLocationOverride", location)?;
                push(&mut argv, "-s", location.to_string());
            }
            None => {
                // No source: an empty directory (CODEBUILD_SRC_DIR exists, as in CodeBuild).
                let empty = work_dir.join("no-source");
                std::fs::create_dir_all(&empty)
                    .map_err(|e| LaunchError::Fault(format!("{}: {e}", empty.display())))?;
                push(&mut argv, "-s", empty.display().to_string());
            }
        }
        if let Some(version) = &job.source_version {
            push(&mut argv, "--source-version", version.clone());
        }
        for source in &job.secondary_sources_override {
            remote("secondarySourcesOverride.location", &source.location)?;
            push(
                &mut argv,
                "-s",
                format!("{}:{}", source.source_identifier, source.location),
            );
        }
        for version in &job.secondary_sources_version_override {
            push(
                &mut argv,
                "--secondary-source-version",
                format!("{}={}", version.source_identifier, version.source_version),
            );
        }
        let mut in_source = None;
        if let Some(buildspec) = job.buildspec_override.as_deref() {
            if let Some(buildspec) = job.inline_buildspec() {
                let path = work_dir.join("buildspec-override.yml");
                std::fs::write(&path, buildspec)
                    .map_err(|e| LaunchError::Fault(format!("{}: {e}", path.display())))?;
                push(&mut argv, "-b", path.display().to_string());
            } else if primary.is_none() {
                return Err(invalid(format!(
                    "`buildspecOverride` `{buildspec}` is a path in the source, and the job has no source"
                )));
            } else {
                in_source = Some(PathBuf::from(buildspec));
            }
        }
        let mut parameters = Vec::new();
        let mut secrets = Vec::new();
        for variable in &job.environment_variables_override {
            let spanned = |v: &str| Spanned::new(v.to_string(), Span::default());
            match variable.kind {
                VariableType::Plaintext => push(
                    &mut argv,
                    "--env-var",
                    format!("{}={}", variable.name, variable.value),
                ),
                VariableType::ParameterStore => parameters.push(ParameterVariable {
                    name: spanned(&variable.name),
                    parameter: spanned(&variable.value),
                }),
                VariableType::SecretsManager => secrets.push(SecretVariable {
                    name: spanned(&variable.name),
                    reference: Spanned::new(
                        SecretReference::parse(&variable.value).map_err(|e| {
                            invalid(format!(
                                "`environmentVariablesOverride` {}: {e}",
                                variable.name
                            ))
                        })?,
                        Span::default(),
                    ),
                }),
            }
        }
        if !parameters.is_empty() || !secrets.is_empty() {
            let env = Env {
                parameter_store: parameters,
                secrets_manager: secrets,
                ..Env::default()
            };
            let resolved =
                buildagent_runner::secrets::resolve(&env, &OfflineValues::new(), &self.region)
                    .await
                    .map_err(|e| invalid(format!("`environmentVariablesOverride`: {e}")))?;
            for value in resolved {
                // Masked in the log, as CodeBuild masks them.
                push(
                    &mut argv,
                    "--secret",
                    format!("{}={}", value.name, value.value),
                );
            }
        }
        match (&job.image_override, self.docker) {
            (Some(image), true) => {
                push(&mut argv, "-i", image.clone());
                if job.privileged_mode_override == Some(true) {
                    argv.push("-d".into());
                }
            }
            (Some(image), false) => warnings.push(format!(
                "imageOverride `{image}` is ignored: this worker runs builds on its host (--executor host)"
            )),
            (None, _) => {}
        }
        let minutes = job.timeout_in_minutes_override.unwrap_or(60);
        push(&mut argv, "--timeout", format!("{minutes}m"));
        if let Some(artifacts) = job.artifacts_override.as_ref().filter(|a| a.kind == "S3") {
            let bucket = artifacts.location.as_deref().unwrap_or_default();
            let path = artifacts
                .path
                .as_deref()
                .unwrap_or_default()
                .trim_matches('/');
            push(
                &mut argv,
                "-a",
                if path.is_empty() {
                    format!("s3://{bucket}")
                } else {
                    format!("s3://{bucket}/{path}")
                },
            );
            if artifacts.namespace_type.as_deref() == Some("BUILD_ID") {
                push(&mut argv, "--artifacts-namespace", "build-id".into());
            }
            if artifacts.packaging.as_deref() == Some("NONE") {
                push(&mut argv, "--artifacts-packaging", "none".into());
            }
            if let Some(name) = artifacts.name.as_deref().filter(|n| !n.trim().is_empty()) {
                push(&mut argv, "--artifacts-name", name.to_string());
            }
        }
        let logs = job.logs_config_override.clone().unwrap_or_default();
        let cloudwatch = logs.cloud_watch_logs.unwrap_or_default();
        if cloudwatch.status != "DISABLED" {
            let group = cloudwatch
                .group_name
                .unwrap_or_else(|| format!("/aws/codebuild/{}", job.project_name));
            let stream = match cloudwatch.stream_name {
                Some(prefix) => format!("{prefix}/{}", job.uuid()),
                None => job.uuid().to_string(),
            };
            push(&mut argv, "--cloudwatch-logs", format!("{group}:{stream}"));
        }
        if let Some(s3) = logs.s3_logs.filter(|s| s.status == "ENABLED") {
            let location = s3.location.unwrap_or_default();
            let location = location.strip_prefix("s3://").unwrap_or(&location);
            push(&mut argv, "--s3-logs", format!("s3://{location}"));
        }
        if let Some(depth) = job.git_clone_depth_override {
            push(&mut argv, "--git-clone-depth", depth.to_string());
        }
        if job
            .git_submodules_config_override
            .as_ref()
            .is_some_and(|s| s.fetch_submodules)
        {
            argv.push("--git-submodules".into());
        }
        argv.push("--no-cache".into());
        Ok((argv, in_source))
    }
}
