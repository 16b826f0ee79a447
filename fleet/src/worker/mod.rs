//! The worker: takes jobs from the queue, claims their records, runs their builds side by side
//! and keeps their records current.
//!
//! - **Slots.** A semaphore of `slots` permits gates the queue: the worker receives only with a
//!   free slot, at most as many messages as free slots (at most 10), long polling 20 s, so it
//!   never holds a message it cannot start.
//! - **Claim.** Each message's build is claimed with the record's conditional write
//!   ([`RecordStore::claim`]): a refused claim drops the message (deleted when its build is
//!   finished; left alone when a live worker runs it, whose lease keeps it hidden).
//! - **Lease.** Every third of the visibility timeout the message is hidden for another timeout
//!   and the record's heartbeat written; the record is read every second for a stop request.
//!   A lease that cannot be kept (the receipt is gone, the record names another worker) stops
//!   the build: someone else may run it now.
//! - **Builds.** Each runs on its own thread through a [`Launcher`] (the agent's, which runs a
//!   build as `buildagent run` does, without signal handlers or terminal output), in its own
//!   directory under the work directory, removed afterwards. Phase changes and the log's
//!   location go to the record as they happen; the final record is written before the message
//!   is deleted.
//! - **Drain.** [`Shutdown::drain`] (the first SIGTERM or SIGINT) stops receiving at once: a long
//!   poll in flight is waited for and whatever it brings is released (visibility 0), `/readyz`
//!   answers 503, and running builds finish, up to the drain timeout. [`Shutdown::force`] (the
//!   second signal, or the timeout) stops them: their records go back to `QUEUED` with the
//!   attempt in the history ("interrupted by shutdown") and their messages are released, so
//!   another worker runs them as the next attempt.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use buildagent_runner::engine::BuildResult;
use buildagent_runner::events::{BuildStatus, CancelReason, Event, EventKind};
use buildagent_runner::executor::StopRequest;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::job::Job;
use crate::queue::{JobQueue, QueueError, Received};
use crate::record::{
    self, BuildRecord, Claim, Finish, LogsRecord, PhaseRecord, RecordError, RecordStore,
};

pub mod http;
pub mod metrics;

use http::Health;
use metrics::Metrics;

/// SQS's longest long poll.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// How often a running build's record is read for a stop request.
const STOP_POLL: Duration = Duration::from_secs(1);
/// The status reason of builds stopped by [`Shutdown::force`].
pub const SHUTDOWN_REASON: &str = "worker shut down";

/// Runs one build to its end on the calling thread. The agent implements it with the same
/// preparation as `buildagent run`; the worker calls it on a thread of its own per build.
pub trait Launcher: Send + Sync + 'static {
    /// Runs `request`'s build, giving every event to `events`, and returns how it ended.
    fn run(
        &self,
        request: LaunchRequest,
        events: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<BuildResult, LaunchError>;
}

/// One build for a [`Launcher`].
#[derive(Debug)]
pub struct LaunchRequest {
    /// The job.
    pub job: Job,
    /// The record's build number (`CODEBUILD_BUILD_NUMBER`).
    pub build_number: u64,
    /// A new directory for the build's files (its source copy, an inline buildspec), removed
    /// when the build ends.
    pub work_dir: PathBuf,
    /// Stops the build gracefully (SIGTERM, grace, SIGKILL); its status is then `STOPPED`.
    pub stop: StopRequest,
    /// Kills the running command at once.
    pub kill_now: CancellationToken,
}

/// A build that could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// The job asks for something that cannot be run (a bad buildspec, a source the worker
    /// cannot read): the build is `FAILED` with this reason.
    #[error("{0}")]
    Invalid(String),
    /// The worker could not run it (docker unreachable, no disk): `FAULT` with this reason.
    #[error("{0}")]
    Fault(String),
}

/// What the worker tells its caller (the CLI prints one line for each).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// A build was claimed and starts.
    Started {
        /// The build id.
        id: String,
        /// Its attempt (2 after a takeover).
        attempt: u32,
    },
    /// A build ended and its record is written.
    Finished {
        /// The build id.
        id: String,
        /// Its final status.
        status: BuildStatus,
        /// From claim to final record.
        duration: Duration,
        /// Why, when it did not succeed and a reason is known.
        reason: Option<String>,
    },
    /// A build stopped by the shutdown went back to the queue.
    Requeued {
        /// The build id.
        id: String,
    },
    /// A message was not a valid job: its record is `FAILED`, the message deleted.
    Invalid {
        /// The record's id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A message whose build is finished or runs elsewhere was dropped.
    Dropped {
        /// The build id.
        id: String,
        /// The record's status.
        status: String,
    },
    /// The worker drains: no new builds.
    Draining,
    /// Something failed that the worker works around (a queue call, a record update).
    Problem(String),
}

