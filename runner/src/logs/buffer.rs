//! The queue between the build and a slow consumer: bounded in memory, spilling to a local file.
//!
//! [`LogBuffer::push`] never waits for the consumer: lines go to memory up to a budget, then to
//! a spill file (appended, read back in order once memory has drained), so a service that is slow
//! or down costs disk, not the build's time or the agent's memory. The consumer takes
//! [`Batch`]es cut to a service's limits ([`BatchLimits`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::format::LogLine;

/// One queued line: its time in milliseconds since the Unix epoch (never earlier than the line
/// before it) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The text.
    pub text: String,
}

/// How a batch is cut: at most `max_events` entries, at most `max_bytes` counting
/// `overhead_per_event` per entry, first and last entry at most `max_span_ms` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Entries per batch.
    pub max_events: usize,
    /// Bytes per batch (texts plus the overhead).
    pub max_bytes: usize,
    /// Bytes counted per entry on top of its text.
    pub overhead_per_event: usize,
    /// The largest distance in milliseconds between a batch's first and last timestamp.
    pub max_span_ms: i64,
}

/// Entries taken for one request, in order.
#[derive(Debug, Default)]
pub struct Batch {
    /// The entries.
    pub entries: Vec<Entry>,
    /// Their size as [`BatchLimits`] counts it.
    pub bytes: usize,
}

/// Counts of what went through a buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Entries pushed.
    pub pushed: u64,
    /// Entries written to the spill file.
    pub spilled: u64,
    /// Entries lost because the spill file could not be written.
    pub lost: u64,
    /// Entries waiting (in memory or spilled).
    pub waiting: u64,
}

struct Spill {
    writer: BufWriter<File>,
    reader: File,
    /// Where the next entry to read starts.
    read: u64,
    /// Entries in the file not read yet.
    entries: u64,
    bytes: u64,
}

struct State {
    memory: VecDeque<Entry>,
    memory_bytes: usize,
    spill: Option<Spill>,
    spill_error: Option<String>,
    last_timestamp: i64,
    closed: bool,
    stats: BufferStats,
    /// Whether the consumer was woken for the waiting bytes (cleared when it takes).
    woken: bool,
}

/// A bounded, spilling queue of log lines with one producer side and one consumer side.
pub struct LogBuffer {
    state: Mutex<State>,
    ready: Condvar,
    memory_limit: usize,
    wake_at: usize,
    spill_dir: std::path::PathBuf,
}

/// Bytes an entry is counted for in memory (its text and the bookkeeping around it).
fn footprint(entry: &Entry) -> usize {
    entry.text.len() + std::mem::size_of::<Entry>()
}

