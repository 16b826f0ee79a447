//! The phase machine: CodeBuild's semantics in one place.
//!
//! A [`Build`] takes a parsed buildspec, the options of one run and an [`Executor`], and runs
//! DOWNLOAD_SOURCE, INSTALL, PRE_BUILD, BUILD, POST_BUILD, UPLOAD_ARTIFACTS and FINALIZING with
//! the transitions of decisions.md "Phases and status", reporting every step as an [`Event`].
//! It never prints: the caller's callback decides what to show.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use buildagent_spec::{Buildspec, OnFailure, PhaseName, Shell, Spanned, Version};
use tokio_util::sync::CancellationToken;

pub use crate::artifacts::s3::Namespace;
use crate::artifacts::{self, Packaging, Progress, UploadPlan};
use crate::command::{ScriptMode, StateDir};
use crate::events::{
    Block, BuildPhase, BuildStatus, CancelReason, CommandOutcome, Event, EventKind,
    ExportedVariable, PhaseContext, PhaseStatus, PhaseSummary, Stream,
};
use crate::executor::{CommandControl, Executor, HashFilesHelper, OutputSink, RunAs, StopRequest};
use crate::lines::LineAssembler;
use crate::location::Location;
use crate::mask::Masker;
use crate::plan::{agent_variables, BuildIdentity, Environment, Origin, SourceInfo};
use crate::secrets::{OfflineValues, ResolveError, ResolvedValue};

mod cache_steps;
mod options;
mod runtimes;

/// How much of a failing command's output is kept for `RETRY-<regex>` matching.
const RETRY_TAIL: usize = 64 * 1024;

/// The options of one build run: [`BuildOptions::new`] gives the defaults, the setters change
/// them (the fields stay public for reading and for callers that copy and adjust options).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BuildOptions {
    /// The directory the build runs in (`CODEBUILD_SRC_DIR`).
    pub source_dir: PathBuf,
    /// When set, DOWNLOAD_SOURCE copies this directory into `source_dir` first (see
    /// [`crate::source::stage`]); when `None`, the build runs in `source_dir` as it is (`-m`).
    pub stage_from: Option<PathBuf>,
    /// Secondary sources: identifier and directory (`CODEBUILD_SRC_DIR_<id>`).
    pub secondary_sources: Vec<(String, PathBuf)>,
    /// Where the buildspec was read from (shown in the log).
    pub buildspec_path: PathBuf,
    /// The executor's own environment (lowest precedence).
    pub base_env: Vec<(String, String)>,
    /// The executable that implements `codebuild-hash-files` (the agent passes its own
    /// executable). When set, each build's commands find a link of that name in a directory put
    /// in front of their `PATH`, removed when the build ends; `None`: no helper.
    pub helper_bin: Option<PathBuf>,
    /// The project environment file's variables (`-e FILE`).
    pub env_file: Vec<(String, String)>,
    /// Start-build overrides (`--env-var`).
    pub overrides: Vec<(String, String)>,
    /// Masked overrides (`--secret`).
    pub secrets: Vec<(String, String)>,
    /// Values that stand in for the buildspec's `parameter-store` and `secrets-manager` entries
    /// (`--secrets-file`); the names they list are not asked of AWS (default: none).
    pub secrets_file: OfflineValues,
    /// The build's identity (`CODEBUILD_BUILD_ID` and friends).
    pub identity: BuildIdentity,
    /// What is known of the source (git versions).
    pub source_info: SourceInfo,
    /// The build timeout (default 60 minutes).
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a command is stopped (default 10 seconds).
    pub grace: Duration,
    /// Where UPLOAD_ARTIFACTS writes: a local directory (`-a DIR`) or an S3 location (`-a
    /// s3://bucket/prefix`). `None`: artifacts are collected and counted (a missing file still
    /// fails the phase) but not written.
    pub artifacts: Option<Location>,
    /// Where artifacts go under an S3 location (`--artifacts-namespace`).
    pub artifacts_namespace: Namespace,
    /// Zip files (the default) or directories.
    pub artifacts_packaging: Packaging,
    /// Store files' own modification times in artifacts instead of the fixed 1980-01-01
    /// (default false: reproducible zips).
    pub artifacts_keep_mtime: bool,
    /// The primary artifact's name in an S3 location when the buildspec's `artifacts.name` gives
    /// none (`--artifacts-name`, a fleet job's `artifactsOverride.name`); `None`: `artifacts`.
    pub artifacts_name: Option<String>,
    /// Where report groups' files and `summary.json` are written (`-r DIR`). `None`: reports are
    /// still parsed and summarised in the log, but not copied.
    pub reports_dir: Option<PathBuf>,
    /// Where the buildspec's `cache` is kept: a local directory (`--cache-dir`) or an S3
    /// location (`--cache s3://bucket/prefix`); `None`: no cache is restored or saved
    /// (`--no-cache`). Entries are kept per project ([`BuildIdentity::project`]).
    pub cache: Option<Location>,
    /// Git and S3 sources, fetched first in DOWNLOAD_SOURCE into their directories (which may
    /// be `source_dir` and the secondary ones), and maybe the buildspec read from the primary
    /// (see [`crate::fetch`]). Default: nothing to fetch.
    pub fetch: crate::fetch::FetchPlan,
}

/// The environment a build starts with, and where its Parameter Store and Secrets Manager
/// values came from (see [`Build::resolve_environment`]).
#[derive(Clone, Debug)]
pub struct ResolvedEnvironment {
    /// Every variable with the layer that set it; resolved values are secret.
    pub environment: Environment,
    /// The buildspec's `parameter-store` and `secrets-manager` entries, resolved, in order.
    pub resolved: Vec<ResolvedValue>,
}

