//! Batch builds on one machine: a buildspec's `batch` section (build-list, build-graph,
//! build-matrix, build-fanout) run as concurrent [`Build`]s with CodeBuild's semantics.
//!
//! A [`Batch`] takes the children ([`plan::expand`] names them and says what differs between
//! them; the caller loads each child's buildspec), the options of a single build used as a
//! template for every child, and a [`Launcher`] that says where the commands run. It runs up to
//! [`BatchOptions::jobs`] children at once; a build-graph child starts when everything it
//! depends on SUCCEEDED, and is reported `NOT_STARTED` when a dependency did not. Every child is a
//! full build: its own build id and number, its own fresh copy of the source (under
//! [`BatchOptions::work_dir`]), all phases, `CODEBUILD_BATCH_BUILD_IDENTIFIER` set to its
//! identifier and its task's `env.variables` as start-build overrides.
//!
//! The batch is SUCCEEDED when every child that counts (no `ignore-failure`) SUCCEEDED, FAILED
//! otherwise, STOPPED when `stop` is requested (every running child gets the normal stop path:
//! SIGTERM, the grace period, SIGKILL; `kill_now` kills at once) and TIMED_OUT past
//! [`BatchOptions::timeout`]. With fast-fail, the first failure of a child that counts stops the
//! running siblings (STOPPED) and starts no more (NOT_STARTED).
//!
//! Every event of a child reaches the callback wrapped with the child's identifier, among the
//! batch's own events ([`events`]).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use buildagent_runner::batch::{plan, Batch, BatchChild, BatchOptions, Launcher};
//! use buildagent_runner::batch::events::{BatchEventKind, ChildStatus};
//! use buildagent_runner::engine::BuildOptions;
//! use buildagent_runner::events::{BuildStatus, EventKind};
//! use buildagent_runner::executor::StopRequest;
//! use buildagent_spec::{parse, ParseOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let yaml = "version: 0.2\nbatch:\n  build-graph:\n    - identifier: first\n    - identifier: second\n      depend-on: [first]\n    - identifier: broken\n      env:\n        variables:\n          FAIL: 'yes'\n    - identifier: after_broken\n      depend-on: [broken]\nphases:\n  build:\n    commands:\n      - echo \"I am $CODEBUILD_BATCH_BUILD_IDENTIFIER\"\n      - test -z \"$FAIL\"\n";
//! let spec = parse(yaml, &ParseOptions::default()).buildspec.unwrap();
//! let batch_section = spec.batch.clone().unwrap();
//! let source = tempfile::tempdir().unwrap();
//! let work = tempfile::tempdir().unwrap();
//! let children = plan::expand(&batch_section)
//!     .into_iter()
//!     .map(|plan| BatchChild { plan, spec: spec.clone(), buildspec_path: "buildspec.yml".into() })
//!     .collect();
//! // Each child gets work_dir/<identifier>/src, copied from `stage_from`.
//! let mut template = BuildOptions::new(source.path().join("unused"));
//! template
//!     .stage_from(source.path())
//!     .base_env([("PATH", "/usr/bin:/bin")])
//!     .timeout(Duration::from_secs(60));
//! template.identity.project = "demo".into();
//! let options = BatchOptions::new(work.path());
//! let batch = Batch::new(plan::BatchKind::BuildGraph, children, template, options, Launcher::Host);
//! let mut lines = Vec::new();
//! let result = batch
//!     .run(StopRequest::new(), CancellationToken::new(), |event| {
//!         if let BatchEventKind::Child { identifier, event } = &event.kind {
//!             if let EventKind::Output { bytes, .. } = &event.kind {
//!                 lines.push(format!("{identifier}: {}", String::from_utf8_lossy(bytes).trim()));
//!             }
//!         }
//!     })
//!     .await;
//! assert_eq!(result.status, BuildStatus::Failed);
//! let status = |id: &str| result.children.iter().find(|c| c.identifier == id).unwrap().status;
//! assert_eq!(status("second"), ChildStatus::Succeeded);
//! assert_eq!(status("broken"), ChildStatus::Failed);
//! assert_eq!(status("after_broken"), ChildStatus::NotStarted);
//! assert!(lines.contains(&"second: I am second".to_string()));
//! # }
//! ```

