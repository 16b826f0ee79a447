//! `buildagent run`: wire the options to the engine, render its events, map the status.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{bail, Context};
use buildagent_runner::artifacts::Packaging;
use buildagent_runner::engine::{Build, BuildOptions, BuildResult, Namespace};
use buildagent_runner::events::{BuildStatus, CancelReason, Event};
use buildagent_runner::executor::container::StartProgress;
use buildagent_runner::executor::{
    enable_child_subreaper, ContainerExecutor, ContainerOptions, HostExecutor, StopRequest,
};
use buildagent_runner::fetch::{FetchPlan, RemoteSource, SourceLocation};
use buildagent_runner::location::Location;
use buildagent_runner::plan::{self, BuildIdentity};
use buildagent_runner::secrets::OfflineValues;
use buildagent_runner::source;
use buildagent_spec::{parse_file, Buildspec, ParseOptions};
use tokio_util::sync::CancellationToken;

use crate::cli::{
    ArtifactsNamespace, ArtifactsPackaging, ColorChoice, LogFormat, RunArgs, EXIT_FAULT,
    EXIT_INVALID,
};
use crate::log_sinks::SinkHook;
use crate::render::{CodeBuildLog, JsonLines, Reporter};

/// An error that is the user's input, not the agent's fault: exit status 2.
#[derive(Debug)]
pub struct InvalidInput(pub String);

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

pub fn invalid(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InvalidInput(message.into()))
}

/// What `run` and `run --batch` share: the parsed buildspec and the options of a build, made
/// from the arguments.
pub struct Prepared {
    /// The buildspec.
    pub spec: Buildspec,
    /// Its text (for diagnostics) and where it was read from.
    pub text: String,
    /// Where the buildspec was read from.
    pub buildspec_path: PathBuf,
    /// The primary source directory; `None` when it is fetched (Git, S3) in DOWNLOAD_SOURCE.
    pub primary: Option<PathBuf>,
    /// The options of the build (for a batch: the template of each child's).
    pub options: BuildOptions,
    /// The directory the source copy is made in (removed when dropped); `None` with -m.
    pub staging: Option<tempfile::TempDir>,
}

/// Reads the arguments, the buildspec (showing its diagnostics) and the files they name, and
/// makes the build's options. Problems with them are invalid input (exit status 2).
pub fn prepare(args: &RunArgs, color: ColorChoice) -> anyhow::Result<Prepared> {
    prepare_in(args, color, None, &mut |line| eprintln!("{line}"))
}

