//! The worker's Prometheus metrics, written in the text exposition format 0.0.4.
//!
//! Thirteen series, two of them histograms, one label (`status`): they are plain atomics and a
//! writer of a few dozen lines, rather than a metrics crate (`prometheus-client` writes the
//! OpenMetrics format, not the 0.0.4 text the contract names, and would be one more
//! dependency for what a `fetch_add` does).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use buildagent_runner::events::BuildStatus;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of `buildagent_worker_queue_wait_seconds`: loopback pickups are tens
/// of milliseconds, a busy fleet's are minutes.
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// Upper bounds (seconds) of `buildagent_worker_build_duration_seconds`: one-command builds to
/// CodeBuild's longest timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 36000.0,
];

/// Every counter and gauge of one worker; shared by its loops and read by `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    builds: [AtomicU64; 5],
    running: AtomicI64,
    slots: AtomicI64,
    slots_free: AtomicI64,
    receive_calls: AtomicU64,
    messages_received: AtomicU64,
    messages_invalid: AtomicU64,
    duplicates_dropped: AtomicU64,
    lease_extensions: AtomicU64,
    leases_lost: AtomicU64,
    draining: AtomicI64,
    queue_wait: Histogram,
    build_duration: Histogram,
}

const STATUSES: [BuildStatus; 5] = [
    BuildStatus::Succeeded,
    BuildStatus::Failed,
    BuildStatus::Fault,
    BuildStatus::TimedOut,
    BuildStatus::Stopped,
];

impl Metrics {
    /// Metrics of a worker with `slots` build slots, all free.
    pub fn new(slots: usize) -> Metrics {
        let slots = i64::try_from(slots).unwrap_or(i64::MAX);
        Metrics {
            builds: Default::default(),
            running: AtomicI64::new(0),
            slots: AtomicI64::new(slots),
            slots_free: AtomicI64::new(slots),
            receive_calls: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            messages_invalid: AtomicU64::new(0),
            duplicates_dropped: AtomicU64::new(0),
            lease_extensions: AtomicU64::new(0),
            leases_lost: AtomicU64::new(0),
            draining: AtomicI64::new(0),
            queue_wait: Histogram::new(QUEUE_WAIT_BUCKETS),
            build_duration: Histogram::new(DURATION_BUCKETS),
        }
    }

    /// A build ended with `status` after `duration`.
    pub fn build_finished(&self, status: BuildStatus, duration: Duration) {
        let i = STATUSES.iter().position(|s| *s == status).unwrap_or(0);
        self.builds[i].fetch_add(1, Ordering::Relaxed);
        self.build_duration.observe(duration.as_secs_f64());
    }

    /// A build started (+1) or ended (-1): the running gauge.
    pub fn running_add(&self, delta: i64) {
        self.running.fetch_add(delta, Ordering::Relaxed);
    }