pub mod events;
pub mod plan;

mod artifacts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use buildagent_spec::Buildspec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::events::{BatchEvent, BatchEventKind, BatchStop, ChildStatus, ChildSummary};
use self::plan::{BatchKind, ChildPlan, IDENTIFIER_VAR};
use crate::engine::{Build, BuildOptions};
use crate::events::{
    BuildPhase, BuildStatus, CancelReason, Event, EventKind, LeakedProcess, PhaseStatus,
};
#[cfg(feature = "docker")]
use crate::executor::{ContainerExecutor, ContainerOptions};
use crate::executor::{Executor, HostExecutor, StopRequest};
use crate::location::Location;
use crate::s3::{join_key, S3Url};

/// The variable that holds the batch's ARN in every child (`CODEBUILD_BATCH_BUILD_ARN`, read by
/// real code though CodeBuild does not document it).
pub const BATCH_ARN_VAR: &str = "CODEBUILD_BATCH_BUILD_ARN";

/// One child of a batch: what the batch section says of it, and the buildspec it runs.
#[derive(Clone, Debug)]
pub struct BatchChild {
    /// Its identifier and settings.
    pub plan: ChildPlan,
    /// The buildspec it runs (its own `buildspec`, or the batch's). Its `batch` section is
    /// ignored: a child never starts a batch.
    pub spec: Buildspec,
    /// Where that buildspec was read from (shown in the child's log).
    pub buildspec_path: PathBuf,
}

/// How a batch runs.
#[derive(Clone)]
pub struct BatchOptions {
    /// How many children run at once (at least 1; default: the number of cores).
    pub jobs: usize,
    /// Stop the running children and start no more on the first failure of a child that counts
    /// (`--fast-fail`, or the batch's `fast-fail: true`; default false).
    pub fast_fail: bool,
    /// The batch's own timeout, past which every running child is stopped and the batch is
    /// TIMED_OUT (default: none; each child still has its build timeout).
    pub timeout: Option<Duration>,
    /// Where each child's source copy is made: `<work_dir>/<identifier>/src`, removed when the
    /// child ends.
    pub work_dir: PathBuf,
    /// Put every child's primary artifact into one `artifacts.zip` with a folder per identifier
    /// (default false: `<identifier>.zip` each). Local artifact directories only.
    pub combine_artifacts: bool,
    /// Makes the unique part of each build id (and of the batch's id); the caller passes its
    /// UUID generator (default: a counter, `00000000-0000-0000-0000-<n>`, for tests).
    pub new_uuid: Arc<dyn Fn() -> String + Send + Sync>,
}

impl BatchOptions {
    /// The defaults, with source copies under `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> BatchOptions {
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        BatchOptions {
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            fast_fail: false,
            timeout: None,
            work_dir: work_dir.into(),
            combine_artifacts: false,
            new_uuid: Arc::new(move || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("00000000-0000-0000-0000-{n:012}")
            }),
        }
    }
}

/// Where the children's commands run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Launcher {
    /// On this machine, each child with its own [`HostExecutor`]: with a cgroup per child where
    /// the machine delegates one; otherwise, when the program is a child subreaper, a child's
    /// end also ends the daemons (`setsid`) that carry its `CODEBUILD_BUILD_ID`, and daemons
    /// that cleared their environment are ended when the batch ends.
    Host,
    /// In a container per child, made from these options: the child's `env.image` replaces
    /// [`ContainerOptions::image`], its `privileged-mode` replaces
    /// [`ContainerOptions::privileged`], and its source copy is mounted besides
    /// [`ContainerOptions::mounts`].
    #[cfg(feature = "docker")]
    Containers(ContainerOptions),
}

/// How a batch ended.
#[derive(Clone, Debug)]
pub struct BatchResult {
    /// The batch's status.
    pub status: BuildStatus,
    /// How long it took.
    pub duration: Duration,
    /// Every child, in plan order.
    pub children: Vec<ChildSummary>,
}

/// A batch: its children, the options of a build used for each, and where commands run.
pub struct Batch {
    kind: BatchKind,
    children: Vec<BatchChild>,
    template: BuildOptions,
    options: BatchOptions,
    launcher: Launcher,
}