/// The worker's settings.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// This worker's id, `<hostname>:<pid>:<8 hex>` ([`worker_id`]).
    pub worker_id: String,
    /// Builds at once (default 1).
    pub slots: usize,
    /// Where each build's directory is made.
    pub work_dir: PathBuf,
    /// Take one build, then stop (`--once`).
    pub once: bool,
    /// Stop after this long with nothing running and nothing received (`--idle-exit`).
    pub idle_exit: Option<Duration>,
    /// How long running builds may go on once draining (default 30 minutes).
    pub drain_timeout: Duration,
    /// The longest long poll (default [`LONG_POLL`]).
    pub long_poll: Duration,
}

impl WorkerOptions {
    /// Defaults: one slot, a new id, the temporary directory, no `--once` or `--idle-exit`, a
    /// drain timeout of 30 minutes.
    pub fn new() -> WorkerOptions {
        WorkerOptions {
            worker_id: worker_id(),
            slots: 1,
            work_dir: std::env::temp_dir(),
            once: false,
            idle_exit: None,
            drain_timeout: Duration::from_secs(30 * 60),
            long_poll: LONG_POLL,
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions::new()
    }
}

/// A new worker id: `<hostname>:<pid>:<8 hex>` (the hex part tells apart two workers that got
/// the same pid on the same host, one after the other).
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}

/// The two steps of a shutdown, shared by the signal handler and the worker.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    force: CancellationToken,
}

impl Shutdown {
    /// No shutdown asked yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Stop receiving; let running builds finish.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    /// Stop running builds too (drains first if not yet draining).
    pub fn force(&self) {
        self.drain.cancel();
        self.force.cancel();
    }

    /// Whether draining was asked.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }
}

/// How a worker's run ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Builds it ran to a final record.
    pub builds: u64,
    /// The status of the last one (with `--once`: the build's).
    pub last_status: Option<BuildStatus>,
}

/// A worker that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The queue's visibility timeout could not be read.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The work directory cannot be made.
    #[error("work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A worker: a queue, a table, a launcher and its settings.
pub struct Worker {
    ctx: Arc<Ctx>,
}

struct Ctx {
    queue: JobQueue,
    records: RecordStore,
    launcher: Arc<dyn Launcher>,
    options: WorkerOptions,
    health: Arc<Health>,
    notify: Box<dyn Fn(Notice) + Send + Sync>,
    shutdown: Shutdown,
    /// The queue's visibility timeout (read at start).
    visibility: Mutex<Duration>,
    /// With `--once`: a build was claimed; receive no more.
    claimed: AtomicBool,
    summary: Mutex<Summary>,
}

impl Worker {
    /// A worker on `queue` and `records`, running builds with `launcher`; `notify` hears what
    /// it does.
    pub fn new(
        queue: JobQueue,
        records: RecordStore,
        launcher: Arc<dyn Launcher>,
        options: WorkerOptions,
        notify: impl Fn(Notice) + Send + Sync + 'static,
    ) -> Worker {
        let metrics = Arc::new(Metrics::new(options.slots));
        Worker {
            ctx: Arc::new(Ctx {
                queue,
                records,
                launcher,
                health: Arc::new(Health::new(metrics)),
                options,
                notify: Box::new(notify),
                shutdown: Shutdown::new(),
                visibility: Mutex::new(Duration::from_secs(30)),
                claimed: AtomicBool::new(false),
                summary: Mutex::new(Summary::default()),
            }),
        }
    }

    /// What `/healthz`, `/readyz` and `/metrics` report.
    pub fn health(&self) -> Arc<Health> {
        self.ctx.health.clone()
    }

    /// The handle that drains and stops this worker.
    pub fn shutdown(&self) -> Shutdown {
        self.ctx.shutdown.clone()
    }