/// [`prepare`] for a caller without a terminal (the fleet worker): the buildspec's diagnostics
/// go to `show`, and the source copy is made under `staging_root` when given (else in a
/// temporary directory).
pub fn prepare_in(
    args: &RunArgs,
    color: ColorChoice,
    staging_root: Option<&Path>,
    show: &mut dyn FnMut(String),
) -> anyhow::Result<Prepared> {
    let timeout =
        plan::parse_duration(&args.timeout).map_err(|e| invalid(format!("--timeout: {e}")))?;
    let grace = plan::parse_duration(&args.grace).map_err(|e| invalid(format!("--grace: {e}")))?;
    let (primary_location, secondary) = sources(&args.sources)?;
    let remote = !primary_location.is_dir() || secondary.iter().any(|(_, s)| !s.is_dir());
    if args.source_version.is_some() && primary_location.is_dir() {
        return Err(invalid(
            "--source-version: the primary source is a directory; versions are for Git and S3 sources",
        ));
    }
    let secondary_versions = secondary_versions(&args.secondary_source_version, &secondary)?;
    let primary = match &primary_location {
        SourceLocation::Dir(dir) => {
            let dir =
                std::path::absolute(dir).with_context(|| format!("source `{}`", dir.display()))?;
            if !dir.is_dir() {
                return Err(invalid(format!(
                    "source directory `{}` does not exist",
                    dir.display()
                )));
            }
            Some(dir)
        }
        _ if args.mount_source => {
            return Err(invalid(format!(
                "-m builds in a local directory; `{primary_location}` is fetched into a new one"
            )))
        }
        _ if args.dry_run && args.buildspec.is_none() && args.buildspec_arg.is_none() => {
            return Err(invalid(format!(
                "--dry-run fetches nothing, and the buildspec is in `{primary_location}`: name \
                 one with -b FILE"
            )))
        }
        _ => None,
    };
    let parse_options = ParseOptions {
        strict: args.strict,
    };
    // The buildspec of a fetched primary source is read from it once fetched (in DOWNLOAD_SOURCE).
    let given_buildspec = args.buildspec.is_some() || args.buildspec_arg.is_some();
    let (spec, text, buildspec_path) = match &primary {
        Some(dir) => read_buildspec(args, dir, &parse_options, color, show)?,
        None if given_buildspec => {
            read_buildspec(args, Path::new("."), &parse_options, color, show)?
        }
        None => (Buildspec::default(), String::new(), PathBuf::new()),
    };
    let env_file = match &args.env_file {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("--env-file {}: {e}", path.display())))?;
            plan::parse_env_file(&text)
                .map_err(|e| invalid(format!("--env-file {}: {e}", path.display())))?
        }
    };
    let secrets_file = match &args.secrets_file {
        None => OfflineValues::new(),
        Some(path) => read_secrets_file(path)?,
    };
    let mut overrides = pairs("--env-var", &args.env_vars)?;
    let mut secrets = pairs("--secret", &args.secrets)?;
    if args.aws_credentials {
        // As the local agent's -c: the AWS settings of this machine, keys and tokens masked.
        for (name, value) in std::env::vars() {
            if !name.starts_with("AWS_") {
                continue;
            }
            if matches!(
                name.as_str(),
                "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN"
            ) {
                secrets.push((name, value));
            } else {
                overrides.push((name, value));
            }
        }
    }

    // The build runs in a fresh copy unless -m (made in DOWNLOAD_SOURCE, removed afterwards). In a
    // build image the copy is at CodeBuild's path, /codebuild/output/src<N>/src, when this machine
    // lets the agent create it (the directory is mounted at the same path in the container).
    // Fetched sources go there too: the primary as src, a secondary one as secondary/<id>.
    let staging = if !args.mount_source || remote {
        Some(source_copy_dir(args.image.is_some(), staging_root)?)
    } else {
        None
    };
    let staged = |name: &str| staging.as_ref().map(|s| s.path().join(name));
    let (source_dir, stage_from) = match (&primary, args.mount_source) {
        (Some(dir), true) => (dir.clone(), None),
        (Some(dir), false) => (staged("src").unwrap_or_default(), Some(dir.clone())),
        (None, _) => (staged("src").unwrap_or_default(), None),
    };
    let mut fetch = FetchPlan {
        git_depth: args.git_clone_depth,
        git_submodules: args.git_submodules,
        git_cache: (!args.no_source_cache)
            .then(default_cache_dir)
            .flatten()
            .map(|dir| dir.join("git")),
        load_buildspec: (primary.is_none() && !given_buildspec).then_some(parse_options),
        ..FetchPlan::default()
    };
    if primary.is_none() {
        fetch.sources.push(RemoteSource {
            id: None,
            location: primary_location.clone(),
            version: args.source_version.clone(),
            dest: source_dir.clone(),
        });
    }
    let mut staged_secondary = Vec::new();
    for (id, location) in &secondary {
        let SourceLocation::Dir(dir) = location else {
            let dest = staged(&format!("secondary/{id}")).unwrap_or_default();
            fetch.sources.push(RemoteSource {
                id: Some(id.clone()),
                location: location.clone(),
                version: secondary_versions.get(id).cloned(),
                dest: dest.clone(),
            });
            staged_secondary.push((id.clone(), dest));
            continue;
        };
        let dir = std::path::absolute(dir)?;
        if !dir.is_dir() {
            return Err(invalid(format!(
                "secondary source `{id}`: `{}` does not exist",
                dir.display()
            )));
        }
        staged_secondary.push((id.clone(), dir));
    }

    let identity = BuildIdentity {
        project: match &primary {
            Some(dir) => SourceLocation::Dir(dir.clone()).project_name(),
            None => primary_location.project_name(),
        }
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "local".to_string()),
        uuid: uuid::Uuid::new_v4().to_string(),
        number: 1,
        initiator: std::env::var("USER").unwrap_or_else(|_| "buildagent".to_string()),
        start_time: SystemTime::now(),
        region: std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".to_string()),
        account: "000000000000".to_string(),
        image: args.image.clone().unwrap_or_else(|| "host".to_string()),
    };
    let mut options = BuildOptions::new(source_dir.clone());
    options.stage_from = stage_from;
    options.secondary_sources = staged_secondary;
    options.source_info = primary.as_deref().map(source::git_info).unwrap_or_default();
    options.buildspec_path = match primary {
        Some(_) => buildspec_path.clone(),
        None if given_buildspec => buildspec_path.clone(),
        // Read from the fetched source (buildspec.yml, else buildspec.yaml).
        None => source_dir.join("buildspec.yml"),
    };
    options.base_env = std::env::vars().collect();
    // This executable is `codebuild-hash-files` when started under that name (see main.rs).
    options.helper_bin = std::env::current_exe().ok();
    options.env_file = env_file;
    options.overrides = overrides;
    options.secrets = secrets;
    options.secrets_file = secrets_file;
    options.identity = identity;
    options.timeout = timeout;
    options.grace = grace;
    options.artifacts = match &args.artifacts {
        Some(text) => Some(location(text, "-a")?),
        None => None,
    };
    options.artifacts_namespace = match args.artifacts_namespace {
        ArtifactsNamespace::None => Namespace::None,
        ArtifactsNamespace::BuildId => Namespace::BuildId,
    };
    options.artifacts_packaging = match args.artifacts_packaging {
        ArtifactsPackaging::Zip => Packaging::Zip,
        ArtifactsPackaging::None => Packaging::None,
    };
    options.artifacts_keep_mtime = args.artifacts_keep_mtime;
    if let Some(name) = &args.artifacts_name {
        if !matches!(options.artifacts, Some(Location::S3(_))) {
            return Err(invalid(
                "--artifacts-name names the artifact in an S3 location (-a s3://...); a \
                 directory's artifacts are artifacts.zip and <identifier>.zip",
            ));
        }
        options.artifacts_name = Some(name.clone());
    }
    options.reports_dir = match &args.reports {
        Some(dir) => {
            Some(std::path::absolute(dir).with_context(|| format!("-r {}", dir.display()))?)
        }
        None => None,
    };
    options.cache = cache_location(args)?;
    options.fetch = fetch;
    Ok(Prepared {
        spec,
        text,
        buildspec_path,
        primary,
        options,
        staging,
    })
}