/// What a child's task tells the batch.
enum Message {
    Event(usize, Event),
    Done(usize, Outcome),
}

struct Outcome {
    status: ChildStatus,
    duration: Duration,
    failing_phase: Option<BuildPhase>,
    reason: Option<String>,
}

enum State {
    Waiting,
    Running(StopRequest),
    Done(ChildStatus),
}

impl Batch {
    /// A batch of `kind` with `children` (in plan order; identifiers unique, `depend-on`
    /// acyclic: the buildspec parser checks both). `template` is the options of a build
    /// (`-a`, `-r`, timeouts, overrides...) that each child's options are made from.
    pub fn new(
        kind: BatchKind,
        children: Vec<BatchChild>,
        template: BuildOptions,
        options: BatchOptions,
        launcher: Launcher,
    ) -> Batch {
        Batch {
            kind,
            children,
            template,
            options,
            launcher,
        }
    }

    /// Runs every child to its end (or until the batch stops) and reports each event. `stop`
    /// stops the batch gracefully (STOPPED); `kill_now` kills every running command at once.
    /// Source copies and staging directories are removed whatever the ending, and processes the
    /// children left running are ended.
    ///
    /// The children run as tasks of one thread (a [`tokio::task::LocalSet`] made here), so the
    /// returned future is not `Send`: await it with `block_on` or inside a `LocalSet`. A build
    /// runs one command at a time and mostly waits for it, so one thread carries many builds.
    pub async fn run(
        self,
        stop: StopRequest,
        kill_now: CancellationToken,
        report: impl FnMut(BatchEvent) + Send,
    ) -> BatchResult {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(self.run_local(stop, kill_now, report))
            .await
    }