    /// Runs until drained (and every build ended), `--once`'s build ended, or `--idle-exit`.
    pub async fn run(self) -> Result<Summary, WorkerError> {
        let ctx = self.ctx;
        let visibility = ctx.queue.visibility_timeout().await?;
        *lock(&ctx.visibility) = visibility;
        std::fs::create_dir_all(&ctx.options.work_dir).map_err(|source| WorkerError::WorkDir {
            path: ctx.options.work_dir.clone(),
            source,
        })?;
        let slots = ctx.options.slots.max(1);
        let permits = Arc::new(Semaphore::new(slots));
        let metrics = ctx.health.metrics.clone();
        let drain = ctx.shutdown.drain.clone();
        let mut last_activity = Instant::now();
        let mut failures = 0u32;
        'receiving: loop {
            if drain.is_cancelled() || (ctx.options.once && ctx.claimed.load(Ordering::SeqCst)) {
                break;
            }
            let first = tokio::select! {
                biased;
                _ = drain.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            if ctx.options.once && ctx.claimed.load(Ordering::SeqCst) {
                break;
            }
            let free = permits.available_permits() + 1;
            metrics.set_slots_free(free);
            let idle = free == slots;
            if !idle {
                last_activity = Instant::now();
            }
            // With --idle-exit, an idle worker's poll ends when the idle time does, so that it
            // never has to abandon a poll in flight (whose messages would stay hidden).
            let mut wait = ctx.options.long_poll;
            if let (Some(limit), true) = (ctx.options.idle_exit, idle) {
                let left = limit.saturating_sub(last_activity.elapsed());
                if left.is_zero() {
                    break;
                }
                wait = wait.min(left.max(Duration::from_secs(1)));
            }
            let max = if ctx.options.once { 1 } else { free.min(10) };
            metrics.receive_call();
            let poll = ctx.queue.receive(i32::try_from(max).unwrap_or(10), wait);
            tokio::pin!(poll);
            let (received, drained_meanwhile) = tokio::select! {
                result = &mut poll => (result, false),
                _ = drain.cancelled() => {
                    // Not dropped: the messages it brings are released at once instead.
                    tokio::select! {
                        result = &mut poll => (result, true),
                        _ = ctx.shutdown.force.cancelled() => break 'receiving,
                    }
                }
            };
            let messages = match received {
                Ok(messages) => {
                    failures = 0;
                    ctx.health.queue_ok();
                    messages
                }
                Err(e) => {
                    failures += 1;
                    ctx.health.queue_failed(e.to_string());
                    (ctx.notify)(Notice::Problem(e.to_string()));
                    drop(first);
                    // 1, 2, 4... 20 s between failed polls.
                    let pause = Duration::from_secs(1 << failures.min(5)).min(LONG_POLL);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = drain.cancelled() => break,
                    }
                }
            };
            if messages.is_empty() {
                continue;
            }
            last_activity = Instant::now();
            let mut first = Some(first);
            for message in messages {
                metrics.message_received();
                let permit = first
                    .take()
                    .or_else(|| permits.clone().try_acquire_owned().ok());
                match permit {
                    Some(permit) if !drained_meanwhile && !drain.is_cancelled() => {
                        metrics.set_slots_free(permits.available_permits());
                        let ctx = ctx.clone();
                        let permits = permits.clone();
                        tokio::spawn(async move {
                            handle(&ctx, message).await;
                            drop(permit);
                            ctx.health
                                .metrics
                                .set_slots_free(permits.available_permits());
                        });
                    }
                    // Draining (or, never, more messages than slots): another worker takes it.
                    _ => release(&ctx, &message).await,
                }
            }
        }
        if drain.is_cancelled() {
            ctx.health.set_draining();
            (ctx.notify)(Notice::Draining);
            let shutdown = ctx.shutdown.clone();
            let timeout = ctx.options.drain_timeout;
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => shutdown.force(),
                    _ = shutdown.force.cancelled() => {}
                }
            });
        }
        // Every build ended: every permit is back.
        let all = u32::try_from(slots).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(all).await;
        let summary = lock(&ctx.summary).clone();
        Ok(summary)
    }
}