/// What a build ended as.
#[derive(Clone, Debug)]
pub struct BuildResult {
    /// The final status.
    pub status: BuildStatus,
    /// Every phase that was entered, with its status and duration, in order (the last attempt).
    pub phases: Vec<PhaseSummary>,
    /// The `exported-variables` and their final values (masked).
    pub exported: Vec<(String, String)>,
    /// How many times the build ran (more than 1 after `on-failure: RETRY`).
    pub attempts: u32,
}

/// A build: a buildspec, options and an executor, ready to run.
pub struct Build {
    spec: Buildspec,
    options: BuildOptions,
    executor: Arc<dyn Executor>,
}

/// What ended an attempt early.
enum Halt {
    /// Stopped by a signal or the timeout.
    Cancelled(CancelReason),
    /// A retry was asked for: the failing phase had `on-failure: RETRY...` with this count, and
    /// its pattern matched.
    Retry {
        /// How many times the build may run again for that phase.
        limit: u32,
    },
}

impl Build {
    /// A build of `spec` with `options`, running commands through `executor`.
    pub fn new(spec: Buildspec, options: BuildOptions, executor: Arc<dyn Executor>) -> Build {
        Build {
            spec,
            options,
            executor,
        }
    }

    /// The environment the build's commands start with, layer by layer (see [`crate::plan`]),
    /// with the buildspec's `parameter-store` and `secrets-manager` entries resolved (from
    /// [`BuildOptions::secrets_file`], else AWS: see [`crate::secrets`]). This is what
    /// DOWNLOAD_SOURCE does before INSTALL; it runs nothing and writes nothing, so a dry run can
    /// show it. `codebuild-hash-files` is put on `PATH` later, when the build runs.
    pub async fn resolve_environment(&self) -> Result<ResolvedEnvironment, ResolveError> {
        let resolved = crate::secrets::resolve(
            &self.spec.env,
            &self.options.secrets_file,
            &self.options.identity.region,
        )
        .await?;
        Ok(ResolvedEnvironment {
            environment: self.environment(&resolved),
            resolved,
        })
    }

    /// The initial environment, layer by layer (see [`crate::plan`]), with `resolved` as the
    /// buildspec's parameters and secrets.
    fn environment(&self, resolved: &[ResolvedValue]) -> Environment {
        let spec = &self.spec;
        let options = &self.options;
        let mut env = Environment::new();
        env.extend(
            options
                .base_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            Origin::Executor,
            false,
        );
        env.extend(
            spec.env
                .variables
                .iter()
                .map(|v| (v.name.value.as_str(), v.value.value.as_str())),
            Origin::Buildspec,
            false,
        );
        // Every Parameter Store and Secrets Manager value is masked, as CodeBuild does.
        for value in resolved {
            env.set(&value.name, &value.value, value.origin, true);
        }
        env.extend(
            options
                .env_file
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            Origin::EnvFile,
            false,
        );
        let agent = agent_variables(
            &options.identity,
            &options.source_dir,
            &options.source_info,
            &options.secondary_sources,
        );
        env.extend(
            agent.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            Origin::Agent,
            false,
        );
        env.extend(
            options
                .overrides
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            Origin::Override,
            false,
        );
        env.extend(
            options
                .secrets
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            Origin::Override,
            true,
        );
        env
    }

    /// Runs the build to the end. `stop` ends it gracefully (SIGINT/SIGTERM: status STOPPED);
    /// `kill_now` kills the running command at once; the timeout ends it with TIMED_OUT. Every
    /// event goes to `report`. Whatever the ending, processes the build left are swept.
    pub async fn run(
        mut self,
        stop: StopRequest,
        kill_now: CancellationToken,
        mut report: impl FnMut(Event) + Send,
    ) -> BuildResult {
        let started = Instant::now();
        let clock = Clock { started };
        let timer = {
            let stop = stop.clone();
            let timeout = self.options.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                stop.request(CancelReason::Timeout);
            })
        };
        report(clock.event(EventKind::BuildStarted {
            build_id: self.options.identity.build_id(),
            source_dir: self.options.source_dir.clone(),
            buildspec_path: self.options.buildspec_path.clone(),
        }));
        // Git and S3 sources are fetched first: the buildspec and the source variables may
        // come from them. The failure, if any, is the first attempt's DOWNLOAD_SOURCE's.
        let mut fetched = None;
        if !self.options.fetch.is_empty() {
            let plan = std::mem::take(&mut self.options.fetch);
            let started = Instant::now();
            let phase = BuildPhase::DownloadSource;
            report(clock.event(EventKind::PhaseStarted { phase }));
            let mut emit = |kind: EventKind| report(clock.event(kind));
            let result = plan.run(&mut self.spec, &mut self.options, &stop, &mut emit);
            fetched = Some((started, result.await.err()));
        }
        let mut attempt = 0;
        let (status, phases, exported) = loop {
            attempt += 1;
            // The source is staged once; a retry runs again in the same directory.
            let mut run = Attempt::new(&self, &clock, &stop, &kill_now, attempt == 1);
            run.fetched = fetched.take();
            let halt = run.run(&mut report).await;
            if let Some(Halt::Retry { limit }) = halt {
                if attempt <= limit {
                    report(clock.event(EventKind::Info {
                        message: format!(
                            "Retrying the build: attempt {} of {}",
                            attempt + 1,
                            limit + 1
                        ),
                    }));
                    continue;
                }
            }
            let status = match halt {
                Some(Halt::Cancelled(CancelReason::Timeout)) => BuildStatus::TimedOut,
                Some(Halt::Cancelled(CancelReason::Signal)) => BuildStatus::Stopped,
                _ if run.fault => BuildStatus::Fault,
                _ if run.failed => BuildStatus::Failed,
                _ => BuildStatus::Succeeded,
            };
            break (status, run.phases, run.exported);
        };
        timer.abort();
        report(clock.event(EventKind::BuildFinished {
            status,
            duration: started.elapsed(),
            phases: phases.clone(),
        }));
        BuildResult {
            status,
            phases,
            exported,
            attempts: attempt,
        }
    }
}

struct Clock {
    started: Instant,
}