    async fn run_local(
        self,
        stop: StopRequest,
        kill_now: CancellationToken,
        mut report: impl FnMut(BatchEvent) + Send,
    ) -> BatchResult {
        let started = Instant::now();
        let event = |kind: BatchEventKind| BatchEvent {
            at: SystemTime::now(),
            elapsed: started.elapsed(),
            kind,
        };
        let batch_uuid = (self.options.new_uuid)();
        let identity = &self.template.identity;
        let batch_id = format!("{}:{batch_uuid}", identity.project);
        let batch_arn = format!(
            "arn:aws:codebuild:{}:{}:build-batch/{batch_id}",
            identity.region, identity.account
        );
        let jobs = self.options.jobs.max(1);
        report(event(BatchEventKind::BatchStarted {
            batch_id,
            kind: self.kind,
            builds: self.children.len(),
            jobs,
        }));
        for child in &self.children {
            report(event(BatchEventKind::ChildQueued {
                identifier: child.plan.identifier.clone(),
                description: child.plan.description.clone(),
                depend_on: child.plan.depend_on.clone(),
                not_applicable: child.plan.not_applicable.clone(),
            }));
        }
        // Daemons no child can claim (they cleared their environment) are ended when the batch
        // ends (see Launcher::Host).
        let daemon_sweeper = matches!(self.launcher, Launcher::Host).then(HostExecutor::new);

        let index: BTreeMap<&str, usize> = self
            .children
            .iter()
            .enumerate()
            .map(|(i, c)| (c.plan.identifier.as_str(), i))
            .collect();
        let mut states: Vec<State> = self.children.iter().map(|_| State::Waiting).collect();
        let mut summaries: Vec<Option<ChildSummary>> = vec![None; self.children.len()];
        let mut running = 0usize;
        let mut stopping: Option<BatchStop> = None;
        let deadline = self
            .options
            .timeout
            .map(|t| tokio::time::Instant::now() + t);
        let fast_fail = self.options.fast_fail;
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        // The fanout's report groups, merged at the end: group -> (shards, totals, max duration).
        let mut merged: BTreeMap<String, MergedGroup> = BTreeMap::new();

        let finish = |summaries: &mut Vec<Option<ChildSummary>>,
                      states: &mut Vec<State>,
                      report: &mut dyn FnMut(BatchEvent),
                      i: usize,
                      plan: &ChildPlan,
                      outcome: Outcome| {
            states[i] = State::Done(outcome.status);
            report(event(BatchEventKind::ChildFinished {
                identifier: plan.identifier.clone(),
                status: outcome.status,
                duration: outcome.duration,
                failing_phase: outcome.failing_phase,
                ignore_failure: plan.ignore_failure,
                reason: outcome.reason.clone(),
            }));
            summaries[i] = Some(ChildSummary {
                identifier: plan.identifier.clone(),
                description: plan.description.clone(),
                status: outcome.status,
                duration: outcome.duration,
                failing_phase: outcome.failing_phase,
                ignore_failure: plan.ignore_failure,
                reason: outcome.reason,
            });
        };
        let not_started = |reason: String| Outcome {
            status: ChildStatus::NotStarted,
            duration: Duration::ZERO,
            failing_phase: None,
            reason: Some(reason),
        };

        loop {
            // Children whose dependencies did not succeed never start; repeat until settled, as
            // that can block their own dependents.
            let mut changed = true;
            while changed {
                changed = false;
                for i in 0..self.children.len() {
                    if !matches!(states[i], State::Waiting) {
                        continue;
                    }
                    let plan = &self.children[i].plan;
                    let blocked = plan.depend_on.iter().find_map(|dep| {
                        match index.get(dep.as_str()).map(|&j| &states[j]) {
                            Some(State::Done(s)) if *s != ChildStatus::Succeeded => {
                                Some(format!("dependency `{dep}` {s}"))
                            }
                            _ => None,
                        }
                    });
                    let reason = match (blocked, stopping) {
                        (Some(reason), _) => reason,
                        (None, Some(BatchStop::FastFail)) => {
                            "fast-fail: the batch stopped after a failure".to_string()
                        }
                        (None, Some(BatchStop::Signal)) => "the batch was stopped".to_string(),
                        (None, Some(BatchStop::Timeout)) => "the batch timed out".to_string(),
                        (None, None) => continue,
                    };
                    finish(
                        &mut summaries,
                        &mut states,
                        &mut report,
                        i,
                        plan,
                        not_started(reason),
                    );
                    changed = true;
                }
            }
            // Start what may start, in plan order.
            for i in 0..self.children.len() {
                if running >= jobs || stopping.is_some() {
                    break;
                }
                if !matches!(states[i], State::Waiting) {
                    continue;
                }
                let ready = self.children[i].plan.depend_on.iter().all(|dep| {
                    matches!(
                        index.get(dep.as_str()).map(|&j| &states[j]),
                        Some(State::Done(ChildStatus::Succeeded))
                    )
                });
                if !ready {
                    continue;
                }
                let child_stop = StopRequest::new();
                states[i] = State::Running(child_stop.clone());
                running += 1;
                let (options, build_id) = self.child_options(i, &batch_arn);
                report(event(BatchEventKind::ChildStarted {
                    identifier: self.children[i].plan.identifier.clone(),
                    build_id,
                }));
                tokio::task::spawn_local(run_child(
                    i,
                    self.children[i].clone(),
                    options,
                    self.launcher.clone(),
                    self.options.combine_artifacts,
                    child_stop,
                    kill_now.child_token(),
                    tx.clone(),
                ));
            }
            if running == 0 {
                break;
            }
            let stop_children = |states: &[State], reason: CancelReason| {
                for state in states {
                    if let State::Running(s) = state {
                        s.request(reason);
                    }
                }
            };
            tokio::select! {
                message = rx.recv() => match message {
                    Some(Message::Event(i, e)) => {
                        if self.kind == BatchKind::BuildFanout {
                            if let EventKind::ReportGroupFinished { group, total, passed, failed, skipped, errors, duration, .. } = &e.kind {
                                let m = merged.entry(group.clone()).or_default();
                                m.shards += 1;
                                m.total += total;
                                m.passed += passed;
                                m.failed += failed;
                                m.skipped += skipped;
                                m.errors += errors;
                                m.duration = m.duration.max(*duration);
                            }
                        }
                        report(BatchEvent {
                            at: e.at,
                            elapsed: started.elapsed(),
                            kind: BatchEventKind::Child {
                                identifier: self.children[i].plan.identifier.clone(),
                                event: e,
                            },
                        });
                    }
                    Some(Message::Done(i, outcome)) => {
                        running -= 1;
                        let plan = &self.children[i].plan;
                        let counted_failure =
                            outcome.status != ChildStatus::Succeeded && !plan.ignore_failure;
                        finish(&mut summaries, &mut states, &mut report, i, plan, outcome);
                        if counted_failure && fast_fail && stopping.is_none() {
                            stopping = Some(BatchStop::FastFail);
                            report(event(BatchEventKind::BatchCancelling { reason: BatchStop::FastFail }));
                            stop_children(&states, CancelReason::Signal);
                        }
                    }
                    // The loop holds a sender: never closed.
                    None => break,
                },
                reason = stop.requested(), if stopping.is_none() => {
                    let why = match reason {
                        CancelReason::Timeout => BatchStop::Timeout,
                        CancelReason::Signal => BatchStop::Signal,
                    };
                    stopping = Some(why);
                    report(event(BatchEventKind::BatchCancelling { reason: why }));
                    stop_children(&states, reason);
                }
                _ = sleep_until(deadline), if stopping.is_none() && deadline.is_some() => {
                    stopping = Some(BatchStop::Timeout);
                    report(event(BatchEventKind::BatchCancelling { reason: BatchStop::Timeout }));
                    stop_children(&states, CancelReason::Timeout);
                }
            }
        }

        // COMBINE_ARTIFACTS.
        if let Some(Location::Dir(dir)) = &self.template.artifacts {
            if self.options.combine_artifacts {
                let dir = dir.clone();
                let ids: Vec<String> = self
                    .children
                    .iter()
                    .map(|c| c.plan.identifier.clone())
                    .collect();
                let packaging = self.template.artifacts_packaging;
                let combined =
                    tokio::task::spawn_blocking(move || artifacts::combine(&dir, &ids, packaging))
                        .await;
                match combined {
                    Ok(Ok(Some((path, builds)))) => {
                        report(event(BatchEventKind::ArtifactsCombined { path, builds }))
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => report(event(BatchEventKind::BatchWarning {
                        message: format!("cannot combine the artifacts: {e}"),
                    })),
                    Err(e) => report(event(BatchEventKind::BatchWarning {
                        message: format!("cannot combine the artifacts: {e}"),
                    })),
                }
            }
        }
        // The fanout's report groups, merged.
        if !merged.is_empty() {
            for (group, m) in &merged {
                report(event(m.event(group)));
            }
            if let Some(dir) = &self.template.reports_dir {
                if let Err(e) = write_merged(dir, &merged) {
                    report(event(BatchEventKind::BatchWarning {
                        message: format!(
                            "cannot write {}: {e}",
                            dir.join("summary.json").display()
                        ),
                    }));
                }
            }
        }
        if let Some(sweeper) = daemon_sweeper {
            let mut ignore = |_: crate::events::Stream, _: &[u8]| {};
            if let Ok(leaked) = sweeper.sweep(self.template.grace, &mut ignore).await {
                if !leaked.is_empty() {
                    report(event(BatchEventKind::BatchWarning {
                        message: leaked_message(&leaked),
                    }));
                }
            }
        }

        let children: Vec<ChildSummary> = summaries.into_iter().flatten().collect();
        let status = match stopping {
            Some(BatchStop::Signal) => BuildStatus::Stopped,
            Some(BatchStop::Timeout) => BuildStatus::TimedOut,
            _ if children
                .iter()
                .any(|c| !c.ignore_failure && c.status != ChildStatus::Succeeded) =>
            {
                BuildStatus::Failed
            }
            _ => BuildStatus::Succeeded,
        };
        let duration = started.elapsed();
        report(event(BatchEventKind::BatchFinished {
            status,
            duration,
            children: children.clone(),
        }));
        BatchResult {
            status,
            duration,
            children,
        }
    }

    /// The options of child `i`, and its build id.
    fn child_options(&self, i: usize, batch_arn: &str) -> (BuildOptions, String) {
        let child = &self.children[i];
        let id = &child.plan.identifier;
        let mut o = self.template.clone();
        o.identity.uuid = (self.options.new_uuid)();
        o.identity.number = self.template.identity.number + i as u64;
        o.identity.start_time = SystemTime::now();
        #[cfg(feature = "docker")]
        if let (Launcher::Containers(c), image) = (&self.launcher, &child.plan.image) {
            o.identity.image = image.clone().unwrap_or_else(|| c.image.clone());
        }
        o.buildspec_path = child.buildspec_path.clone();
        if o.stage_from.is_some() {
            o.source_dir = self.options.work_dir.join(id).join("src");
        }
        o.overrides.extend(child.plan.variables.iter().cloned());
        o.overrides.push((IDENTIFIER_VAR.to_string(), id.clone()));
        o.overrides
            .push((BATCH_ARN_VAR.to_string(), batch_arn.to_string()));
        o.artifacts = match &self.template.artifacts {
            Some(Location::Dir(dir)) => Some(Location::Dir(artifacts::staging(dir, id))),
            Some(Location::S3(url)) => Some(Location::S3(S3Url {
                bucket: url.bucket.clone(),
                prefix: join_key(&[&url.prefix, id]),
            })),
            None => None,
        };
        o.reports_dir = self.template.reports_dir.as_ref().map(|d| d.join(id));
        let build_id = o.identity.build_id();
        (o, build_id)
    }
}

/// A report group merged over a fanout's shards.
#[derive(Default)]
struct MergedGroup {
    shards: usize,
    total: usize,
    passed: usize,
    failed: usize,
    skipped: usize,
    errors: usize,
    duration: Duration,
}

impl MergedGroup {
    fn status(&self) -> &'static str {
        if self.failed + self.errors > 0 {
            "FAILED"
        } else {
            "SUCCEEDED"
        }
    }