    /// The number of free slots now.
    pub fn set_slots_free(&self, free: usize) {
        self.slots_free
            .store(i64::try_from(free).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// One `ReceiveMessage` call.
    pub fn receive_call(&self) {
        self.receive_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was received.
    pub fn message_received(&self) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was not a valid job.
    pub fn message_invalid(&self) {
        self.messages_invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// A message whose build was finished or owned by another worker was dropped.
    pub fn duplicate_dropped(&self) {
        self.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A lease (message visibility and record heartbeat) was extended.
    pub fn lease_extended(&self) {
        self.lease_extensions.fetch_add(1, Ordering::Relaxed);
    }

    /// A lease was lost: the build was stopped.
    pub fn lease_lost(&self) {
        self.leases_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker began draining.
    pub fn set_draining(&self) {
        self.draining.store(1, Ordering::Relaxed);
    }

    /// A build was claimed `wait` after its message was sent.
    pub fn queue_waited(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let loadi = |a: &AtomicI64| a.load(Ordering::Relaxed);
        header(
            &mut out,
            "buildagent_worker_builds_total",
            "Builds this worker ended, by final status.",
            "counter",
        );
        for (status, count) in STATUSES.iter().zip(&self.builds) {
            let _ = writeln!(
                out,
                "buildagent_worker_builds_total{{status=\"{status}\"}} {}",
                load(count)
            );
        }
        let gauges = [
            (
                "buildagent_worker_builds_running",
                "Builds running now.",
                loadi(&self.running),
            ),
            (
                "buildagent_worker_slots",
                "Build slots (--slots).",
                loadi(&self.slots),
            ),
            (
                "buildagent_worker_slots_free",
                "Build slots free now.",
                loadi(&self.slots_free),
            ),
            (
                "buildagent_worker_draining",
                "1 once the worker drains (no new builds), else 0.",
                loadi(&self.draining),
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        let counters = [
            (
                "buildagent_worker_receive_calls_total",
                "ReceiveMessage calls (long polls).",
                &self.receive_calls,
            ),
            (
                "buildagent_worker_messages_received_total",
                "Messages received.",
                &self.messages_received,
            ),
            (
                "buildagent_worker_messages_invalid_total",
                "Messages that were not valid jobs (recorded FAILED and deleted).",
                &self.messages_invalid,
            ),
            (
                "buildagent_worker_duplicates_dropped_total",
                "Messages whose build was finished or owned by a live worker.",
                &self.duplicates_dropped,
            ),
            (
                "buildagent_worker_lease_extensions_total",
                "Lease extensions (message visibility and record heartbeat).",
                &self.lease_extensions,
            ),
            (
                "buildagent_worker_leases_lost_total",
                "Leases lost: builds stopped because another worker may own them.",
                &self.leases_lost,
            ),
        ];
        for (name, help, value) in counters {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", load(value));
        }
        self.queue_wait.render(
            &mut out,
            "buildagent_worker_queue_wait_seconds",
            "Time from a message's SentTimestamp to the claim of its build.",
        );
        self.build_duration.render(
            &mut out,
            "buildagent_worker_build_duration_seconds",
            "Time from the claim of a build to its final record.",
        );
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A histogram with fixed buckets (counts per bucket, not cumulative, until rendered).
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<HistogramData>,
}

#[derive(Debug, Default)]
struct HistogramData {
    /// One per bound, plus `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            inner: Mutex::new(HistogramData {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
            }),
        }
    }

    fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        let mut data = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        data.counts[i] += 1;
        data.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let data = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut cumulative = 0;
        for (i, count) in data.counts.iter().enumerate() {
            cumulative += count;
            let le = match self.bounds.get(i) {
                Some(bound) => format!("{bound}"),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}", data.sum);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let m = Metrics::new(2);
        m.build_finished(BuildStatus::Succeeded, Duration::from_millis(700));
        m.build_finished(BuildStatus::Stopped, Duration::from_secs(4000));
        m.queue_waited(Duration::from_millis(30));
        m.receive_call();
        m.set_slots_free(1);
        let text = m.render();
        for line in [
            "buildagent_worker_builds_total{status=\"SUCCEEDED\"} 1",
            "buildagent_worker_builds_total{status=\"STOPPED\"} 1",
            "buildagent_worker_builds_total{status=\"FAILED\"} 0",
            "buildagent_worker_slots 2",
            "buildagent_worker_slots_free 1",
            "buildagent_worker_receive_calls_total 1",
            "buildagent_worker_queue_wait_seconds_bucket{le=\"0.025\"} 0",
            "buildagent_worker_queue_wait_seconds_bucket{le=\"0.05\"} 1",
            "buildagent_worker_queue_wait_seconds_count 1",
            "buildagent_worker_build_duration_seconds_bucket{le=\"1\"} 1",
            "buildagent_worker_build_duration_seconds_bucket{le=\"3600\"} 1",
            "buildagent_worker_build_duration_seconds_bucket{le=\"+Inf\"} 2",
            "buildagent_worker_build_duration_seconds_sum 4000.7",
            "# TYPE buildagent_worker_draining gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