/// Runs the build and returns its exit status.
pub fn run(args: &RunArgs, color: ColorChoice) -> anyhow::Result<ExitCode> {
    let sink_args = crate::log_sinks::SinkArgs::parse(args)?;
    let Prepared {
        spec,
        mut options,
        staging,
        ..
    } = prepare(args, color)?;
    let format = args.log_format.unwrap_or(if io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Codebuild
    });
    if args.dry_run {
        if args.image.is_some() {
            // The image's ENV is the executor layer; a dry run pulls and starts nothing.
            options.base_env = Vec::new();
        }
        return crate::dry_run::run(
            spec,
            options,
            format == LogFormat::Json,
            args.image.is_some(),
        );
    }
    let stdout_color = crate::color::enabled(color, io::stdout().is_terminal());
    let mut reporters: Vec<Box<dyn Reporter + Send>> = vec![match format {
        LogFormat::Codebuild => Box::new(CodeBuildLog::new(
            BufWriter::new(io::stdout()),
            false,
            false,
        )),
        LogFormat::Pretty => Box::new(CodeBuildLog::new(
            BufWriter::new(io::stdout()),
            stdout_color,
            true,
        )),
        LogFormat::Json => Box::new(JsonLines::new(BufWriter::new(io::stdout()))),
    }];
    // What each reporter writes to, for the error that says which one failed.
    let mut targets = vec!["standard output".to_string()];
    if let Some(path) = &args.log_file {
        let file = File::create(path).with_context(|| format!("--log-file {}", path.display()))?;
        reporters.push(Box::new(CodeBuildLog::new(
            BufWriter::new(file),
            false,
            false,
        )));
        targets.push(format!("--log-file {}", path.display()));
    }

    // Orphans of the build (daemons that setsid) are reparented to the agent, so they can be
    // found and ended with the rest; not needed when the build has a cgroup of its own, which
    // holds them wherever they are reparented.
    let contained = args.image.is_some() || HostExecutor::cgroups_available();
    if !contained {
        if let Err(e) = enable_child_subreaper() {
            eprintln!("warning: cannot become a child subreaper ({e}); daemons the build starts may outlive it");
        }
    }
    // One thread: a build runs one command at a time, and a single-threaded runtime saves the
    // cross-thread wake-ups of a work-stealing one on every command (measured: per-command bench).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let sinks =
        runtime.block_on(sink_args.start(&options.identity.uuid, &options.identity.region))?;
    let image = container_for(args, &options, staging.as_ref());
    // The first reporter that could not write, and why: it stops the build (see below).
    let render_error: Arc<Mutex<Option<(usize, io::Error)>>> = Arc::default();
    let errors = render_error.clone();
    let launch = Launch {
        spec,
        options,
        image,
        sinks,
        host: HostExecutor::new,
    };
    let result = runtime.block_on(async move {
        let stop = StopRequest::new();
        let kill_now = CancellationToken::new();
        let signals = tokio::spawn(watch_signals(stop.clone(), kill_now.clone()));
        let stop_on_error = stop.clone();
        let mut show_pull = |p: StartProgress| match p {
            StartProgress::Pulling(image) => eprintln!("Pulling {image}..."),
            StartProgress::PullStatus(line) => eprintln!("  {line}"),
            StartProgress::Created { .. } => {}
        };
        let result = execute(
            launch,
            stop,
            kill_now,
            &mut show_pull,
            move |event: &Event| {
                for (index, r) in reporters.iter_mut().enumerate() {
                    if let Err(e) = r.report(event) {
                        // A closed stdout (`| head`) or a full disk under --log-file stops
                        // the build: its log would be incomplete. It still cleans up.
                        let mut slot = errors.lock().unwrap_or_else(|p| p.into_inner());
                        if slot.is_none() {
                            *slot = Some((index, e));
                            stop_on_error.request(CancelReason::Signal);
                        }
                    }
                }
            },
        )
        .await;
        signals.abort();
        result
    })?;
    let _ = io::stdout().flush();
    let render_error = render_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some((index, e)) = render_error {
        // A reader that went away (`| head`) is not the agent's fault: the build was stopped.
        if !(index == 0 && e.kind() == io::ErrorKind::BrokenPipe) {
            eprintln!("error: writing the build's log to {}: {e}", targets[index]);
            return Ok(ExitCode::from(EXIT_FAULT));
        }
    }
    if let Some(path) = &args.output_env {
        write_output_env(path, &result.exported)
            .with_context(|| format!("--output-env {}", path.display()))?;
    }
    Ok(exit_code(result.status))
}