    fn event(&self, group: &str) -> BatchEventKind {
        BatchEventKind::ReportMerged {
            group: group.to_string(),
            shards: self.shards,
            status: self.status().to_string(),
            total: self.total,
            passed: self.passed,
            failed: self.failed,
            skipped: self.skipped,
            errors: self.errors,
            duration: self.duration,
        }
    }
}

/// Writes `dir/summary.json`: the merged groups (the shards' own are in `dir/<identifier>/`).
fn write_merged(dir: &Path, merged: &BTreeMap<String, MergedGroup>) -> std::io::Result<()> {
    let groups: Vec<serde_json::Value> = merged
        .iter()
        .map(|(group, m)| {
            serde_json::json!({
                "name": group,
                "status": m.status(),
                "shards": m.shards,
                "total": m.total,
                "passed": m.passed,
                "failed": m.failed,
                "skipped": m.skipped,
                "errors": m.errors,
                "duration": m.duration.as_micros() as f64 / 1e6,
            })
        })
        .collect();
    let mut json = serde_json::to_vec_pretty(&serde_json::json!({ "groups": groups }))
        .map_err(std::io::Error::other)?;
    json.push(b'\n');
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &json)?;
    tmp.persist(dir.join("summary.json")).map_err(|e| e.error)?;
    Ok(())
}