/// The queue (a URL or a name) and the table of records, through the SDK's configuration for
/// `region` (the environment's wins: `AWS_REGION`, `AWS_ENDPOINT_URL`, profiles).
pub async fn connect(
    region: &str,
    queue: &str,
    table: &str,
) -> Result<(JobQueue, RecordStore), QueueError> {
    let config = buildagent_runner::aws::sdk_config(region).await;
    let queue = JobQueue::open(aws_sdk_sqs::Client::new(&config), queue).await?;
    let records = RecordStore::new(aws_sdk_dynamodb::Client::new(&config), table);
    Ok((queue, records))
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until the task is dropped.
pub async fn serve_http(listener: tokio::net::TcpListener, health: Arc<Health>) {
    http::serve(listener, health).await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn release(ctx: &Ctx, message: &Received) {
    if let Err(e) = ctx.queue.release(&message.receipt).await {
        (ctx.notify)(Notice::Problem(format!("releasing a message: {e}")));
    }
}

/// One message: parse, claim, run, record, delete.
async fn handle(ctx: &Arc<Ctx>, message: Received) {
    let received_at = Instant::now();
    let metrics = &ctx.health.metrics;
    let job = match Job::parse(&message.body) {
        Ok(parsed) => parsed.job,
        Err(e) => {
            metrics.message_invalid();
            invalid(ctx, &message, &e.to_string()).await;
            return;
        }
    };
    let me = ctx.options.worker_id.as_str();
    let visibility = *lock(&ctx.visibility);
    let mut claim = ctx.records.claim(&job.id, me, visibility).await;
    if let Err(RecordError::NotFound(_)) = claim {
        // Sent without `submit` (straight to the queue): the record is made here.
        claim = match create_record(ctx, &job, &message).await {
            Ok(()) => ctx.records.claim(&job.id, me, visibility).await,
            Err(e) => Err(e),
        };
    }
    let (attempt, record) = match claim {
        Ok(Claim::Claimed { attempt, record }) => (attempt, record),
        Ok(Claim::Refused { record }) => {
            metrics.duplicate_dropped();
            // A finished build's message goes; a live one's stays hidden by its worker's lease.
            if record.status.is_finished() {
                if let Err(e) = ctx.queue.delete(&message.receipt).await {
                    (ctx.notify)(Notice::Problem(format!("deleting a message: {e}")));
                }
            }
            (ctx.notify)(Notice::Dropped {
                id: job.id.clone(),
                status: record.status.to_string(),
            });
            return;
        }
        Err(e) => {
            // The table is unreachable: another worker (or this one, later) tries again.
            (ctx.notify)(Notice::Problem(format!("claiming {}: {e}", job.id)));
            release(ctx, &message).await;
            return;
        }
    };
    ctx.claimed.store(true, Ordering::SeqCst);
    if let Some(sent) = message.sent_at {
        metrics.queue_waited(SystemTime::now().duration_since(sent).unwrap_or_default());
    }
    metrics.running_add(1);
    (ctx.notify)(Notice::Started {
        id: job.id.clone(),
        attempt,
    });
    run_build(ctx, job, attempt, &record, message, received_at).await;
    metrics.running_add(-1);
}

async fn invalid(ctx: &Ctx, message: &Received, reason: &str) {
    // The id and project, when the message has them, name the record.
    let value: Option<serde_json::Value> = serde_json::from_str(&message.body).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let id = field("id")
        .filter(|id| id.contains(':'))
        .unwrap_or_else(|| format!("invalid:{}", message.message_id));
    let project = field("projectName");
    match ctx
        .records
        .fail_invalid(Some(&id), project.as_deref(), reason, &message.body)
        .await
    {
        Ok(id) => {
            if let Err(e) = ctx.queue.delete(&message.receipt).await {
                (ctx.notify)(Notice::Problem(format!("deleting a message: {e}")));
            }
            (ctx.notify)(Notice::Invalid {
                id,
                reason: reason.to_string(),
            });
        }
        Err(e) => {
            // Kept: it comes back, and reaches the dead-letter queue if this keeps failing.
            (ctx.notify)(Notice::Problem(format!("recording an invalid job: {e}")));
        }
    }
}

async fn create_record(ctx: &Ctx, job: &Job, message: &Received) -> Result<(), RecordError> {
    let number = ctx.records.next_build_number(&job.project_name).await?;
    let mut record = BuildRecord::queued(&job.id, &job.project_name, number, Some(job.to_json()));
    if let Some(sent) = message.sent_at {
        record.queued_at = sent;
    }
    match ctx.records.create_queued(&record).await {
        // Made by another worker meanwhile: claim it all the same.
        Ok(()) | Err(RecordError::AlreadyFinished { .. }) => Ok(()),
        Err(e) => match ctx.records.get(&job.id).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(e),
        },
    }
}

/// Why a build was stopped by the worker rather than by itself.
#[derive(Clone, Debug, PartialEq)]
enum Ended {
    /// `stop` on the record.
    StopRequested,
    /// The lease is gone; another worker may run the build.
    LeaseLost(String),
    /// [`Shutdown::force`].
    Shutdown,
}

async fn run_build(
    ctx: &Arc<Ctx>,
    job: Job,
    attempt: u32,
    record: &BuildRecord,
    message: Received,
    received_at: Instant,
) {
    let me = ctx.options.worker_id.clone();
    let metrics = ctx.health.metrics.clone();
    let id = job.id.clone();
    let claimed_at = Instant::now();
    // The claim's own read: its number and submit time are not changed by the claim.
    let (build_number, queued_at) = (record.build_number, record.queued_at);
    let now = SystemTime::now();
    // CodeBuild's first phases, which happen before the engine's.
    let mut phases = vec![
        done_phase("SUBMITTED", queued_at, queued_at),
        done_phase("QUEUED", queued_at, now),
        open_phase("PROVISIONING", now),
    ];
    let stop = StopRequest::new();
    let kill_now = CancellationToken::new();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
    let (done_tx, done_rx) = oneshot::channel();
    let work_dir = tempfile::Builder::new()
        .prefix(&format!("{}-", job.uuid()))
        .tempdir_in(&ctx.options.work_dir);
    let mut work_holder = None;
    let started = match work_dir {
        Err(e) => Err(LaunchError::Fault(format!(
            "a build directory in {}: {e}",
            ctx.options.work_dir.display()
        ))),
        Ok(dir) => {
            let request = LaunchRequest {
                job: job.clone(),
                build_number,
                work_dir: dir.path().to_path_buf(),
                stop: stop.clone(),
                kill_now: kill_now.clone(),
            };
            work_holder = Some(dir);
            let launcher = ctx.launcher.clone();
            std::thread::Builder::new()
                .name(format!("build-{}", &job.uuid()[..8.min(job.uuid().len())]))
                .spawn(move || {
                    // Only what the record needs crosses over; output stays on the build's thread.
                    let mut forward = move |event: &Event| {
                        if matches!(
                            event.kind,
                            EventKind::PhaseStarted { .. }
                                | EventKind::PhaseFinished { .. }
                                | EventKind::Logs { .. }
                        ) {
                            let _ = events_tx.send(event.clone());
                        }
                    };
                    let result = launcher.run(request, &mut forward);
                    let _ = done_tx.send(result);
                })
                .map(|_| ())
                .map_err(|e| LaunchError::Fault(format!("starting the build's thread: {e}")))
        }
    };
    let visibility = *lock(&ctx.visibility);
    let mut ended: Option<Ended> = None;
    let result = match started {
        Err(e) => Err(e),
        Ok(()) => {
            let mut stop_poll = tokio::time::interval(STOP_POLL);
            let mut lease = tokio::time::interval(visibility / 3);
            lease.tick().await;
            stop_poll.tick().await;
            tokio::pin!(done_rx);
            let force = ctx.shutdown.force.clone();
            // Until when the message is hidden for sure: a failed extension is retried every
            // second until then (a blip of the network is not a lost lease).
            let mut hidden_until = received_at + visibility;
            let mut retry_extend = false;
            let end = |why: Ended, ended: &mut Option<Ended>| {
                if ended.is_none() {
                    if matches!(why, Ended::LeaseLost(_)) {
                        metrics.lease_lost();
                    }
                    *ended = Some(why);
                    stop.request(CancelReason::Signal);
                }
            };
            loop {
                tokio::select! {
                    result = &mut done_rx => {
                        // The events sent before the end are in the channel still: the final
                        // record's phases need them (the last updates are the final write's).
                        let last: Vec<Event> = std::iter::from_fn(|| events_rx.try_recv().ok()).collect();
                        let _ = take_events(ctx, &id, &me, &mut phases, last, false).await;
                        break result.unwrap_or_else(|_| {
                            Err(LaunchError::Fault("the build's thread panicked".into()))
                        });
                    }
                    Some(event) = events_rx.recv() => {
                        // Phases that changed meanwhile are one write: a fast build's seven
                        // phases pass in milliseconds, and the record needs only the latest.
                        let batch: Vec<Event> = std::iter::once(event)
                            .chain(std::iter::from_fn(|| events_rx.try_recv().ok()))
                            .collect();
                        for update in take_events(ctx, &id, &me, &mut phases, batch, true).await {
                            match update {
                                Err(RecordError::LostClaim(_)) => end(Ended::LeaseLost("the record names another worker".into()), &mut ended),
                                Err(e) => (ctx.notify)(Notice::Problem(format!("updating {id}: {e}"))),
                                Ok(()) => {}
                            }
                        }
                    }
                    _ = stop_poll.tick() => {
                        if retry_extend {
                            extend_lease(ctx, &message, &mut hidden_until, &mut retry_extend, &mut |why| end(why, &mut ended)).await;
                        }
                        match ctx.records.get(&id).await {
                            Ok(Some(record)) if record.worker.as_deref() != Some(me.as_str())
                                || record.status != record::BuildStatus::InProgress => {
                                end(Ended::LeaseLost(format!("the record is {} on {}", record.status, record.worker.as_deref().unwrap_or("no worker"))), &mut ended);
                            }
                            Ok(Some(record)) if record.stop_requested => end(Ended::StopRequested, &mut ended),
                            Ok(_) => {}
                            Err(e) => (ctx.notify)(Notice::Problem(format!("reading {id}: {e}"))),
                        }
                    }
                    _ = lease.tick() => {
                        extend_lease(ctx, &message, &mut hidden_until, &mut retry_extend, &mut |why| end(why, &mut ended)).await;
                        match ctx.records.heartbeat(&id, &me).await {
                            Ok(beat) if beat.stop_requested => end(Ended::StopRequested, &mut ended),
                            Ok(_) => {}
                            Err(RecordError::LostClaim(_)) => end(Ended::LeaseLost("the record names another worker".into()), &mut ended),
                            Err(e) => (ctx.notify)(Notice::Problem(format!("heartbeat of {id}: {e}"))),
                        }
                    }
                    _ = force.cancelled(), if ended.is_none() => end(Ended::Shutdown, &mut ended),
                }
            }
        }
    };
    drop(work_holder);
    let duration = claimed_at.elapsed();
    let (status, reason, exported, build_phases) = match result {
        Ok(result) => {
            let reason = match (&ended, result.status) {
                (Some(Ended::StopRequested), BuildStatus::Stopped) => {
                    Some("stopped by request".to_string())
                }
                (Some(Ended::LeaseLost(why)), BuildStatus::Stopped) => {
                    Some(format!("lease lost: {why}"))
                }
                (Some(Ended::Shutdown), BuildStatus::Stopped) => Some(SHUTDOWN_REASON.into()),
                (_, BuildStatus::TimedOut) => Some(format!(
                    "build timed out after {} minutes",
                    job.timeout_in_minutes_override.unwrap_or(60)
                )),
                _ => None,
            };
            (result.status, reason, result.exported, true)
        }
        Err(LaunchError::Invalid(reason)) => (BuildStatus::Failed, Some(reason), Vec::new(), false),
        Err(LaunchError::Fault(reason)) => (BuildStatus::Fault, Some(reason), Vec::new(), false),
    };
    if !build_phases {
        // The build never started: PROVISIONING is where it ended.
        if let Some(last) = phases.last_mut() {
            last.end_time = Some(SystemTime::now());
            last.phase_status = Some(
                if status == BuildStatus::Fault {
                    "FAULT"
                } else {
                    "CLIENT_ERROR"
                }
                .into(),
            );
            if let Some(reason) = &reason {
                last.contexts.push(("CLIENT_ERROR".into(), reason.clone()));
            }
        }
    }
    if matches!(ended, Some(Ended::Shutdown)) && status == BuildStatus::Stopped {
        // Back to the queue for another worker: the record first, then the message.
        match requeue(ctx, &id, attempt).await {
            Ok(()) => {
                release(ctx, &message).await;
                (ctx.notify)(Notice::Requeued { id });
                return;
            }
            Err(e) => (ctx.notify)(Notice::Problem(format!("requeueing {id}: {e}"))),
        }
    }
    let now = SystemTime::now();
    phases.push(open_phase("COMPLETED", now));
    let mut finish = Finish::new(status.into());
    finish.reason = reason.clone();
    finish.end_time = now;
    finish.phases = phases;
    finish.exported = exported;
    finish.artifacts = artifacts_location(&job);
    match ctx.records.finish(&id, &me, &finish).await {
        Ok(()) => {
            // Deleted only now that the record says how it ended.
            if let Err(e) = ctx.queue.delete(&message.receipt).await {
                if !matches!(ended, Some(Ended::LeaseLost(_))) {
                    (ctx.notify)(Notice::Problem(format!("deleting {id}'s message: {e}")));
                }
            }
            metrics.build_finished(status, duration);
            let mut summary = lock(&ctx.summary);
            summary.builds += 1;
            summary.last_status = Some(status);
            drop(summary);
            (ctx.notify)(Notice::Finished {
                id,
                status,
                duration,
                reason,
            });
        }
        Err(RecordError::LostClaim(_)) => {
            // Another worker owns the build now: its record and message are its own.
            metrics.build_finished(BuildStatus::Stopped, duration);
            (ctx.notify)(Notice::Finished {
                id,
                status: BuildStatus::Stopped,
                duration,
                reason: Some(reason.unwrap_or_else(|| "lease lost".into())),
            });
        }
        Err(e) => {
            // Not deleted: the message comes back and the build is taken over once stale.
            (ctx.notify)(Notice::Problem(format!("writing {id}'s final record: {e}")));
        }
    }
}

/// Hides the message for another visibility timeout. A failure is retried (the caller calls
/// again a second later while `retry` is set) until the message may be visible again: then the
/// lease is lost, and `lost` is told why.
async fn extend_lease(
    ctx: &Ctx,
    message: &Received,
    hidden_until: &mut Instant,
    retry: &mut bool,
    lost: &mut (dyn FnMut(Ended) + Send),
) {
    let visibility = *lock(&ctx.visibility);
    let asked = Instant::now();
    match ctx.queue.extend(&message.receipt, visibility).await {
        Ok(()) => {
            *hidden_until = asked + visibility;
            *retry = false;
            ctx.health.metrics.lease_extended();
        }
        Err(e) if Instant::now() + STOP_POLL >= *hidden_until => {
            *retry = false;
            lost(Ended::LeaseLost(format!(
                "the message's visibility could not be extended: {e}"
            )));
        }
        Err(e) => {
            *retry = true;
            (ctx.notify)(Notice::Problem(format!(
                "extending {}'s lease (retrying): {e}",
                message.message_id
            )));
        }
    }
}

fn logs_record(
    cw: &buildagent_runner::events::CloudWatchLogsLocation,
    s3: &Option<String>,
) -> LogsRecord {
    let mut logs = LogsRecord::cloudwatch(&cw.region, &cw.group, &cw.stream);
    logs.deep_link = cw.url.clone();
    logs.s3_deep_link = s3.clone();
    logs
}

fn done_phase(kind: &str, start: SystemTime, end: SystemTime) -> PhaseRecord {
    PhaseRecord {
        phase_type: kind.into(),
        phase_status: Some("SUCCEEDED".into()),
        start_time: start,
        end_time: Some(end),
        contexts: Vec::new(),
    }
}

/// A phase that started at `start` and has not ended.
fn open_phase(kind: &str, start: SystemTime) -> PhaseRecord {
    PhaseRecord {
        phase_type: kind.into(),
        phase_status: None,
        start_time: start,
        end_time: None,
        contexts: Vec::new(),
    }
}

/// Takes the build's `events` into its record: the log's location is written at once, phase
/// changes go into `phases`, written together once when `write_phases` (else the final record
/// carries them). Returns the writes' outcomes.
async fn take_events(
    ctx: &Ctx,
    id: &str,
    me: &str,
    phases: &mut Vec<PhaseRecord>,
    events: Vec<Event>,
    write_phases: bool,
) -> Vec<Result<(), RecordError>> {
    let mut writes = Vec::new();
    let mut current = None;
    for event in &events {
        match &event.kind {
            EventKind::Logs {
                cloudwatch: Some(cw),
                s3,
            } => writes.push(ctx.records.set_logs(id, me, &logs_record(cw, s3)).await),
            EventKind::Logs { .. } => {}
            _ => current = Some(apply_phase(phases, event)),
        }
    }
    if let Some(current) = current.filter(|_| write_phases) {
        writes.push(ctx.records.update_phases(id, me, &current, phases).await);
    }
    writes
}

/// Applies a phase event to the record's phases; returns the current phase.
fn apply_phase(phases: &mut Vec<PhaseRecord>, event: &Event) -> String {
    match &event.kind {
        EventKind::PhaseStarted { phase } => {
            // The phase before it (PROVISIONING for the first) ends here.
            if let Some(last) = phases.last_mut().filter(|p| p.end_time.is_none()) {
                last.end_time = Some(event.at);
                last.phase_status.get_or_insert_with(|| "SUCCEEDED".into());
            }
            phases.push(open_phase(phase.as_str(), event.at));
        }
        EventKind::PhaseFinished {
            phase,
            status,
            context,
            ..
        } => {
            if let Some(record) = phases
                .iter_mut()
                .rev()
                .find(|p| p.phase_type == phase.as_str())
            {
                record.end_time = Some(event.at);
                record.phase_status = Some(status.as_str().into());
                if let Some(context) = context {
                    record
                        .contexts
                        .push((context.code.clone(), context.message.clone()));
                }
            }
        }
        _ => {}
    }
    phases
        .last()
        .map(|p| p.phase_type.clone())
        .unwrap_or_default()
}

/// The record's `artifacts.location`, as CodeBuild shows it (`arn:aws:s3:::bucket/path`, the
/// build's uuid after the path with `namespaceType` `BUILD_ID`): where the artifacts are.
fn artifacts_location(job: &Job) -> Option<serde_json::Value> {
    let artifacts = job.artifacts_override.as_ref()?;
    if artifacts.kind != "S3" {
        return None;
    }
    let mut parts = vec![artifacts.location.as_deref()?.to_string()];
    if let Some(path) = artifacts.path.as_deref().filter(|p| !p.is_empty()) {
        parts.push(path.trim_matches('/').to_string());
    }
    if artifacts.namespace_type.as_deref() == Some("BUILD_ID") {
        parts.push(job.uuid().to_string());
    }
    Some(serde_json::json!({ "location": format!("arn:aws:s3:::{}", parts.join("/")) }))
}

/// A build stopped by the shutdown goes back to `QUEUED`, its attempt in the history, so that
/// the released message is claimed again as the next attempt. Conditional on this worker
/// still owning it.
async fn requeue(ctx: &Ctx, id: &str, attempt: u32) -> Result<(), RecordError> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let me = &ctx.options.worker_id;
    let record = ctx
        .records
        .get(id)
        .await?
        .ok_or_else(|| RecordError::NotFound(id.to_string()))?;
    let now = SystemTime::now();
    let history = record.history_with_ended(
        attempt,
        me,
        now,
        format!("attempt {attempt} on worker {me} interrupted by shutdown"),
    );
    let ms = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    };
    let history: Vec<serde_json::Value> = history
        .iter()
        .map(|a| {
            serde_json::json!({
                "attempt": a.attempt,
                "worker": a.worker,
                "startTime": ms(a.start_time),
                "endTime": ms(a.end_time),
                "outcome": a.outcome,
            })
        })
        .collect();
    let s = |t: &str| AttributeValue::S(t.to_string());
    ctx.records
        .client()
        .update_item()
        .table_name(ctx.records.table())
        .key("id", s(id))
        .update_expression(
            "SET #status = :queued, #phase = :queued, #history = :history \
             REMOVE #worker, #heartbeat",
        )
        .condition_expression("#worker = :me AND #status = :inprogress")
        .expression_attribute_names("#status", "buildStatus")
        .expression_attribute_names("#phase", "currentPhase")
        .expression_attribute_names("#history", "history")
        .expression_attribute_names("#worker", "worker")
        .expression_attribute_names("#heartbeat", "heartbeatAt")
        .expression_attribute_values(":queued", s("QUEUED"))
        .expression_attribute_values(":inprogress", s("IN_PROGRESS"))
        .expression_attribute_values(":me", s(me))
        .expression_attribute_values(
            ":history",
            s(&serde_json::Value::Array(history).to_string()),
        )
        .send()
        .await
        .map_err(|e| RecordError::Service {
            op: format!("requeueing `{id}` in table {}", ctx.records.table()),
            message: aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildagent_runner::events::{BuildPhase, PhaseContext, PhaseStatus};

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn phase_events_end_the_previous_phase_and_carry_status_and_context() {
        let mut phases = vec![open_phase("PROVISIONING", at(0))];
        let event = |ms, kind| Event::new(at(ms), Duration::ZERO, kind);
        let current = apply_phase(
            &mut phases,
            &event(
                10,
                EventKind::PhaseStarted {
                    phase: BuildPhase::Build,
                },
            ),
        );
        assert_eq!(current, "BUILD");
        assert_eq!(phases[0].end_time, Some(at(10)));
        assert_eq!(phases[0].phase_status.as_deref(), Some("SUCCEEDED"));
        apply_phase(
            &mut phases,
            &event(
                30,
                EventKind::PhaseFinished {
                    phase: BuildPhase::Build,
                    status: PhaseStatus::Failed,
                    duration: Duration::from_millis(20),
                    context: Some(PhaseContext {
                        code: "COMMAND_EXECUTION_ERROR".into(),
                        message: "exit status 3".into(),
                    }),
                },
            ),
        );
        let build = &phases[1];
        assert_eq!(build.phase_status.as_deref(), Some("FAILED"));
        assert_eq!(build.end_time, Some(at(30)));
        assert_eq!(
            build.contexts,
            vec![(
                "COMMAND_EXECUTION_ERROR".to_string(),
                "exit status 3".to_string()
            )]
        );
    }

    #[test]
    fn the_artifacts_location_is_codebuilds_arn_of_the_prefix() {
        let mut job = Job::new("web");
        assert_eq!(artifacts_location(&job), None);
        job.artifacts_override = Some(crate::job::Artifacts {
            kind: "S3".into(),
            location: Some("bucket".into()),
            path: Some("/out/".into()),
            namespace_type: Some("BUILD_ID".into()),
            ..Default::default()
        });
        assert_eq!(
            artifacts_location(&job).unwrap()["location"],
            format!("arn:aws:s3:::bucket/out/{}", job.uuid()).as_str()
        );
    }

    #[test]
    fn a_worker_id_is_host_pid_and_eight_hex_digits() {
        let id = worker_id();
        let parts: Vec<&str> = id.rsplitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[0].len(), 8);
        assert!(parts[0].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(!parts[2].is_empty());
    }
}
