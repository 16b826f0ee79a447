//! Whether a sink may send now, or should leave the CPUs to the build.
//!
//! Sending costs CPU on the build's machine: cutting lines, JSON, signing, TLS, and, when the
//! service runs on the same machine (moto in the tests), the service's own work. A build that
//! keeps its CPUs busy while it floods its log would pay for all of it. So while the build runs
//! and its CPUs (those the agent may run on, which the build's commands inherit) have less than
//! [`SPARE_CPUS`] idle between them (half a CPU when there is only one), measured from
//! `/proc/stat` over windows of at least [`WINDOW`], a sink sends at most one batch per flush
//! interval. The log stays live (an ordinary build's lines fit in one batch a second); the rest
//! waits in the sink's buffer (spilled to disk beyond its memory) and goes at full speed as soon
//! as a CPU is free again, or once the build has ended. Where `/proc/stat` cannot be read, a sink
//! always sends at once.

use std::time::{Duration, Instant};

/// The idle CPU time below which the build's CPUs count as busy: one CPU (half of them when
/// there is only one: a build that leaves half of it idle is not busy). Sending at full speed
/// takes about one (the sink, and a service on the same machine); with less idle, it would be
/// taken from the build.
pub const SPARE_CPUS: f64 = 1.0;

/// The shortest window the idle time is measured over (`/proc/stat` counts in 10 ms ticks).
pub const WINDOW: Duration = Duration::from_millis(100);

/// CPU time counters, in ticks, of some CPUs together, from `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Idle and waiting for I/O.
    pub idle: u64,
    /// All states.
    pub total: u64,
    /// How many CPUs.
    pub cpus: u32,
}

impl CpuTimes {
    /// Reads `/proc/stat` for the CPUs this thread may run on (its affinity, as a build's
    /// commands inherit it; all of them when it cannot be read); `None` where there is no
    /// `/proc/stat` (not Linux) or it cannot be parsed.
    pub fn read() -> Option<CpuTimes> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
        CpuTimes::parse(&text, |cpu| {
            allowed
                .as_ref()
                .is_none_or(|set| set.is_set(cpu).unwrap_or(false))
        })
    }

    /// Sums the `cpuN user nice system idle iowait irq softirq steal ...` lines of the text of
    /// `/proc/stat` for the CPUs `N` that `wanted` selects (guest time is already counted in
    /// user time); `None` when none is selected or a line cannot be parsed.
    pub fn parse(text: &str, wanted: impl Fn(usize) -> bool) -> Option<CpuTimes> {
        let mut sum = CpuTimes {
            idle: 0,
            total: 0,
            cpus: 0,
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("cpu") else {
                continue;
            };
            let Some((number, counters)) = rest.split_once(' ') else {
                continue;
            };
            // The first line (`cpu  ...`) sums all CPUs: each is counted on its own.
            let Ok(cpu) = number.parse::<usize>() else {
                continue;
            };
            if !wanted(cpu) {
                continue;
            }
            let fields: Vec<u64> = counters
                .split_whitespace()
                .take(8)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if fields.len() < 5 {
                return None;
            }
            sum.idle += fields[3] + fields[4];
            sum.total += fields.iter().sum::<u64>();
            sum.cpus += 1;
        }
        (sum.cpus > 0).then_some(sum)
    }

    /// The CPUs idle on average from `earlier` to `self` (0 to `cpus`); `None` when no tick
    /// passed.
    pub fn spare_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        if total == 0 {
            return None;
        }
        Some(idle.min(total) as f64 / total as f64 * f64::from(self.cpus))
    }
}

/// Paces a sink's batches while the build runs (see the module docs).
pub struct Pacer {
    interval: Duration,
    last_sent: Option<Instant>,
    /// The last sample, when it was taken, and the verdict of the window it ended.
    sample: Option<(Instant, CpuTimes)>,
    busy: bool,
    /// Reads the counters (`/proc/stat`; another source in tests).
    read: Box<dyn FnMut() -> Option<CpuTimes> + Send>,
}

impl Pacer {
    /// A pacer allowing one batch per `interval` while the build's CPUs are busy.
    pub fn new(interval: Duration) -> Pacer {
        Pacer::with_source(interval, CpuTimes::read)
    }

    /// The same, with the counters read by `read`.
    pub fn with_source(
        interval: Duration,
        read: impl FnMut() -> Option<CpuTimes> + Send + 'static,
    ) -> Pacer {
        Pacer {
            interval,
            last_sent: None,
            sample: None,
            busy: true,
            read: Box::new(read),
        }
    }

    /// Whether the build's CPUs had less than [`SPARE_CPUS`] idle over the last window (sampled
    /// again when the last sample is [`WINDOW`] old). Busy until the first window is measured:
    /// a build flooding its log from its first moment is not sent at full speed for a window.
    pub fn busy(&mut self, now: Instant) -> bool {
        let due = self
            .sample
            .is_none_or(|(at, _)| now.duration_since(at) >= WINDOW);
        if due {
            match (self.read)() {
                Some(times) => {
                    if let Some((_, earlier)) = self.sample {
                        if let Some(spare) = times.spare_since(&earlier) {
                            let threshold = SPARE_CPUS.min(f64::from(times.cpus) / 2.0);
                            self.busy = spare < threshold;
                        }
                    }
                    self.sample = Some((now, times));
                }
                None => self.busy = false,
            }
        }
        self.busy
    }

