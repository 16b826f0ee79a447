//! The CloudWatch Logs sink: the build's log streamed as it runs, one log event per line.
//!
//! The log is queued in chunks in a [`LogBuffer`] (bounded memory, spilling to a file), and a
//! thread of its own cuts them into lines and sends them with `PutLogEvents`: whenever a full
//! batch waits, and at least once a second; while the build keeps its CPUs busy, one batch a
//! second ([`Pacer`]). Batches follow the service's limits ([`LIMITS`]): at
//! most 10,000 events and 1 MiB counting 26 bytes per event, in time order, spanning less than 24
//! hours; a line over 256 KiB is sent as several events. Throttling, 5xx answers and transport
//! errors are retried with exponential backoff (up to [`MAX_BACKOFF`]) for as long as the build
//! runs; at the end, [`CloudWatchSink::finish`] waits at most its timeout and says how many lines
//! did not arrive.
//!
//! The group and the stream are created when missing (existing ones are used as they are).
//! Sequence tokens are not needed by the current API; an older endpoint's
//! `InvalidSequenceTokenException` (retried with the token it expects) and
//! `DataAlreadyAcceptedException` (the batch counts as delivered) are still handled.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::buffer::{Batch, BatchLimits, LineCutter, LogBuffer};
use super::pacing::Pacer;
use super::Delivery;

/// CloudWatch Logs' batch limits for `PutLogEvents`.
pub const LIMITS: BatchLimits = BatchLimits {
    max_events: 10_000,
    max_bytes: 1_048_576,
    overhead_per_event: 26,
    // "A batch of log events in a single request cannot span more than 24 hours."
    max_span_ms: 24 * 3600 * 1000 - 1,
};

/// The largest message of one event: 256 KiB with its 26 bytes of overhead.
pub const MAX_MESSAGE: usize = 256 * 1024 - 26;

/// The longest wait between two retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where and how the sink sends.
#[derive(Clone, Debug)]
pub struct CloudWatchOptions {
    /// The log group (created when missing).
    pub group: String,
    /// The log stream (created when missing).
    pub stream: String,
    /// Bytes of the log kept in memory before spilling to a file (default 8 MiB).
    pub memory_limit: usize,
    /// Where the spill file is created (default: the temporary directory).
    pub spill_dir: PathBuf,
    /// How often waiting lines are sent at the latest (default 1 s).
    pub flush_interval: Duration,
    /// When set, a line `<events> <bytes> <first-ms> <last-ms> <accepted-ms>` is appended to this
    /// file for every batch the service accepted (`bytes` as the limit counts it, 26 per event
    /// included; the times in milliseconds since the Unix epoch: the batch's first and last
    /// event, and when the answer came): what was sent, for tests and diagnosis.
    pub batch_record: Option<PathBuf>,
}

impl CloudWatchOptions {
    /// Options for `group` and `stream` with the defaults.
    pub fn new(group: &str, stream: &str) -> CloudWatchOptions {
        CloudWatchOptions {
            group: group.to_string(),
            stream: stream.to_string(),
            memory_limit: 8 * 1024 * 1024,
            spill_dir: std::env::temp_dir(),
            flush_interval: Duration::from_secs(1),
            batch_record: None,
        }
    }
}

/// The state the sending thread shares with the sink.
#[derive(Default)]
struct Shared {
    /// The end's deadline, once the build ended: watched, so that a request already in flight
    /// when the build ends is bounded by it too.
    deadline: tokio::sync::watch::Sender<Option<Instant>>,
    delivered: AtomicU64,
    rejected: AtomicU64,
    /// Events beyond one per line (long lines cut into pieces), counted as they are cut.
    extra: AtomicU64,
    /// Whether the thread took and sent (or gave up on) everything, up to the last line.
    drained: std::sync::atomic::AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.borrow()
    }

    fn past_deadline(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    fn error(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }
}