impl LogBuffer {
    /// A buffer keeping up to `memory_limit` bytes in memory and the rest in a file created in
    /// `spill_dir` when needed; the consumer is woken when `wake_at` bytes wait.
    pub fn new(memory_limit: usize, wake_at: usize, spill_dir: &Path) -> LogBuffer {
        LogBuffer {
            state: Mutex::new(State {
                memory: VecDeque::new(),
                memory_bytes: 0,
                spill: None,
                spill_error: None,
                last_timestamp: 0,
                closed: false,
                stats: BufferStats::default(),
                woken: false,
            }),
            ready: Condvar::new(),
            memory_limit,
            wake_at,
            spill_dir: spill_dir.to_path_buf(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `lines` in order; never waits for the consumer. Timestamps are kept in order: a
    /// line stamped earlier than the one before it (a clock set back) takes that one's time.
    pub fn push(&self, lines: &[LogLine]) {
        self.push_entries(lines.iter().map(|l| Entry {
            timestamp: millis(l.at),
            text: l.text.clone(),
        }));
    }

    /// Queues entries in order (see [`LogBuffer::push`]).
    pub fn push_entries(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        for mut entry in entries {
            entry.timestamp = entry.timestamp.max(state.last_timestamp);
            state.last_timestamp = entry.timestamp;
            state.stats.pushed += 1;
            // Order: once something is spilled, everything after it goes to the file too until
            // the file has been read back.
            let spilling = state.spill.as_ref().is_some_and(|s| s.entries > 0);
            if !spilling && state.memory_bytes + footprint(&entry) <= self.memory_limit {
                state.memory_bytes += footprint(&entry);
                state.memory.push_back(entry);
            } else {
                self.spill(&mut state, &entry);
            }
        }
        if !state.woken && waiting_bytes(&state) >= self.wake_at as u64 {
            state.woken = true;
            self.ready.notify_all();
        }
    }

    fn spill(&self, state: &mut State, entry: &Entry) {
        if state.spill.is_none() && state.spill_error.is_none() {
            match open_spill(&self.spill_dir) {
                Ok(spill) => state.spill = Some(spill),
                Err(e) => {
                    state.spill_error = Some(format!(
                        "cannot create a spill file in {}: {e}",
                        self.spill_dir.display()
                    ))
                }
            }
        }
        let Some(spill) = state.spill.as_mut() else {
            state.stats.lost += 1;
            return;
        };
        let mut record = Vec::with_capacity(12 + entry.text.len());
        record.extend_from_slice(&entry.timestamp.to_le_bytes());
        record.extend_from_slice(&(entry.text.len() as u32).to_le_bytes());
        record.extend_from_slice(entry.text.as_bytes());
        match spill.writer.write_all(&record) {
            Ok(()) => {
                spill.entries += 1;
                spill.bytes += entry.text.len() as u64;
                state.stats.spilled += 1;
            }
            Err(e) => {
                state.stats.lost += 1;
                state.spill_error = Some(format!("cannot write the spill file: {e}"));
            }
        }
    }

    /// Ends the producer side: later pushes are ignored, and the consumer is woken.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.ready.notify_all();
    }

    /// Wakes a consumer waiting in [`LogBuffer::wait`] (the end of the build was asked for).
    pub fn wake(&self) {
        let _state = self.lock();
        self.ready.notify_all();
    }

    /// Whether [`LogBuffer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until `wake_at` bytes wait, the buffer is closed, [`LogBuffer::wake`] is called or
    /// `until` passes.
    pub fn wait(&self, until: Instant) {
        let mut state = self.lock();
        loop {
            if state.closed || waiting_bytes(&state) >= self.wake_at as u64 {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            let (next, timeout) = self
                .ready
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            if !timeout.timed_out() {
                // Woken: by data, close or wake().
                return;
            }
        }
    }

    /// Sleeps for `duration` unless woken earlier (by close or [`LogBuffer::wake`]).
    pub fn sleep(&self, duration: Duration) {
        let state = self.lock();
        let _ = self.ready.wait_timeout(state, duration);
    }

    /// Takes the next batch within `limits` (empty when nothing waits). An entry too large for
    /// any batch on its own is taken alone: callers split lines beforehand.
    pub fn take(&self, limits: &BatchLimits) -> Batch {
        let mut state = self.lock();
        state.woken = false;
        let mut batch = Batch::default();
        let fits = |batch: &Batch, entry_len: usize, timestamp: i64| {
            let first = batch.entries.first().map_or(timestamp, |e| e.timestamp);
            batch.entries.is_empty()
                || (batch.entries.len() < limits.max_events
                    && batch.bytes + entry_len + limits.overhead_per_event <= limits.max_bytes
                    && timestamp - first <= limits.max_span_ms)
        };
        while let Some(entry) = state.memory.front() {
            if !fits(&batch, entry.text.len(), entry.timestamp) {
                return batch;
            }
            let entry = state.memory.pop_front().expect("a front entry");
            state.memory_bytes -= footprint(&entry);
            batch.bytes += entry.text.len() + limits.overhead_per_event;
            batch.entries.push(entry);
        }
        // Memory is empty: continue from the file, in the order the entries were spilled.
        let mut error = None;
        if let Some(spill) = state.spill.as_mut() {
            if spill.entries > 0 {
                if let Err(e) = spill.writer.flush() {
                    error = Some(format!("cannot write the spill file: {e}"));
                }
            }
            while spill.entries > 0 {
                let mut head = [0u8; 12];
                if let Err(e) = spill.reader.read_exact_at(&mut head, spill.read) {
                    error = Some(format!("cannot read the spill file: {e}"));
                    break;
                }
                let timestamp = i64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
                let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
                if !fits(&batch, len, timestamp) {
                    break;
                }
                let mut text = vec![0u8; len];
                if let Err(e) = spill.reader.read_exact_at(&mut text, spill.read + 12) {
                    error = Some(format!("cannot read the spill file: {e}"));
                    break;
                }
                spill.read += 12 + len as u64;
                spill.entries -= 1;
                spill.bytes -= len as u64;
                batch.bytes += len + limits.overhead_per_event;
                batch.entries.push(Entry {
                    timestamp,
                    // Written from a String: valid UTF-8.
                    text: String::from_utf8_lossy(&text).into_owned(),
                });
            }
            if spill.entries == 0 && spill.read > 0 {
                // Drained: start the file over so it does not grow for the whole build.
                if spill.writer.flush().is_ok() && spill.writer.get_ref().set_len(0).is_ok() {
                    use std::io::Seek;
                    let _ = spill.writer.get_mut().seek(io::SeekFrom::Start(0));
                    spill.read = 0;
                }
            }
        }
        if let Some(e) = error {
            // The rest of the file cannot be read back: those entries are lost, not retried
            // forever.
            if let Some(spill) = state.spill.take() {
                state.stats.lost += spill.entries;
            }
            state.spill_error = Some(e);
        }
        batch
    }

    /// What went through the buffer so far.
    pub fn stats(&self) -> BufferStats {
        let state = self.lock();
        let mut stats = state.stats;
        stats.waiting = state.memory.len() as u64 + state.spill.as_ref().map_or(0, |s| s.entries);
        stats
    }

    /// Why spilling failed, if it did.
    pub fn spill_error(&self) -> Option<String> {
        self.lock().spill_error.clone()
    }
}

fn waiting_bytes(state: &State) -> u64 {
    state.memory_bytes as u64 + state.spill.as_ref().map_or(0, |s| s.bytes)
}

fn open_spill(dir: &Path) -> io::Result<Spill> {
    // Removed at once: the open handles keep it until the buffer goes.
    let file = tempfile::tempfile_in(dir)?;
    let reader = file.try_clone()?;
    Ok(Spill {
        writer: BufWriter::with_capacity(64 * 1024, file),
        reader,
        read: 0,
        entries: 0,
        bytes: 0,
    })
}

/// Milliseconds since the Unix epoch (0 for earlier times).
pub fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CWL: BatchLimits = BatchLimits {
        max_events: 10_000,
        max_bytes: 1_048_576,
        overhead_per_event: 26,
        max_span_ms: 24 * 3600 * 1000 - 1,
    };

    fn entry(timestamp: i64, text: &str) -> Entry {
        Entry {
            timestamp,
            text: text.to_string(),
        }
    }

    fn drain(buffer: &LogBuffer, limits: &BatchLimits) -> Vec<Batch> {
        let mut batches = Vec::new();
        loop {
            let batch = buffer.take(limits);
            if batch.entries.is_empty() {
                return batches;
            }
            batches.push(batch);
        }
    }

    #[test]
    fn batches_stay_within_the_count_and_size_limits_and_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        // A small memory budget: most entries go through the spill file.
        let buffer = LogBuffer::new(64 * 1024, 1, dir.path());
        let short: Vec<Entry> = (0..25_000)
            .map(|i| entry(1000 + i, &format!("line {i}\n")))
            .collect();
        buffer.push_entries(short);
        let long = "x".repeat(200_000);
        buffer.push_entries((0..12).map(|i| entry(50_000 + i, &long)));
        let stats = buffer.stats();
        assert_eq!(stats.pushed, 25_012);
        assert!(stats.spilled > 20_000, "{stats:?}");
        let batches = drain(&buffer, &CWL);
        let mut seen = 0;
        let mut last = 0;
        for b in &batches {
            assert!(b.entries.len() <= 10_000);
            let bytes: usize = b.entries.iter().map(|e| e.text.len() + 26).sum();
            assert_eq!(bytes, b.bytes);
            assert!(bytes <= 1_048_576, "{bytes}");
            for e in &b.entries {
                assert!(e.timestamp >= last);
                last = e.timestamp;
                if seen < 25_000 {
                    assert_eq!(e.text, format!("line {seen}\n"));
                } else {
                    assert_eq!(e.text, long);
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 25_012);
        // 25,000 short ones: 10,000 + 10,000 + 5,000 (with 2 long ones), then 5 long per MiB.
        assert_eq!(batches[0].entries.len(), 10_000);
        assert_eq!(buffer.stats().waiting, 0);
    }

    #[test]
    fn a_batch_never_spans_more_than_its_window_and_time_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new(1 << 20, 1, dir.path());
        let day = 24 * 3600 * 1000;
        buffer.push_entries([
            entry(10, "a"),
            entry(5, "clock set back"),
            entry(10 + day - 1, "b"),
            entry(10 + day, "c"),
        ]);
        let batches = drain(&buffer, &CWL);
        let got: Vec<Vec<i64>> = batches
            .iter()
            .map(|b| b.entries.iter().map(|e| e.timestamp).collect())
            .collect();
        assert_eq!(got, vec![vec![10, 10, 10 + day - 1], vec![10 + day]]);
    }

    #[test]
    fn memory_and_spill_keep_one_order_across_refills() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new(10 * (5 + std::mem::size_of::<Entry>()), 1, dir.path());
        let limits = BatchLimits {
            max_events: 7,
            ..CWL
        };
        let mut next = 0;
        let mut taken = Vec::new();
        for round in 0..20 {
            buffer.push_entries((0..(round % 9 + 1)).map(|_| {
                next += 1;
                entry(next, &format!("{next:04}"))
            }));
            taken.extend(buffer.take(&limits).entries);
        }
        taken.extend(drain(&buffer, &limits).into_iter().flat_map(|b| b.entries));
        let texts: Vec<String> = taken.iter().map(|e| e.text.clone()).collect();
        let expected: Vec<String> = (1..=next).map(|i| format!("{i:04}")).collect();
        assert_eq!(texts, expected);
    }
}