    /// How long the next batch should wait: nothing when the build's CPUs have time to spare or
    /// an interval has passed since the last batch; else until the interval is over, at most one
    /// [`WINDOW`] (a CPU may have become idle by then).
    pub fn hold(&mut self, now: Instant) -> Duration {
        let Some(last) = self.last_sent else {
            return Duration::ZERO;
        };
        let due = last + self.interval;
        if now >= due || !self.busy(now) {
            return Duration::ZERO;
        }
        (due - now).min(WINDOW)
    }

    /// A batch went out (or was given up) at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn sums_the_lines_of_the_cpus_wanted() {
        let text = "cpu  3900663 299623 626445 1226523 59121 0 11660 3163 0 0\n\
                    cpu0 1930997 152395 300181 659961 15666 0 1055 1570 0 0\n\
                    cpu1 1969666 147228 326264 566562 43455 0 10605 1593 0 0\n\
                    intr 1 2 3\nctxt 99\n";
        let all = CpuTimes::parse(text, |_| true).unwrap();
        assert_eq!(all.idle, 1226523 + 59121);
        assert_eq!(
            all.total,
            3900663 + 299623 + 626445 + 1226523 + 59121 + 11660 + 3163
        );
        assert_eq!(all.cpus, 2);
        let second = CpuTimes::parse(text, |cpu| cpu == 1).unwrap();
        assert_eq!(second.idle, 566562 + 43455);
        assert_eq!(second.cpus, 1);
        assert_eq!(CpuTimes::parse(text, |cpu| cpu > 1), None);
        assert_eq!(CpuTimes::parse("intr 1 2\n", |_| true), None);
        assert_eq!(CpuTimes::parse("cpu0 1 2 x 4 5\n", |_| true), None);
    }

    #[test]
    fn spare_cpus_are_the_idle_share_of_all_cpus() {
        let a = CpuTimes {
            idle: 100,
            total: 1000,
            cpus: 4,
        };
        let b = CpuTimes {
            idle: 150,
            total: 1400,
            cpus: 4,
        };
        // 50 of 400 ticks idle on 4 CPUs: half a CPU.
        assert_eq!(b.spare_since(&a), Some(0.5));
        assert_eq!(a.spare_since(&a), None);
        assert_eq!(a.spare_since(&b), None);
    }

    /// Counters a test advances by hand, for `cpus` CPUs.
    struct Counters {
        idle: Arc<AtomicU64>,
        total: Arc<AtomicU64>,
    }

    impl Counters {
        /// The counters, and a pacer (one batch a second) reading them.
        fn pacer(cpus: u32) -> (Counters, Pacer) {
            let (idle, total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let read = {
                let (idle, total) = (idle.clone(), total.clone());
                move || {
                    Some(CpuTimes {
                        idle: idle.load(Ordering::SeqCst),
                        total: total.load(Ordering::SeqCst),
                        cpus,
                    })
                }
            };
            let pacer = Pacer::with_source(Duration::from_secs(1), read);
            (Counters { idle, total }, pacer)
        }

        /// `idle` of `total` more ticks passed.
        fn add(&self, idle: u64, total: u64) {
            self.idle.fetch_add(idle, Ordering::SeqCst);
            self.total.fetch_add(total, Ordering::SeqCst);
        }
    }

    #[test]
    fn holds_batches_only_while_the_cpus_are_busy() {
        let (counters, mut pacer) = Counters::pacer(2);
        let t0 = Instant::now();
        // The first batch goes at once; the next one waits for a window to be measured.
        assert_eq!(pacer.hold(t0), Duration::ZERO);
        pacer.sent(t0);
        assert_eq!(pacer.hold(t0), WINDOW);
        // A busy window (40 of 200 ticks idle on 2 CPUs: 0.4 of a CPU): one batch a second.
        counters.add(40, 200);
        let t1 = t0 + WINDOW;
        assert_eq!(pacer.hold(t1), WINDOW);
        let t2 = t0 + Duration::from_millis(950);
        assert_eq!(pacer.hold(t2), Duration::from_millis(50));
        assert_eq!(pacer.hold(t0 + Duration::from_secs(1)), Duration::ZERO);
        pacer.sent(t0 + Duration::from_secs(1));
        // An idle window (150 of 200 ticks: 1.5 CPUs): at once again.
        counters.add(150, 200);
        let t3 = t0 + Duration::from_millis(1100);
        assert_eq!(pacer.hold(t3), Duration::ZERO);
    }

    #[test]
    fn on_one_cpu_half_of_it_idle_is_not_busy() {
        let (counters, mut pacer) = Counters::pacer(1);
        let t0 = Instant::now();
        assert!(pacer.busy(t0), "busy until a window is measured");
        // Six tenths idle: not busy (the threshold is half of the one CPU); one tenth: busy.
        counters.add(6, 10);
        assert!(!pacer.busy(t0 + WINDOW));
        counters.add(1, 10);
        assert!(pacer.busy(t0 + 2 * WINDOW));
    }

    #[test]
    fn without_counters_nothing_is_held() {
        let mut pacer = Pacer::with_source(Duration::from_secs(1), || None);
        let t0 = Instant::now();
        pacer.sent(t0);
        assert_eq!(pacer.hold(t0 + WINDOW), Duration::ZERO);
        assert!(!pacer.busy(t0 + 2 * WINDOW));
    }
}