/// A running CloudWatch Logs sink (see the module docs).
pub struct CloudWatchSink {
    group: String,
    stream: String,
    buffer: Arc<LogBuffer>,
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CloudWatchSink {
    /// Starts the sink's thread with a client made from `config` (the SDK's own retries off:
    /// the sink retries itself, for as long as the build runs).
    pub fn start(
        config: &aws_config::SdkConfig,
        options: CloudWatchOptions,
    ) -> std::io::Result<CloudWatchSink> {
        let client_config = aws_sdk_cloudwatchlogs::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            )
            .build();
        let client = aws_sdk_cloudwatchlogs::Client::from_conf(client_config);
        let (group, stream) = (options.group.clone(), options.stream.clone());
        let buffer = Arc::new(LogBuffer::new(
            options.memory_limit,
            LIMITS.max_bytes,
            &options.spill_dir,
        ));
        let shared = Arc::new(Shared::default());
        let (tx, done) = mpsc::channel();
        let thread = {
            let buffer = buffer.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("cloudwatch-logs".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(runtime) => {
                            let mut sender = Sender {
                                client,
                                pacer: Pacer::new(options.flush_interval),
                                options,
                                token: None,
                                created: false,
                                buffer,
                                shared,
                                cutter: LineCutter::new(MAX_MESSAGE),
                            };
                            sender.run(&runtime);
                        }
                        Err(e) => shared.error(format!("cannot start the sink's runtime: {e}")),
                    }
                    let _ = tx.send(());
                })?
        };
        Ok(CloudWatchSink {
            group,
            stream,
            buffer,
            shared,
            done,
            thread: Some(thread),
        })
    }

    /// The log group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The log stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Queues a chunk of the log read at `timestamp` (milliseconds since the Unix epoch); never
    /// waits. The sink's thread cuts it into lines, one event each (a line over [`MAX_MESSAGE`]
    /// bytes becomes several).
    pub fn push(&self, timestamp: i64, bytes: &[u8]) {
        self.buffer.push(timestamp, bytes);
    }

    /// Events queued so far (lines, and the extra pieces of long lines cut so far).
    pub fn pushed(&self) -> u64 {
        self.buffer.stats().pushed + self.shared.extra.load(Ordering::Relaxed)
    }

    /// Lines (events) the service accepted so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Sends what waits, for at most `timeout`, and says what arrived.
    pub fn finish(mut self, timeout: Duration) -> Delivery {
        self.shared
            .deadline
            .send_replace(Some(Instant::now() + timeout));
        self.buffer.close();
        let finished = self
            .done
            .recv_timeout(timeout + Duration::from_millis(200))
            .is_ok();
        if finished {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        // A thread still sending is left behind: it ends at the deadline or with the process.
        let waiting = !self.buffer.is_empty() || !self.shared.drained.load(Ordering::Relaxed);
        let pushed = self.pushed();
        let delivered = self.shared.delivered.load(Ordering::Relaxed);
        let rejected = self.shared.rejected.load(Ordering::Relaxed);
        let mut error = self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(spill) = self.buffer.spill_error() {
            error = Some(spill);
        }
        let undelivered = pushed.saturating_sub(delivered);
        let error = match error {
            _ if undelivered == 0 => None,
            None => Some(format!("not sent within {}s", timeout.as_secs_f64())),
            Some(e) if waiting || undelivered > rejected => Some(format!(
                "{e}; gave up {}s after the end of the build",
                timeout.as_secs_f64()
            )),
            Some(e) => Some(e),
        };
        Delivery {
            delivered,
            undelivered,
            error,
        }
    }
}

pub use super::buffer::split;

/// Why a batch was not sent.
struct GaveUp;

/// What to do after a failed `PutLogEvents`.
enum Next {
    /// Wait and send again (throttling, 5xx, transport).
    Retry(String),
    /// The group or stream is gone: create them and send again.
    Create,
    /// Send again at once with this sequence token.
    Token(Option<String>),
    /// The batch was already accepted (this token comes next).
    Accepted(Option<String>),
    /// The service refuses the batch itself: retrying cannot help.
    Refused(String),
}

struct Sender {
    client: aws_sdk_cloudwatchlogs::Client,
    options: CloudWatchOptions,
    token: Option<String>,
    created: bool,
    buffer: Arc<LogBuffer>,
    shared: Arc<Shared>,
    /// The lines cut from the chunks taken and not sent yet (at most about a batch and a block).
    cutter: LineCutter,
    /// One batch per flush interval while the build runs and keeps its CPUs busy.
    pacer: Pacer,
}