/// A prepared build ready to start: what [`execute`] runs. `run` makes one from its
/// arguments; the fleet worker makes one per job.
pub struct Launch {
    /// The buildspec (empty when it is read from a fetched source).
    pub spec: Buildspec,
    /// The build's options.
    pub options: BuildOptions,
    /// The build container, when the build runs in an image.
    pub image: Option<ContainerOptions>,
    /// The log sinks, started.
    pub sinks: Option<SinkHook>,
    /// Makes the host executor: [`HostExecutor::new`] for the only build of the process,
    /// [`HostExecutor::for_one_of_many`] when builds run side by side.
    pub host: fn() -> HostExecutor,
}

/// Runs a prepared build to its end: starts its container (reporting a pull through
/// `progress`), runs the engine with the caller's `stop` and `kill_now`, feeds the log sinks and
/// gives every event (the sinks' own included) to `report`, then removes the container. It
/// installs no signal handler and writes nothing to the terminal, so a process can run many at
/// once, each on its own runtime. An error is a container that could not start.
pub async fn execute(
    launch: Launch,
    stop: StopRequest,
    kill_now: CancellationToken,
    progress: &mut (dyn FnMut(StartProgress) + Send),
    mut report: impl FnMut(&Event) + Send,
) -> anyhow::Result<BuildResult> {
    let Launch {
        spec,
        mut options,
        image,
        mut sinks,
        host,
    } = launch;
    let container = match &image {
        Some(container_options) => Some(Arc::new(
            start_container(container_options, progress).await?,
        )),
        None => None,
    };
    let executor: Arc<dyn buildagent_runner::executor::Executor> = match &container {
        Some(container) => {
            // The image's environment replaces this machine's.
            options.base_env = container.image_env().to_vec();
            container.clone()
        }
        None => Arc::new(host()),
    };
    let build = Build::new(spec, options, executor);
    let result = build
        .run(stop, kill_now, move |event: Event| {
            // The log sinks see every event first; they add where the log goes (after the
            // start) and what they could not deliver (before the summary).
            let events = match sinks.as_mut() {
                Some(hook) => hook.around(event),
                None => vec![event],
            };
            for event in &events {
                report(event);
            }
        })
        .await;
    if let Some(container) = &container {
        // Whatever ended the build: the container goes.
        container.remove().await;
    }
    Ok(result)
}