fn leaked_message(leaked: &[LeakedProcess]) -> String {
    let list: Vec<String> = leaked
        .iter()
        .map(|p| format!("pid {} {}", p.pid, p.command_line))
        .collect();
    format!(
        "ended {} process(es) the batch's builds left running: {}",
        leaked.len(),
        list.join("; ")
    )
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs one child: where its commands run, its build, its artifacts' final names, the removal
/// of its source copy.
#[allow(clippy::too_many_arguments)]
async fn run_child(
    i: usize,
    child: BatchChild,
    mut options: BuildOptions,
    launcher: Launcher,
    combine: bool,
    stop: StopRequest,
    kill_now: CancellationToken,
    tx: mpsc::UnboundedSender<Message>,
) {
    let started = Instant::now();
    let id = child.plan.identifier.clone();
    // The copy's parent is this child's own directory (mounted in its container).
    let own_dir = options
        .stage_from
        .as_ref()
        .and_then(|_| options.source_dir.parent().map(Path::to_path_buf));
    if let Some(dir) = &own_dir {
        let _ = std::fs::create_dir_all(dir);
    }
    let artifacts_dir = match &options.artifacts {
        Some(Location::Dir(stage)) => stage.parent().map(Path::to_path_buf),
        _ => None,
    };
    let packaging = options.artifacts_packaging;
    let outcome = {
        let events = tx.clone();
        let mut info = |message: String| {
            let _ = events.send(Message::Event(
                i,
                Event::new(
                    SystemTime::now(),
                    started.elapsed(),
                    EventKind::Info { message },
                ),
            ));
        };
        match launch(
            &launcher,
            &child.plan,
            &mut options,
            own_dir.as_deref(),
            &mut info,
        )
        .await
        {
            Err(message) => Outcome {
                status: ChildStatus::Fault,
                duration: started.elapsed(),
                failing_phase: Some(BuildPhase::DownloadSource),
                reason: Some(message),
            },
            Ok((executor, container)) => {
                let events = tx.clone();
                let dir = artifacts_dir.clone();
                let id_for_paths = id.clone();
                let build = Build::new(child.spec, options, executor);
                let result = build
                    .run(stop, kill_now, move |mut e: Event| {
                        if let (
                            Some(dir),
                            EventKind::ArtifactUploaded {
                                identifier, path, ..
                            },
                        ) = (&dir, &mut e.kind)
                        {
                            *path = artifacts::final_path(
                                dir,
                                &id_for_paths,
                                identifier.as_deref(),
                                packaging,
                                combine,
                            );
                        }
                        let _ = events.send(Message::Event(i, e));
                    })
                    .await;
                #[cfg(feature = "docker")]
                if let Some(container) = container {
                    container.remove().await;
                }
                #[cfg(not(feature = "docker"))]
                let _ = container;
                Outcome {
                    status: ChildStatus::of(result.status),
                    duration: started.elapsed(),
                    failing_phase: result
                        .phases
                        .iter()
                        .find(|p| !matches!(p.status, PhaseStatus::Succeeded | PhaseStatus::NotRun))
                        .map(|p| p.phase),
                    reason: None,
                }
            }
        }
    };
    let cleanup = tokio::task::spawn_blocking(move || {
        let mut problems = Vec::new();
        if let Some(dir) = &artifacts_dir {
            problems = artifacts::settle(dir, &id, packaging, combine);
        }
        if let Some(dir) = &own_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        problems
    })
    .await
    .unwrap_or_default();
    for message in cleanup {
        let _ = tx.send(Message::Event(
            i,
            Event::new(
                SystemTime::now(),
                started.elapsed(),
                EventKind::Warning { message },
            ),
        ));
    }
    let _ = tx.send(Message::Done(i, outcome));
}

/// A child's container, removed when the child ends.
#[cfg(feature = "docker")]
type Container = Arc<ContainerExecutor>;
/// Without the `docker` feature, no child has a container.
#[cfg(not(feature = "docker"))]
type Container = std::convert::Infallible;

/// Where child `plan`'s commands run: a host executor, or a started container.
async fn launch(
    launcher: &Launcher,
    plan: &ChildPlan,
    options: &mut BuildOptions,
    own_dir: Option<&Path>,
    info: &mut (dyn FnMut(String) + Send),
) -> Result<(Arc<dyn Executor>, Option<Container>), String> {
    #[cfg(not(feature = "docker"))]
    let _ = (plan, options, own_dir, info);
    match launcher {
        Launcher::Host => {
            let executor: Arc<dyn Executor> = Arc::new(HostExecutor::for_one_of_many());
            Ok((executor, None))
        }
        #[cfg(feature = "docker")]
        Launcher::Containers(template) => {
            let mut container_options = template.clone();
            if let Some(image) = &plan.image {
                container_options.image = image.clone();
            }
            if let Some(privileged) = plan.privileged {
                container_options.privileged = privileged;
            }
            let mounted = own_dir.unwrap_or(&options.source_dir).to_path_buf();
            container_options.mounts.insert(0, mounted);
            let docker = crate::docker::connect()
                .await
                .map_err(|e| format!("cannot start the build container: {e}"))?;
            let mut progress = |p: crate::executor::container::StartProgress| {
                if let crate::executor::container::StartProgress::Pulling(image) = p {
                    info(format!("Pulling {image}"));
                }
            };
            let container = ContainerExecutor::start(docker, &container_options, &mut progress)
                .await
                .map_err(|e| format!("cannot start the build container: {e}"))?;
            // The image's environment replaces this machine's, as in a single build.
            options.base_env = container.image_env().to_vec();
            let container = Arc::new(container);
            let executor: Arc<dyn Executor> = container.clone();
            Ok((executor, Some(container)))
        }
    }
}