impl Sender {
    fn run(&mut self, runtime: &tokio::runtime::Runtime) {
        let mut next_flush = Instant::now() + self.options.flush_interval;
        loop {
            // Woken by a full batch's worth of the log, by the end, or by the clock: send all
            // that waits.
            self.buffer.wait(next_flush);
            let closing = self.buffer.is_closed();
            next_flush = Instant::now() + self.options.flush_interval;
            loop {
                if self.shared.past_deadline() {
                    // The end gave up waiting: what is left is counted as not delivered.
                    return;
                }
                let waiting = !self.buffer.is_empty() || !self.cutter.is_empty();
                if waiting && !self.buffer.is_closed() {
                    // The build runs: when its CPUs are busy, they are the build's.
                    let hold = self.pacer.hold(Instant::now());
                    if !hold.is_zero() {
                        self.buffer.sleep(hold);
                        continue;
                    }
                }
                // Only as much is taken from the buffer as the next batch needs: the rest stays
                // there (spilled when the service is slow), not in this thread's memory.
                while !self.cutter.fills(&LIMITS) && self.buffer.take(&mut self.cutter) {}
                if closing && self.buffer.is_empty() {
                    self.cutter.finish();
                }
                self.shared
                    .extra
                    .store(self.cutter.extra_pieces(), Ordering::Relaxed);
                let batch = self.cutter.batch(&LIMITS);
                if batch.entries.is_empty() {
                    break;
                }
                let sent = runtime.block_on(self.put(batch));
                self.pacer.sent(Instant::now());
                if sent.is_err() {
                    return;
                }
            }
            if closing && self.buffer.is_empty() && self.cutter.is_empty() {
                self.shared.drained.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    /// `future`, unless the end's deadline passes first (also when the build ends while it
    /// runs: the end does not wait for a request started before it).
    async fn bounded<T>(&self, future: impl std::future::Future<Output = T>) -> Result<T, GaveUp> {
        let mut deadline = self.shared.deadline.subscribe();
        let mut future = std::pin::pin!(future);
        loop {
            let at = *deadline.borrow_and_update();
            if let Some(at) = at {
                return tokio::time::timeout_at(at.into(), future)
                    .await
                    .map_err(|_| GaveUp);
            }
            tokio::select! {
                output = &mut future => return Ok(output),
                changed = deadline.changed() => {
                    if changed.is_err() {
                        // The sink is gone: nobody waits for a deadline.
                        return Ok(future.await);
                    }
                }
            }
        }
    }

    async fn backoff(&self, attempt: &mut u32) -> Result<(), GaveUp> {
        let base = Duration::from_millis(100) * 2u32.saturating_pow((*attempt).min(16));
        *attempt += 1;
        let wait = base.min(MAX_BACKOFF);
        // Jitter (up to a quarter) so that agents throttled together do not retry together.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let wait = wait + wait / 4 * (nanos % 1000) / 1000;
        let wake = Instant::now() + wait;
        // A retry after the end's deadline cannot deliver anything: give up at once, also when
        // the build ends during the wait (the end does not sit out a sleep that outlasts it).
        let mut deadline = self.shared.deadline.subscribe();
        loop {
            if deadline.borrow_and_update().is_some_and(|d| wake >= d) {
                return Err(GaveUp);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => return Ok(()),
                changed = deadline.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep_until(wake.into()).await;
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn create(&self) -> Result<(), String> {
        let group = self
            .client
            .create_log_group()
            .log_group_name(&self.options.group)
            .send()
            .await;
        if let Err(e) = group {
            let e = e.into_service_error();
            if e.code() != Some("ResourceAlreadyExistsException") {
                return Err(describe("create the log group", &self.options.group, &e));
            }
        }
        let stream = self
            .client
            .create_log_stream()
            .log_group_name(&self.options.group)
            .log_stream_name(&self.options.stream)
            .send()
            .await;
        if let Err(e) = stream {
            let e = e.into_service_error();
            if e.code() != Some("ResourceAlreadyExistsException") {
                return Err(describe("create the log stream", &self.options.stream, &e));
            }
        }
        Ok(())
    }

    async fn put(&mut self, batch: Batch) -> Result<(), GaveUp> {
        let count = batch.entries.len() as u64;
        let first = batch.entries.first().map_or(0, |e| e.timestamp);
        let last = batch.entries.last().map_or(0, |e| e.timestamp);
        let events: Vec<InputLogEvent> = batch
            .entries
            .into_iter()
            .filter_map(|e| {
                InputLogEvent::builder()
                    .timestamp(e.timestamp)
                    .message(e.text)
                    .build()
                    .ok()
            })
            .collect();
        let mut attempt = 0;
        let mut token_tries = 0;
        loop {
            if !self.created {
                match self.bounded(self.create()).await? {
                    Ok(()) => self.created = true,
                    Err(e) => {
                        self.shared.error(e);
                        self.backoff(&mut attempt).await?;
                        continue;
                    }
                }
            }
            let request = self
                .client
                .put_log_events()
                .log_group_name(&self.options.group)
                .log_stream_name(&self.options.stream)
                .set_log_events(Some(events.clone()))
                .set_sequence_token(self.token.clone());
            let next = match self.bounded(request.send()).await? {
                Ok(output) => {
                    self.token = output.next_sequence_token().map(str::to_string);
                    let rejected = output
                        .rejected_log_events_info()
                        .map_or(0, |info| rejected_count(info, count));
                    if rejected > 0 {
                        self.shared.rejected.fetch_add(rejected, Ordering::Relaxed);
                        self.shared.error(format!(
                            "the service rejected {rejected} event(s) as too old or too new"
                        ));
                    }
                    self.shared
                        .delivered
                        .fetch_add(count - rejected, Ordering::Relaxed);
                    self.record(count, batch.bytes, first, last);
                    return Ok(());
                }
                Err(e) => classify(e, &self.options),
            };
            match next {
                Next::Retry(message) => {
                    self.shared.error(message);
                    self.backoff(&mut attempt).await?;
                }
                Next::Create => {
                    self.created = false;
                }
                Next::Token(token) if token_tries < 5 => {
                    token_tries += 1;
                    self.token = token;
                }
                Next::Token(_) => {
                    self.shared
                        .error("the service keeps refusing the sequence token".into());
                    self.backoff(&mut attempt).await?;
                }
                Next::Accepted(token) => {
                    // An earlier attempt arrived (its answer did not): accepted once.
                    self.token = token;
                    self.shared.delivered.fetch_add(count, Ordering::Relaxed);
                    self.record(count, batch.bytes, first, last);
                    return Ok(());
                }
                Next::Refused(message) => {
                    self.shared.rejected.fetch_add(count, Ordering::Relaxed);
                    self.shared.error(message);
                    return Ok(());
                }
            }
        }
    }

    fn record(&self, events: u64, bytes: usize, first: i64, last: i64) {
        let Some(path) = &self.options.batch_record else {
            return;
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                let accepted = super::buffer::millis(std::time::SystemTime::now());
                writeln!(f, "{events} {bytes} {first} {last} {accepted}")
            });
        if let Err(e) = written {
            self.shared
                .error(format!("cannot write {}: {e}", path.display()));
        }
    }
}

/// How many of a batch of `count` events the service rejected (too old, expired or too new).
fn rejected_count(info: &aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo, count: u64) -> u64 {
    // The "end" indexes are exclusive, the "start" index inclusive.
    let old = info
        .too_old_log_event_end_index()
        .max(info.expired_log_event_end_index())
        .map_or(0, |i| i.max(0) as u64);
    let new = info
        .too_new_log_event_start_index()
        .map_or(0, |i| count.saturating_sub(i.max(0) as u64));
    (old + new).min(count)
}

fn describe(
    action: &str,
    name: &str,
    error: &(impl ProvideErrorMetadata + std::error::Error),
) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("cannot {action} {name}: {code}: {message}"),
        (Some(code), None) => format!("cannot {action} {name}: {code}"),
        _ => format!(
            "cannot {action} {name}: {}",
            aws_sdk_cloudwatchlogs::error::DisplayErrorContext(error)
        ),
    }
}

fn classify(
    error: SdkError<PutLogEventsError, aws_sdk_cloudwatchlogs::config::http::HttpResponse>,
    options: &CloudWatchOptions,
) -> Next {
    let where_ = format!("{}:{}", options.group, options.stream);
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let e = context.into_err();
            let message = describe("send log events to", &where_, &e);
            match &e {
                PutLogEventsError::ResourceNotFoundException(_) => Next::Create,
                PutLogEventsError::InvalidSequenceTokenException(t) => {
                    Next::Token(t.expected_sequence_token().map(str::to_string))
                }
                PutLogEventsError::DataAlreadyAcceptedException(t) => {
                    Next::Accepted(t.expected_sequence_token().map(str::to_string))
                }
                PutLogEventsError::InvalidParameterException(_) => Next::Refused(message),
                _ if status == 429 || status >= 500 => Next::Retry(message),
                _ if e.code() == Some("ThrottlingException") => Next::Retry(message),
                // Credentials and permissions can be fixed while the build runs (a refreshed
                // role); everything else is retried too, until the end's deadline.
                _ => Next::Retry(message),
            }
        }
        other => Next::Retry(format!(
            "cannot send log events to {where_}: {}",
            aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_character_boundaries() {
        // `é` is two bytes: it would straddle the first cut.
        let text = format!("{}é{}", "a".repeat(9), "b".repeat(12));
        assert_eq!(split(&text, 10), vec!["aaaaaaaaa", "ébbbbbbbb", "bbbb"]);
        assert_eq!(split("", 10), vec![""]);
        assert!(split(&"x".repeat(MAX_MESSAGE * 2 + 1), MAX_MESSAGE)
            .iter()
            .all(|p| p.len() <= MAX_MESSAGE));
    }
}