/// The container of a build in an image, with the source mounts: the staging directory holds
/// the copy (or the fetched sources: the primary as src, secondary ones under secondary/);
/// secondary directories outside it are mounted too.
pub fn container_for(
    args: &RunArgs,
    options: &BuildOptions,
    staging: Option<&tempfile::TempDir>,
) -> Option<ContainerOptions> {
    container_options(args, options).map(|mut container| {
        let root = staging.map(|s| s.path().to_path_buf());
        container
            .mounts
            .retain(|dir| root.as_ref().is_none_or(|r| !dir.starts_with(r)));
        container
            .mounts
            .insert(0, root.unwrap_or(options.source_dir.clone()));
        container
    })
}

/// The exit status of a build (or batch) status.
pub fn exit_code(status: BuildStatus) -> ExitCode {
    ExitCode::from(match status {
        BuildStatus::Succeeded => 0,
        BuildStatus::Failed => 1,
        BuildStatus::Fault => EXIT_FAULT,
        BuildStatus::TimedOut => 124,
        BuildStatus::Stopped => 130,
    })
}

/// The container of a build in an image (`-i`), without the source mount (the caller adds the
/// build's own source directory): secondary sources, `-d`, the helpers, `-c`'s `~/.aws`.
pub fn container_options(args: &RunArgs, options: &BuildOptions) -> Option<ContainerOptions> {
    let image = args.image.as_ref()?;
    Some(ContainerOptions {
        image: image.clone(),
        mounts: options
            .secondary_sources
            .iter()
            .map(|(_, dir)| dir.clone())
            .collect(),
        privileged: args.privileged,
        helper_bin: options.helper_bin.clone(),
        aws_config_dir: args.aws_credentials.then(aws_config_dir).flatten(),
    })
}

/// First SIGINT or SIGTERM: stop gracefully. A second SIGINT: kill at once.
pub async fn watch_signals(stop: StopRequest, kill_now: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut interrupts = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {
                interrupts += 1;
                stop.request(CancelReason::Signal);
                if interrupts >= 2 {
                    kill_now.cancel();
                }
            }
            _ = term.recv() => {
                stop.request(CancelReason::Signal);
            }
        }
    }
}