impl Clock {
    fn event(&self, kind: EventKind) -> Event {
        Event::new(SystemTime::now(), self.started.elapsed(), kind)
    }
}

/// One run of the build from DOWNLOAD_SOURCE to FINALIZING.
struct Attempt<'b> {
    build: &'b Build,
    clock: &'b Clock,
    stop: &'b StopRequest,
    kill_now: &'b CancellationToken,
    phases: Vec<PhaseSummary>,
    exported: Vec<(String, String)>,
    failed: bool,
    fault: bool,
    /// Masks every secret value of the build; cloned for each output stream.
    masker: Masker,
    /// Whether DOWNLOAD_SOURCE stages the source (the first attempt only).
    stage: bool,
    /// The shell commands run with (`env.shell`).
    shell: PathBuf,
    /// When sources were fetched: when DOWNLOAD_SOURCE started, and why the fetch failed.
    fetched: Option<(Instant, Option<PhaseContext>)>,
}

/// The result of one phase's commands.
struct PhaseRun {
    status: PhaseStatus,
    context: Option<PhaseContext>,
    /// The failing command's output tail and the failure message, for RETRY matching.
    failure_text: String,
}

impl<'b> Attempt<'b> {
    fn new(
        build: &'b Build,
        clock: &'b Clock,
        stop: &'b StopRequest,
        kill_now: &'b CancellationToken,
        stage: bool,
    ) -> Attempt<'b> {
        Attempt {
            build,
            clock,
            stop,
            kill_now,
            phases: Vec::new(),
            exported: Vec::new(),
            failed: false,
            fault: false,
            masker: Masker::none(),
            stage,
            shell: PathBuf::from("/bin/sh"),
            fetched: None,
        }
    }

    fn emit(&self, report: &mut (impl FnMut(Event) + Send), kind: EventKind) {
        report(self.clock.event(kind));
    }

    fn finish_phase(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        phase: BuildPhase,
        started: Instant,
        status: PhaseStatus,
        context: Option<PhaseContext>,
    ) {
        let duration = started.elapsed();
        self.phases.push(PhaseSummary {
            phase,
            status,
            duration,
        });
        self.emit(
            report,
            EventKind::PhaseFinished {
                phase,
                status,
                duration,
                context,
            },
        );
    }

    async fn run(&mut self, report: &mut (impl FnMut(Event) + Send)) -> Option<Halt> {
        let spec = &self.build.spec;
        let options = &self.build.options;

        // DOWNLOAD_SOURCE: assemble the environment, create the command state.
        let (started, fetch_failure) = self.fetched.take().unwrap_or_else(|| {
            let phase = BuildPhase::DownloadSource;
            self.emit(report, EventKind::PhaseStarted { phase });
            (Instant::now(), None)
        });
        if let Some(context) = fetch_failure {
            let stopped = self.stop.reason();
            let (status, context) = stopped.map_or((PhaseStatus::Failed, Some(context)), cancelled);
            self.failed = stopped.is_none();
            self.finish_phase(report, BuildPhase::DownloadSource, started, status, context);
            let halt = self.finalize(report, None, None).await;
            return halt.or(stopped.map(Halt::Cancelled));
        }
        self.emit(
            report,
            EventKind::Info {
                message: format!("CODEBUILD_SRC_DIR={}", options.source_dir.display()),
            },
        );
        self.emit(
            report,
            EventKind::Info {
                message: format!("YAML location is {}", options.buildspec_path.display()),
            },
        );
        if let Some(from) = options.stage_from.as_ref().filter(|_| self.stage) {
            match crate::source::stage(from, &options.source_dir) {
                Ok(files) => self.emit(
                    report,
                    EventKind::Info {
                        message: format!(
                            "Copied {files} file(s) from {} to {}",
                            from.display(),
                            options.source_dir.display()
                        ),
                    },
                ),
                Err(e) => {
                    self.fault = true;
                    let context = PhaseContext {
                        code: "CLIENT_ERROR".into(),
                        message: e.to_string(),
                    };
                    self.finish_phase(
                        report,
                        BuildPhase::DownloadSource,
                        started,
                        PhaseStatus::Fault,
                        Some(context),
                    );
                    return self.finalize(report, None, None).await;
                }
            }
        }
        self.emit(
            report,
            EventKind::Info {
                message: "Processing environment variables".into(),
            },
        );
        // Parameter Store and Secrets Manager are asked before the masker is built, so that
        // every value they give is masked; a stop or the timeout ends the wait.
        let build = self.build;
        let stop = self.stop;
        let resolved = tokio::select! {
            resolved = build.resolve_environment() => resolved,
            reason = stop.requested() => {
                let (status, context) = cancelled(reason);
                self.finish_phase(report, BuildPhase::DownloadSource, started, status, context);
                return self
                    .finalize(report, None, None)
                    .await
                    .or(Some(Halt::Cancelled(reason)));
            }
        };
        let mut env = match resolved {
            Ok(resolved) => resolved.environment,
            Err(e) => {
                self.failed = true;
                let context = PhaseContext {
                    code: e.context_code().into(),
                    message: e.message,
                };
                self.finish_phase(
                    report,
                    BuildPhase::DownloadSource,
                    started,
                    PhaseStatus::Failed,
                    Some(context),
                );
                return self.finalize(report, None, None).await;
            }
        };
        // `codebuild-hash-files` on the commands' PATH while this attempt runs.
        let _helpers = match (&options.helper_bin, self.build.executor.hash_files_helper()) {
            (None, _) => None,
            (Some(_), HashFilesHelper::Directory(dir)) => {
                crate::hash_files::put_on_path(&dir.to_string_lossy(), &mut env);
                None
            }
            (Some(_), HashFilesHelper::Unavailable(why)) => {
                self.emit(
                    report,
                    EventKind::Warning {
                        message: crate::hash_files::unavailable_warning(&why),
                    },
                );
                None
            }
            (Some(exe), _) => match crate::hash_files::helper_on_path(exe, &mut env) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    self.emit(
                        report,
                        EventKind::Warning {
                            message: crate::hash_files::unavailable_warning(&e),
                        },
                    );
                    None
                }
            },
        };
        self.masker = match Masker::new(env.secret_values()) {
            Ok(masker) => masker,
            Err(e) => {
                // Never run without masking: a build that cannot hide its secrets does not start.
                self.fault = true;
                let context = PhaseContext {
                    code: "CLIENT_ERROR".into(),
                    message: format!("cannot mask the build's secrets: {e}"),
                };
                self.finish_phase(
                    report,
                    BuildPhase::DownloadSource,
                    started,
                    PhaseStatus::Fault,
                    Some(context),
                );
                return self.finalize(report, None, None).await;
            }
        };
        let shell = match spec.env.shell.as_ref().map(|s| s.value) {
            None | Some(Shell::Sh) => PathBuf::from("/bin/sh"),
            Some(Shell::Bash) => PathBuf::from("bash"),
            Some(other) => {
                let message = format!(
                    "shell `{}` is for Windows images and cannot run here",
                    other.as_str()
                );
                self.failed = true;
                self.finish_phase(
                    report,
                    BuildPhase::DownloadSource,
                    started,
                    PhaseStatus::Failed,
                    Some(PhaseContext {
                        code: "YAML_FILE_ERROR".into(),
                        message,
                    }),
                );
                return self.finalize(report, None, None).await;
            }
        };
        self.shell = shell.clone();
        let parent = self
            .build
            .executor
            .state_parent()
            .unwrap_or_else(state_parent);
        let mut state = match StateDir::new_in(&parent, &env.pairs(), &options.source_dir) {
            Ok(state) => state,
            Err(e) => {
                self.fault = true;
                self.finish_phase(
                    report,
                    BuildPhase::DownloadSource,
                    started,
                    PhaseStatus::Fault,
                    Some(PhaseContext {
                        code: "FAULT".into(),
                        message: e.to_string(),
                    }),
                );
                return self.finalize(report, None, None).await;
            }
        };
        self.emit(
            report,
            EventKind::Info {
                message: format!("Moving to directory {}", options.source_dir.display()),
            },
        );
        let present: Vec<&buildagent_spec::Phase> = spec.phases.iter().collect();
        self.emit(
            report,
            EventKind::Info {
                message: format!("Phases found in YAML: {}", present.len()),
            },
        );
        for phase in &present {
            self.emit(
                report,
                EventKind::Info {
                    message: format!(
                        " {}: {} commands",
                        phase.name.log_name(),
                        phase.commands.len()
                    ),
                },
            );
        }
        self.restore_cache(report, &mut state, &shell).await;
        self.finish_phase(
            report,
            BuildPhase::DownloadSource,
            started,
            PhaseStatus::Succeeded,
            None,
        );

        let mode = match spec.version {
            Version::V0_1 => ScriptMode::V01,
            Version::V0_2 => ScriptMode::V02,
        };
        let mut upload = true;
        let mut halt = None;
        for name in PhaseName::ALL {
            let phase_started = Instant::now();
            let build_phase = build_phase(name);
            self.emit(report, EventKind::PhaseStarted { phase: build_phase });
            let phase = spec.phase(name);
            let run = self.run_phase(report, &mut state, &shell, mode, name).await;
            let status = run.status;
            self.finish_phase(report, build_phase, phase_started, status, run.context);
            if name == PhaseName::PostBuild
                && !matches!(status, PhaseStatus::TimedOut | PhaseStatus::Stopped)
            {
                self.save_cache(report, &mut state, &shell).await;
            }
            match status {
                PhaseStatus::Succeeded => continue,
                PhaseStatus::TimedOut => {
                    halt = Some(Halt::Cancelled(CancelReason::Timeout));
                    upload = false;
                    break;
                }
                PhaseStatus::Stopped => {
                    halt = Some(Halt::Cancelled(CancelReason::Signal));
                    upload = false;
                    break;
                }
                _ => {}
            }
            self.failed = true;
            match phase.and_then(|p| p.on_failure.as_ref()).map(|o| &o.value) {
                Some(OnFailure::Abort) => {
                    upload = false;
                    break;
                }
                Some(OnFailure::Continue) => continue,
                Some(OnFailure::Retry(retry)) => {
                    let matches = match &retry.pattern {
                        None => true,
                        Some(p) => regex::Regex::new(p)
                            .map(|r| r.is_match(&run.failure_text))
                            .unwrap_or(false),
                    };
                    if matches && retry.count > 0 {
                        halt = Some(Halt::Retry { limit: retry.count });
                        upload = false;
                        break;
                    }
                    if matches!(name, PhaseName::Install | PhaseName::PreBuild) {
                        upload = false;
                        break;
                    }
                }
                None => {
                    if matches!(name, PhaseName::Install | PhaseName::PreBuild) {
                        upload = false;
                        break;
                    }
                }
            }
        }
        self.finalize(report, Some(state), if upload { Some(()) } else { None })
            .await
            .or(halt)
    }

    /// UPLOAD_ARTIFACTS (when `upload` is set) and FINALIZING: exported variables, leak sweep.
    async fn finalize(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        mut state: Option<StateDir>,
        upload: Option<()>,
    ) -> Option<Halt> {
        let masker = self.masker.clone();
        let mut halt = None;
        if let Some(state) = &state {
            for name in &self.build.spec.env.exported_variables {
                let value = state
                    .env()
                    .get_lossy(name)
                    .map(|v| masker.mask_str(&v))
                    .unwrap_or_default();
                self.exported.push((name.value.clone(), value));
            }
            if !self.exported.is_empty() {
                let variables = self
                    .exported
                    .iter()
                    .map(|(name, value)| ExportedVariable {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect();
                self.emit(report, EventKind::VariablesExported { variables });
            }
        }
        if upload.is_some() {
            let started = Instant::now();
            self.emit(
                report,
                EventKind::PhaseStarted {
                    phase: BuildPhase::UploadArtifacts,
                },
            );
            if !self.build.spec.reports.is_empty() {
                self.process_reports(report, state.as_ref()).await;
            }
            let (status, context) = match &self.build.spec.artifacts {
                Some(spec) => {
                    let spec = spec.clone();
                    self.upload_artifacts(report, spec, state.as_mut()).await
                }
                None => (PhaseStatus::Succeeded, None),
            };
            match status {
                PhaseStatus::Succeeded => {}
                PhaseStatus::TimedOut => halt = Some(Halt::Cancelled(CancelReason::Timeout)),
                PhaseStatus::Stopped => halt = Some(Halt::Cancelled(CancelReason::Signal)),
                _ => self.failed = true,
            }
            self.finish_phase(
                report,
                BuildPhase::UploadArtifacts,
                started,
                status,
                context,
            );
        }
        let started = Instant::now();
        self.emit(
            report,
            EventKind::PhaseStarted {
                phase: BuildPhase::Finalizing,
            },
        );
        let grace = self.build.options.grace;
        // What leftover processes still write while they are ended is output like any other.
        let swept = {
            let lines = LineAssembler::new(
                MaskingSink {
                    stdout: self.masker.clone(),
                    stderr: self.masker.clone(),
                    clock: self.clock,
                    report: &mut *report,
                    tail: Vec::new(),
                },
                crate::lines::DEFAULT_DELAY,
            );
            let swept = lines
                .drive(self.build.executor.sweep(grace, &mut lines.sink()))
                .await;
            lines.into_inner().flush();
            swept
        };
        match swept {
            Ok(leaked) if !leaked.is_empty() => {
                self.emit(report, EventKind::ProcessesLeaked { processes: leaked })
            }
            Ok(_) => {}
            Err(e) => self.emit(
                report,
                EventKind::Warning {
                    message: format!("cannot end leftover processes: {e}"),
                },
            ),
        }
        if let Some(state) = state {
            if let Err(e) = state.close() {
                self.emit(
                    report,
                    EventKind::Warning {
                        message: format!("cannot remove the command state: {e}"),
                    },
                );
            }
        }
        self.finish_phase(
            report,
            BuildPhase::Finalizing,
            started,
            PhaseStatus::Succeeded,
            None,
        );
        halt
    }

    /// Expands `text` as the build's shell would a double-quoted word (`printf %s "<text>"` run
    /// like a command, so variables and `$(...)` work), with the build's current environment.
    async fn expand_with_shell(
        &mut self,
        state: &mut StateDir,
        shell: &std::path::Path,
        text: &str,
    ) -> Result<String, String> {
        let mode = match self.build.spec.version {
            Version::V0_1 => ScriptMode::V01,
            Version::V0_2 => ScriptMode::V02,
        };
        let script = format!("printf %s \"{text}\"");
        let spec = state
            .prepare(&script, mode, shell, None)
            .map_err(|e| e.to_string())?;
        let control = CommandControl::new(
            self.stop.clone(),
            self.kill_now.clone(),
            self.build.options.grace,
        );
        let mut out = crate::executor::CapturedOutput::default();
        let outcome = self.build.executor.run(&spec, control, &mut out).await;
        if mode == ScriptMode::V02 {
            let _ = state.finish();
        }
        match outcome {
            Ok(outcome) if outcome.is_success() => Ok(out.stdout_str()),
            Ok(outcome) => Err(format!("{outcome:?}: {}", out.stderr_str().trim())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Collects, parses and summarises the report groups on a blocking thread (a report file that
    /// is missing or broken is a warning; failed tests never fail the build), then reports them.
    async fn process_reports(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        state: Option<&StateDir>,
    ) {
        // `base-directory` may name variables: the build's final environment expands them (in
        // `reports::process`, with the same expansion as the artifacts' base directories).
        let env = state.map(|s| s.env().clone());
        let groups = self.build.spec.reports.clone();
        let source_dir = self.build.options.source_dir.clone();
        let out = self.build.options.reports_dir.clone();
        let job = tokio::task::spawn_blocking(move || {
            let lookup = |name: &str| env.as_ref().and_then(|e| e.get_lossy(name));
            let mut warnings = Vec::new();
            let groups =
                crate::reports::process(&groups, &source_dir, out.as_deref(), &lookup, &mut |w| {
                    warnings.push(w)
                });
            (groups, warnings)
        });
        let (groups, warnings) = match job.await {
            Ok(done) => done,
            Err(e) => (Vec::new(), vec![format!("cannot process the reports: {e}")]),
        };
        for message in warnings {
            let message = self.masker.mask_str(&message);
            self.emit(report, EventKind::Warning { message });
        }
        for group in groups {
            self.emit(
                report,
                EventKind::ReportGroupFinished {
                    group: group.name,
                    format: group.format.as_str().to_string(),
                    total: group.totals.total,
                    passed: group.totals.passed,
                    failed: group.totals.failed,
                    skipped: group.totals.skipped,
                    errors: group.totals.errors,
                    duration: group.totals.duration(),
                    line_coverage: group.line_coverage,
                    files: group.files.len(),
                },
            );
        }
    }

    /// Collects and writes the artifacts on a blocking thread, relaying its log lines as they come
    /// and cancelling it when the build is stopped or times out; then, for an S3 destination,
    /// uploads them. A failure is `CLIENT_ERROR`.
    async fn upload_artifacts(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        mut spec: buildagent_spec::Artifacts,
        state: Option<&mut StateDir>,
    ) -> (PhaseStatus, Option<PhaseContext>) {
        // `base-directory` may name variables (`$CODEBUILD_SRC_DIR_source1`): the build's final
        // environment expands them.
        {
            let state = state.as_deref();
            let lookup = |name: &str| state.and_then(|s| s.env().get_lossy(name));
            let sets = std::iter::once(&mut spec.primary)
                .chain(spec.secondary.iter_mut().map(|s| &mut s.artifact));
            for set in sets {
                if let Some(base) = &mut set.base_directory {
                    base.value = artifacts::expand_vars(&base.value, &lookup);
                }
            }
        }
        let options = &self.build.options;
        let remote = match &options.artifacts {
            Some(Location::S3(url)) => Some(url.clone()),
            _ => None,
        };
        // An S3 zip is written here first, then uploaded.
        let staging = match remote {
            Some(_) => match tempfile::Builder::new()
                .prefix("buildagent-artifacts-")
                .tempdir()
            {
                Ok(dir) => Some(dir),
                Err(e) => return client_error(format!("cannot create a staging directory: {e}")),
            },
            None => None,
        };
        let destination = match (&options.artifacts, &staging) {
            (Some(Location::Dir(dir)), _) => Some(dir.clone()),
            (_, Some(staging)) => Some(staging.path().to_path_buf()),
            _ => None,
        };
        let plan = UploadPlan {
            artifacts: spec.clone(),
            source_dir: options.source_dir.clone(),
            destination,
            packaging: options.artifacts_packaging,
            keep_mtime: options.artifacts_keep_mtime,
        };
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let job = {
            let cancel = Arc::clone(&cancel);
            let remote = remote.is_some();
            tokio::task::spawn_blocking(move || {
                let mut progress = |p| {
                    let _ = tx.send(p);
                };
                if !remote {
                    return artifacts::upload(&plan, &cancel, &mut progress).map(|()| Vec::new());
                }
                let mut staged = Vec::new();
                for artifact in artifacts::collect_all(&plan, &mut progress)? {
                    let zip = match (plan.packaging, &plan.destination) {
                        (Packaging::Zip, Some(dir)) => Some(artifacts::package(
                            &artifact.entries,
                            dir,
                            &artifact.stem,
                            Packaging::Zip,
                            &cancel,
                        )?),
                        _ => None,
                    };
                    staged.push((artifact, zip));
                }
                Ok(staged)
            })
        };
        let stop = self.stop;
        let drain = async {
            while let Some(progress) = rx.recv().await {
                match progress {
                    Progress::Note(artifacts::Note::Info(message)) => {
                        self.emit(report, EventKind::Info { message })
                    }
                    Progress::Note(artifacts::Note::Warning(message)) => {
                        self.emit(report, EventKind::Warning { message })
                    }
                    Progress::Written {
                        identifier,
                        written,
                    } => self.emit(
                        report,
                        EventKind::ArtifactUploaded {
                            identifier,
                            path: written.path,
                            files: written.files,
                            bytes: written.bytes,
                        },
                    ),
                }
            }
        };
        // The packer sees the flag, stops and removes what it was writing; its channel closes.
        let ((), stopped) = stop
            .finish(drain, || {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed)
            })
            .await;
        let result = match job.await {
            Ok(result) => result,
            Err(e) => Err(artifacts::ArtifactError::io(
                "cannot write",
                "the artifacts",
                std::io::Error::other(e.to_string()),
            )),
        };
        let staged = match (result, stopped) {
            (Ok(staged), None) => staged,
            (Ok(_), Some(reason)) | (Err(artifacts::ArtifactError::Cancelled), Some(reason)) => {
                return cancelled(reason)
            }
            (Err(artifacts::ArtifactError::Cancelled), None) => {
                return (PhaseStatus::Stopped, None)
            }
            (Err(e), _) => return client_error(e.to_string()),
        };
        let Some(url) = remote else {
            return (PhaseStatus::Succeeded, None);
        };
        self.upload_to_s3(report, &spec, state, &url, staged).await
    }

    /// `text` expanded by the build's shell (as written when there is no shell state left).
    async fn expand_field(
        &mut self,
        state: Option<&mut StateDir>,
        shell: &std::path::Path,
        text: Option<&Spanned<String>>,
        what: &str,
    ) -> Result<Option<String>, String> {
        let Some(text) = text else {
            return Ok(None);
        };
        let Some(state) = state else {
            return Ok(Some(text.value.clone()));
        };
        self.expand_with_shell(state, shell, &text.value)
            .await
            .map(Some)
            .map_err(|e| format!("cannot expand the artifact {what} {:?}: {e}", text.value))
    }

    /// Uploads collected (and, for zips, packaged) artifacts to `url` (see [`artifacts::s3`]).
    async fn upload_to_s3(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        spec: &buildagent_spec::Artifacts,
        mut state: Option<&mut StateDir>,
        url: &crate::s3::S3Url,
        staged: Vec<(artifacts::Collected, Option<artifacts::Written>)>,
    ) -> (PhaseStatus, Option<PhaseContext>) {
        let options = &self.build.options;
        let client = crate::s3::S3Client::from_env(&options.identity.region).await;
        let arn = options.identity.build_arn();
        let metadata = [("codebuild-buildarn", arn.as_str())];
        let build = match options.artifacts_namespace {
            artifacts::s3::Namespace::None => None,
            artifacts::s3::Namespace::BuildId => Some(options.identity.uuid.clone()),
        };
        let shell = self.shell.clone();
        let cancel = CancellationToken::new();
        for (artifact, zip) in staged {
            let set = match &artifact.identifier {
                None => &spec.primary,
                Some(id) => match spec.secondary.iter().find(|s| &s.identifier.value == id) {
                    Some(secondary) => &secondary.artifact,
                    None => &spec.primary,
                },
            };
            // `name` and `s3-prefix` are expanded by the build's shell (`$(date +%F)` works).
            let name = self
                .expand_field(state.as_deref_mut(), &shell, set.name.as_ref(), "name")
                .await;
            let s3_prefix = self
                .expand_field(
                    state.as_deref_mut(),
                    &shell,
                    set.s3_prefix.as_ref(),
                    "s3-prefix",
                )
                .await;
            let (name, s3_prefix) = match (name, s3_prefix) {
                (Ok(name), Ok(prefix)) => (name, prefix),
                (Err(e), _) | (_, Err(e)) => return client_error(self.masker.mask_str(&e)),
            };
            let entries = match zip {
                Some(_) => Vec::new(),
                None => {
                    let mut warnings = Vec::new();
                    let entries =
                        artifacts::s3::uploadable(artifact.entries, &mut |w| warnings.push(w));
                    for message in warnings {
                        let message = self.masker.mask_str(&message);
                        self.emit(report, EventKind::Warning { message });
                    }
                    entries
                }
            };
            let packaging = self.build.options.artifacts_packaging;
            // The project's name for the primary artifact (CodeBuild's artifacts `name`); the
            // buildspec's own `name` still wins, as with `overrideArtifactName`.
            let default_name = match (&artifact.identifier, &options.artifacts_name) {
                (None, Some(project_name)) => project_name.as_str(),
                _ => artifact.stem.as_str(),
            };
            let key = artifacts::s3::artifact_key(
                url,
                s3_prefix.as_deref(),
                build.as_deref(),
                name.as_deref(),
                default_name,
                packaging,
            );
            let upload = async {
                match &zip {
                    Some(zip) => client
                        .upload(&url.bucket, &key, &zip.path, &metadata, false, &cancel)
                        .await
                        .map(|_| (zip.files, zip.bytes)),
                    None => {
                        artifacts::s3::upload_folder(
                            &client,
                            &url.bucket,
                            &key,
                            &entries,
                            &metadata,
                            &cancel,
                        )
                        .await
                    }
                }
            };
            let (result, stopped) = self.stop.finish(upload, || cancel.cancel()).await;
            if let Some(reason) = stopped {
                return cancelled(reason);
            }
            let location = match &zip {
                Some(_) => format!("s3://{}/{key}", url.bucket),
                None => format!("s3://{}/{key}/", url.bucket),
            };
            match result {
                Ok((files, bytes)) => self.emit(
                    report,
                    EventKind::ArtifactUploaded {
                        identifier: artifact.identifier.clone(),
                        path: PathBuf::from(self.masker.mask_str(&location)),
                        files,
                        bytes,
                    },
                ),
                Err(e) => return client_error(self.masker.mask_str(&e.to_string())),
            }
        }
        (PhaseStatus::Succeeded, None)
    }

    async fn run_phase(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        state: &mut StateDir,
        shell: &std::path::Path,
        mode: ScriptMode,
        name: PhaseName,
    ) -> PhaseRun {
        let spec = &self.build.spec;
        let Some(phase) = spec.phase(name) else {
            return PhaseRun {
                status: PhaseStatus::Succeeded,
                context: None,
                failure_text: String::new(),
            };
        };
        let user_name = phase.run_as.as_ref().or(spec.run_as.as_ref());
        let resolved = match user_name {
            Some(name) => Some(self.build.executor.resolve_user(name).await),
            None => None,
        };
        let user = match resolved {
            None => None,
            Some(Ok(user)) => Some(user),
            Some(Err(e)) => {
                return PhaseRun {
                    status: PhaseStatus::Failed,
                    context: Some(PhaseContext {
                        code: "CLIENT_ERROR".into(),
                        message: e.to_string(),
                    }),
                    failure_text: e.to_string(),
                }
            }
        };
        let mut result = PhaseRun {
            status: PhaseStatus::Succeeded,
            context: None,
            failure_text: String::new(),
        };
        if name == PhaseName::Install {
            // `runtime-versions` first; a failure skips `commands`, and `finally` still runs.
            if let Some(failed) = self
                .install_runtimes(report, state, shell, mode, user.as_ref())
                .await
            {
                if matches!(failed.status, PhaseStatus::TimedOut | PhaseStatus::Stopped) {
                    return failed;
                }
                result = failed;
            }
        }
        for (block, commands) in [
            (Block::Commands, &phase.commands),
            (Block::Finally, &phase.finally),
        ] {
            if block == Block::Commands && result.status != PhaseStatus::Succeeded {
                continue;
            }
            for (index, command) in commands.iter().enumerate() {
                let (outcome, tail) = self
                    .run_command(
                        report,
                        state,
                        shell,
                        mode,
                        user.as_ref(),
                        name,
                        block,
                        index,
                        command,
                    )
                    .await;
                match self.command_failure(command, outcome, &tail) {
                    None => continue,
                    Some(run) if run.status != PhaseStatus::Failed => return run,
                    Some(run) => {
                        if result.status == PhaseStatus::Succeeded {
                            result = run;
                        }
                        // The first failing command skips the rest of its block; `finally` runs.
                        break;
                    }
                }
            }
        }
        result
    }

    /// How a finished command ends its phase: `None` when it succeeded; a timed-out or stopped
    /// phase; or a failed one with CodeBuild's message and, for `RETRY-<regex>`, the command's
    /// output tail.
    fn command_failure(
        &self,
        command: &Spanned<String>,
        outcome: CommandOutcome,
        tail: &str,
    ) -> Option<PhaseRun> {
        let status = match outcome {
            CommandOutcome::Success => return None,
            CommandOutcome::TimedOut => PhaseStatus::TimedOut,
            CommandOutcome::Stopped => PhaseStatus::Stopped,
            _ => PhaseStatus::Failed,
        };
        if status != PhaseStatus::Failed {
            return Some(PhaseRun {
                status,
                context: None,
                failure_text: String::new(),
            });
        }
        let reason = match &outcome {
            CommandOutcome::Exited(code) => format!("exit status {code}"),
            CommandOutcome::Signaled(sig) => format!("signal {sig}"),
            CommandOutcome::SpawnFailed(why) => why.clone(),
            _ => "failed".to_string(),
        };
        let message = format!(
            "Error while executing command: {}. Reason: {reason}",
            self.masker.mask_str(&command.value)
        );
        Some(PhaseRun {
            status,
            failure_text: format!("{tail}\n{message}"),
            context: Some(PhaseContext {
                code: "COMMAND_EXECUTION_ERROR".into(),
                message,
            }),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_command(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        state: &mut StateDir,
        shell: &std::path::Path,
        mode: ScriptMode,
        user: Option<&RunAs>,
        phase: PhaseName,
        block: Block,
        index: usize,
        command: &Spanned<String>,
    ) -> (CommandOutcome, String) {
        let phase = build_phase(phase);
        self.emit(
            report,
            EventKind::CommandStarted {
                phase,
                block,
                index,
                command: self.masker.mask_str(&command.value),
            },
        );
        let started = Instant::now();
        let spec = match state.prepare(&command.value, mode, shell, user) {
            Ok(spec) => spec,
            Err(e) => {
                let outcome = CommandOutcome::SpawnFailed(e.to_string());
                self.emit(
                    report,
                    EventKind::CommandFinished {
                        phase,
                        block,
                        index,
                        outcome: outcome.clone(),
                        duration: started.elapsed(),
                    },
                );
                return (outcome, String::new());
            }
        };
        let control = CommandControl::new(
            self.stop.clone(),
            self.kill_now.clone(),
            self.build.options.grace,
        );
        // Output is assembled into whole lines per stream before it is masked (crate::lines).
        let lines = LineAssembler::new(
            MaskingSink {
                stdout: self.masker.clone(),
                stderr: self.masker.clone(),
                clock: self.clock,
                report,
                tail: Vec::new(),
            },
            crate::lines::DEFAULT_DELAY,
        );
        let mut feed = lines.sink();
        let run = self.build.executor.run(&spec, control, &mut feed);
        let outcome = match lines.drive(run).await {
            Ok(outcome) => outcome,
            Err(e) => CommandOutcome::SpawnFailed(e.to_string()),
        };
        let mut sink = lines.into_inner();
        sink.flush();
        let tail = String::from_utf8_lossy(&sink.tail).into_owned();
        let cancelled = match outcome {
            CommandOutcome::TimedOut => Some(CancelReason::Timeout),
            CommandOutcome::Stopped => Some(CancelReason::Signal),
            _ => None,
        };
        if let Some(reason) = cancelled {
            self.emit(report, EventKind::Cancelling { reason });
        }
        if mode == ScriptMode::V02 {
            if let Err(e) = state.finish() {
                self.emit(
                    report,
                    EventKind::Warning {
                        message: format!("cannot save the command's environment: {e}"),
                    },
                );
            }
        }
        if !outcome.is_success()
            && matches!(
                outcome,
                CommandOutcome::Exited(_)
                    | CommandOutcome::Signaled(_)
                    | CommandOutcome::SpawnFailed(_)
            )
        {
            // CODEBUILD_BUILD_SUCCEEDING is 0 from the command after the first failure on.
            if let Err(e) = state.set_var("CODEBUILD_BUILD_SUCCEEDING", "0") {
                self.emit(
                    report,
                    EventKind::Warning {
                        message: format!("cannot update CODEBUILD_BUILD_SUCCEEDING: {e}"),
                    },
                );
            }
        }
        self.emit(
            report,
            EventKind::CommandFinished {
                phase,
                block,
                index,
                outcome: outcome.clone(),
                duration: started.elapsed(),
            },
        );
        (outcome, tail)
    }
}

/// Masks a command's output and turns it into events, keeping a tail for RETRY matching.
struct MaskingSink<'a, R: FnMut(Event) + Send> {
    stdout: Masker,
    stderr: Masker,
    clock: &'a Clock,
    report: &'a mut R,
    tail: Vec<u8>,
}

impl<R: FnMut(Event) + Send> MaskingSink<'_, R> {
    fn send(&mut self, stream: Stream, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.tail.extend_from_slice(&bytes);
        if self.tail.len() > RETRY_TAIL {
            let cut = self.tail.len() - RETRY_TAIL;
            self.tail.drain(..cut);
        }
        (self.report)(self.clock.event(EventKind::Output { stream, bytes }));
    }

    fn flush(&mut self) {
        let out = self.stdout.finish();
        self.send(Stream::Stdout, out);
        let err = self.stderr.finish();
        self.send(Stream::Stderr, err);
    }
}

impl<R: FnMut(Event) + Send> OutputSink for MaskingSink<'_, R> {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        let masked = match stream {
            Stream::Stdout => self.stdout.push(bytes).into_owned(),
            Stream::Stderr => self.stderr.push(bytes).into_owned(),
        };
        self.send(stream, masked);
    }
}

/// Where the command state lives: a RAM file system when there is one, because every command
/// writes and reads its state files (on a disk file system that is a large share of the cost of a
/// short command); the system temporary directory otherwise.
fn state_parent() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let usable = std::fs::metadata(shm)
        .map(|m| m.is_dir() && !m.permissions().readonly())
        .unwrap_or(false);
    if usable && tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn build_phase(name: PhaseName) -> BuildPhase {
    match name {
        PhaseName::Install => BuildPhase::Install,
        PhaseName::PreBuild => BuildPhase::PreBuild,
        PhaseName::Build => BuildPhase::Build,
        PhaseName::PostBuild => BuildPhase::PostBuild,
    }
}

/// A failed UPLOAD_ARTIFACTS: `CLIENT_ERROR` with `message`.
fn client_error(message: String) -> (PhaseStatus, Option<PhaseContext>) {
    (
        PhaseStatus::Failed,
        Some(PhaseContext {
            code: "CLIENT_ERROR".into(),
            message,
        }),
    )
}

/// A phase ended by a stop or the timeout.
fn cancelled(reason: CancelReason) -> (PhaseStatus, Option<PhaseContext>) {
    match reason {
        CancelReason::Timeout => (PhaseStatus::TimedOut, None),
        _ => (PhaseStatus::Stopped, None),
    }
}