/// The primary source and the `ID:SOURCE` secondary ones. A value is `ID:SOURCE` when it has a
/// `:` that is neither a URL's (`https://`, `s3://`) nor an scp-like Git address's
/// (`git@host:path`), and is not an existing path.
pub(crate) fn sources(
    args: &[String],
) -> anyhow::Result<(SourceLocation, Vec<(String, SourceLocation)>)> {
    let parse = |arg: &str, text: &str| {
        SourceLocation::parse(text).map_err(|e| invalid(format!("-s {arg}: {e}")))
    };
    let mut primary = None;
    let mut secondary = Vec::new();
    for arg in args {
        let has_scheme = arg.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        });
        let id_form = arg
            .split_once(':')
            .filter(|(id, _)| !has_scheme && !id.contains('@'));
        match id_form {
            Some((id, rest)) if primary.is_some() || !Path::new(arg).exists() => {
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(invalid(format!(
                        "-s {arg}: the source identifier `{id}` must be letters, digits and `_`"
                    )));
                }
                secondary.push((id.to_string(), parse(arg, rest)?));
            }
            _ if primary.is_none() => primary = Some(parse(arg, arg)?),
            _ => {
                return Err(invalid(format!(
                    "-s {arg}: only the first source is primary; name the others as ID:SOURCE"
                )))
            }
        }
    }
    Ok((
        primary.unwrap_or_else(|| SourceLocation::Dir(PathBuf::from("."))),
        secondary,
    ))
}

/// `--secondary-source-version ID=REF` by identifier, each naming a fetched secondary source.
fn secondary_versions(
    args: &[String],
    secondary: &[(String, SourceLocation)],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut versions = std::collections::HashMap::new();
    for arg in args {
        let flag = "--secondary-source-version";
        let Some((id, version)) = arg
            .split_once('=')
            .filter(|(id, v)| !id.is_empty() && !v.is_empty())
        else {
            return Err(invalid(format!(
                "{flag} {arg}: expected ID=REF, the identifier of a secondary source (-s ID:SOURCE) and its version"
            )));
        };
        match secondary.iter().find(|(name, _)| name == id) {
            None => {
                return Err(invalid(format!(
                    "{flag} {arg}: there is no secondary source `{id}` (give it with -s {id}:SOURCE)"
                )))
            }
            Some((_, SourceLocation::Dir(_))) => {
                return Err(invalid(format!(
                    "{flag} {arg}: secondary source `{id}` is a directory; versions are for Git and S3 sources"
                )))
            }
            Some(_) => {}
        }
        if versions
            .insert(id.to_string(), version.to_string())
            .is_some()
        {
            return Err(invalid(format!(
                "{flag} {arg}: `{id}` has a version already"
            )));
        }
    }
    Ok(versions)
}

/// Reads and checks the buildspec (`-b`, else the source directory's), printing its warnings.
fn read_buildspec(
    args: &RunArgs,
    dir: &Path,
    options: &ParseOptions,
    color: ColorChoice,
    show: &mut dyn FnMut(String),
) -> anyhow::Result<(Buildspec, String, PathBuf)> {
    let buildspec_path = locate_buildspec(args, dir)?;
    let (text, parsed) = parse_file(&buildspec_path, options)
        .map_err(|e| invalid(format!("{}: {e}", buildspec_path.display())))?;
    let stderr_color = crate::color::stderr(color);
    let shown = buildspec_path.display().to_string();
    for d in &parsed.diagnostics {
        show(d.render(&text, &shown, stderr_color));
    }
    match parsed.buildspec {
        Some(spec) => Ok((spec, text, buildspec_path)),
        None => Err(invalid(format!("{shown} is not a valid buildspec"))),
    }
}

/// The buildspec path: the argument (relative to the current directory), else `buildspec.yml`
/// or `buildspec.yaml` in the source directory.
fn locate_buildspec(args: &RunArgs, source: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = args.buildspec.as_ref().or(args.buildspec_arg.as_ref()) {
        if !path.is_file() {
            bail!(InvalidInput(format!(
                "YAML file does not exist: {}",
                path.display()
            )));
        }
        return Ok(std::path::absolute(path)?);
    }
    for name in ["buildspec.yml", "buildspec.yaml"] {
        let path = source.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(invalid(format!(
        "YAML file does not exist: no buildspec.yml or buildspec.yaml in {} (name one with -b FILE)",
        source.display()
    )))
}

/// Reads a `--secrets-file`. A problem is invalid input, shown as `FILE:LINE:COLUMN: message`
/// with the fix, without the snippet a buildspec error shows: the file holds secrets.
fn read_secrets_file(path: &Path) -> anyhow::Result<OfflineValues> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("--secrets-file {}: {e}", path.display())))?;
    let parsed = buildagent_spec::parse_secrets_file(&text);
    match parsed.file {
        Some(file) => Ok(OfflineValues::from_file(&file)),
        None => {
            let problems: Vec<String> = parsed
                .diagnostics
                .iter()
                .map(|d| {
                    let mut line = format!(
                        "{}:{}:{}: {}",
                        path.display(),
                        d.span.line_number(),
                        d.span.column_number(),
                        d.message
                    );
                    if let Some(help) = &d.help {
                        line.push_str(&format!("\n  = help: {help}"));
                    }
                    line
                })
                .collect();
            Err(invalid(format!(
                "--secrets-file {} is not valid:\n{}",
                path.display(),
                problems.join("\n")
            )))
        }
    }
}

fn pairs(flag: &str, values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| {
            let (name, value) = v
                .split_once('=')
                .ok_or_else(|| invalid(format!("{flag} {v}: expected NAME=VALUE")))?;
            if !buildagent_spec::is_variable_name(name) {
                return Err(invalid(format!(
                    "{flag} {v}: invalid variable name `{name}`"
                )));
            }
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// The exit status for an error from [`run`].
/// Where the source copy goes: `/codebuild/output/src<N>` for a build in a container when it can
/// be created there (CodeBuild's path), else a temporary directory (under `root` when given).
fn source_copy_dir(in_container: bool, root: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    if in_container {
        let root = Path::new("/codebuild/output");
        if std::fs::create_dir_all(root).is_ok() {
            if let Ok(dir) = tempfile::Builder::new()
                .prefix("src")
                .rand_bytes(9)
                .tempdir_in(root)
            {
                return Ok(dir);
            }
        }
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("buildagent-src-");
    match root {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .context("a directory for the source copy")
}

/// Connects to the Docker engine and starts the build container, telling `progress` about a
/// pull. Failures are the agent's (exit status 3).
async fn start_container(
    options: &ContainerOptions,
    progress: &mut (dyn FnMut(StartProgress) + Send),
) -> anyhow::Result<ContainerExecutor> {
    let docker = buildagent_runner::docker::connect().await?;
    let container = ContainerExecutor::start(docker, options, progress).await?;
    Ok(container)
}

pub fn error_status(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<InvalidInput>().is_some() {
        EXIT_INVALID
    } else {
        EXIT_FAULT
    }
}

/// Writes the exported variables as a JSON object, atomically (a temporary file renamed into place).
fn write_output_env(path: &Path, exported: &[(String, String)]) -> anyhow::Result<()> {
    let object: serde_json::Map<String, serde_json::Value> = exported
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut file, &object)?;
    writeln!(file)?;
    file.persist(path)?;
    Ok(())
}

/// A directory (made absolute) or an `s3://` location given to `flag`.
fn location(text: &str, flag: &str) -> anyhow::Result<Location> {
    match Location::parse(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))? {
        Location::Dir(dir) => Ok(Location::Dir(
            std::path::absolute(&dir).with_context(|| format!("{flag} {}", dir.display()))?,
        )),
        s3 => Ok(s3),
    }
}

/// `--cache`, or the user's cache directory; `None` with `--no-cache` (or when there is no
/// home directory to default to).
fn cache_location(args: &RunArgs) -> anyhow::Result<Option<Location>> {
    if args.no_cache {
        return Ok(None);
    }
    if let Some(text) = &args.cache {
        return location(text, "--cache").map(Some);
    }
    Ok(default_cache_dir().map(Location::Dir))
}

/// `$XDG_CACHE_HOME/buildagent`, else `~/.cache/buildagent` (the buildspec cache's default, and
/// the clone cache's parent).
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".cache"))
        });
    base.map(|b| b.join("buildagent"))
}

/// This machine's AWS configuration directory for `-c`, `~/.aws`, if it exists.
fn aws_config_dir() -> Option<PathBuf> {
    let dir = std::path::absolute(Path::new(&std::env::var_os("HOME")?).join(".aws")).ok()?;
    dir.is_dir().then_some(dir)
}
