//! The queue between the build and a slow consumer: bounded in memory, spilling to a local file.
//!
//! The build's side is as cheap as it can be: [`LogBuffer::push`] appends a chunk of the log
//! (many lines, as read from a command's output) with the time it was read, and never waits for
//! the consumer. Chunks go to memory up to a budget, then to a spill file (appended, read back in
//! order once memory has drained), so a service that is slow or down costs disk, not the build's
//! time or the agent's memory. Everything per line (cutting, timestamps, text, batches) happens
//! on the consumer's thread: it takes chunks ([`LogBuffer::take`]), cuts them into lines with a
//! [`LineCutter`] and batches them to a service's limits ([`LineCutter::batch`], [`BatchLimits`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of a record's header: the time (`i64`) and the length (`u32`), little-endian.
const HEADER: usize = 12;

/// The size of a block of records in memory, and of one read of the spill file.
const BLOCK: usize = 1 << 20;

/// One line (or, for a line over a service's limit, one piece of it): its time in milliseconds
/// since the Unix epoch (never earlier than the line before it) and its text.
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

/// Counts of what went through a buffer, in lines (newlines, and an unfinished last line once
/// the buffer is closed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Lines pushed.
    pub pushed: u64,
    /// Lines written to the spill file.
    pub spilled: u64,
    /// Lines lost because the spill file could not be written or read back.
    pub lost: u64,
    /// Bytes waiting (in memory or spilled).
    pub waiting_bytes: u64,
}

struct Spill {
    writer: BufWriter<File>,
    /// The same file, for the consumer's positioned reads.
    reader: Arc<File>,
    /// Bytes appended (some may still be in the writer's buffer).
    written: u64,
    /// Where the next record to read starts.
    read: u64,
    /// Lines in the records not read yet.
    lines: u64,
}

impl Spill {
    fn unread(&self) -> u64 {
        self.written - self.read
    }
}

struct State {
    /// Blocks of records, oldest first; only the last one grows.
    memory: VecDeque<Vec<u8>>,
    memory_bytes: usize,
    /// Emptied blocks, kept for reuse (at most a few).
    spare: Vec<Vec<u8>>,
    spill: Option<Spill>,
    spill_error: Option<String>,
    /// Whether the last byte pushed ended a line (true before the first).
    at_line_start: bool,
    closed: bool,
    stats: BufferStats,
    /// Whether the consumer was woken for the waiting bytes (cleared when it takes).
    woken: bool,
}

impl State {
    fn waiting_bytes(&self) -> u64 {
        self.memory_bytes as u64 + self.spill.as_ref().map_or(0, Spill::unread)
    }
}

/// A bounded, spilling queue of log chunks with one producer side and one consumer side.
pub struct LogBuffer {
    state: Mutex<State>,
    ready: Condvar,
    memory_limit: usize,
    wake_at: usize,
    spill_dir: std::path::PathBuf,
}

impl LogBuffer {
    /// A buffer keeping up to `memory_limit` bytes in memory and the rest in a file created in
    /// `spill_dir` when needed; the consumer is woken when `wake_at` bytes wait.
    pub fn new(memory_limit: usize, wake_at: usize, spill_dir: &Path) -> LogBuffer {
        LogBuffer {
            state: Mutex::new(State {
                memory: VecDeque::new(),
                memory_bytes: 0,
                spare: Vec::new(),
                spill: None,
                spill_error: None,
                at_line_start: true,
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

    /// Queues `bytes` of the log, read at `timestamp` (milliseconds since the Unix epoch); never
    /// waits for the consumer. The bytes need not be whole lines: a line takes the time of the
    /// chunk its first byte came in.
    pub fn push(&self, timestamp: i64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // Counted before the lock.
        let lines = newlines(bytes);
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.stats.pushed += lines;
        state.at_line_start = bytes.ends_with(b"\n");
        let size = HEADER + bytes.len();
        // Order: once something is spilled, everything after it goes to the file too until the
        // file has been read back.
        let spilling = state.spill.as_ref().is_some_and(|s| s.unread() > 0);
        if !spilling && state.memory_bytes + size <= self.memory_limit {
            state.memory_bytes += size;
            let room = state
                .memory
                .back()
                .is_some_and(|b| b.capacity() - b.len() >= size);
            if !room {
                let mut block = state.spare.pop().unwrap_or_default();
                block.reserve(size.max(BLOCK));
                state.memory.push_back(block);
            }
            let block = state.memory.back_mut().expect("a block");
            block.extend_from_slice(&timestamp.to_le_bytes());
            block.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            block.extend_from_slice(bytes);
        } else {
            self.spill(&mut state, timestamp, bytes, lines);
        }
        if !state.woken && state.waiting_bytes() >= self.wake_at as u64 {
            state.woken = true;
            self.ready.notify_all();
        }
    }

    fn spill(&self, state: &mut State, timestamp: i64, bytes: &[u8], lines: u64) {
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
            state.stats.lost += lines;
            return;
        };
        let mut head = [0u8; HEADER];
        head[..8].copy_from_slice(&timestamp.to_le_bytes());
        head[8..].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        let written = spill
            .writer
            .write_all(&head)
            .and_then(|()| spill.writer.write_all(bytes));
        match written {
            Ok(()) => {
                spill.written += (HEADER + bytes.len()) as u64;
                spill.lines += lines;
                state.stats.spilled += lines;
            }
            Err(e) => {
                // The file's end is unknown now: what it holds cannot be read back either.
                let spill = state.spill.take().expect("a spill file");
                state.stats.lost += lines + spill.lines;
                state.spill_error = Some(format!("cannot write the spill file: {e}"));
            }
        }
    }

    /// Ends the producer side: later pushes are ignored, and the consumer is woken.
    pub fn close(&self) {
        let mut state = self.lock();
        if !state.closed && !state.at_line_start {
            // The log's last line, unfinished.
            state.stats.pushed += 1;
        }
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

    /// Whether nothing waits (in memory or in the spill file).
    pub fn is_empty(&self) -> bool {
        self.lock().waiting_bytes() == 0
    }

    /// Waits until `wake_at` bytes wait, the buffer is closed, [`LogBuffer::wake`] is called or
    /// `until` passes.
    pub fn wait(&self, until: Instant) {
        let mut state = self.lock();
        loop {
            if state.closed || state.waiting_bytes() >= self.wake_at as u64 {
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

    /// Takes the oldest chunks waiting (about a block, 1 MiB) and gives them to `cutter`, in
    /// order; false when nothing waited.
    pub fn take(&self, cutter: &mut LineCutter) -> bool {
        let mut state = self.lock();
        state.woken = false;
        if let Some(block) = state.memory.pop_front() {
            state.memory_bytes -= block.len();
            drop(state);
            for_each_record(&block, |timestamp, bytes| cutter.push(timestamp, bytes));
            let mut block = block;
            block.clear();
            let mut state = self.lock();
            if state.spare.len() < 2 {
                state.spare.push(block);
            }
            return true;
        }
        // Memory is empty: continue from the file, in the order the chunks were spilled.
        let Some(spill) = state.spill.as_mut() else {
            return false;
        };
        if spill.unread() == 0 {
            return false;
        }
        if let Err(e) = spill.writer.flush() {
            let spill = state.spill.take().expect("a spill file");
            state.stats.lost += spill.lines;
            state.spill_error = Some(format!("cannot write the spill file: {e}"));
            return false;
        }
        let (reader, from, unread) = (spill.reader.clone(), spill.read, spill.unread());
        // Read without the lock: the build keeps appending meanwhile.
        drop(state);
        let read = read_records(&reader, from, unread);
        let mut state = self.lock();
        let Some(spill) = state.spill.as_mut() else {
            // Writing failed meanwhile: the file's lines were counted lost.
            return false;
        };
        match read {
            Ok(records) => {
                spill.read += records.len() as u64;
                let mut lines = 0;
                for_each_record(&records, |timestamp, bytes| {
                    lines += newlines(bytes);
                    cutter.push(timestamp, bytes);
                });
                spill.lines -= lines.min(spill.lines);
                if spill.unread() == 0 {
                    // Drained: start the file over so it does not grow for the whole build.
                    if spill.writer.get_ref().set_len(0).is_ok() {
                        use std::io::Seek;
                        if spill.writer.get_mut().seek(io::SeekFrom::Start(0)).is_ok() {
                            spill.read = 0;
                            spill.written = 0;
                        }
                    }
                }
                true
            }
            Err(e) => {
                // The rest of the file cannot be read back: those lines are lost, not retried
                // forever.
                let spill = state.spill.take().expect("a spill file");
                state.stats.lost += spill.lines;
                state.spill_error = Some(format!("cannot read the spill file: {e}"));
                false
            }
        }
    }

    /// What went through the buffer so far.
    pub fn stats(&self) -> BufferStats {
        let state = self.lock();
        let mut stats = state.stats;
        stats.waiting_bytes = state.waiting_bytes();
        stats
    }

    /// Why spilling failed, if it did.
    pub fn spill_error(&self) -> Option<String> {
        self.lock().spill_error.clone()
    }
}

/// Whole records from `from`: about a block, at least one record (`unread` bytes are there).
fn read_records(file: &File, from: u64, unread: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; unread.min(BLOCK as u64) as usize];
    file.read_exact_at(&mut bytes, from)?;
    let mut end = 0;
    while end + HEADER <= bytes.len() {
        let len = record_len(&bytes[end..]);
        if end + HEADER + len > bytes.len() {
            break;
        }
        end += HEADER + len;
    }
    if end == 0 {
        // One record larger than a block.
        let len = record_len(&bytes);
        bytes.resize(HEADER + len, 0);
        file.read_exact_at(&mut bytes[BLOCK..], from + BLOCK as u64)?;
        end = bytes.len();
    }
    bytes.truncate(end);
    Ok(bytes)
}

/// The newlines in `bytes`. Counted in runs of 255 bytes into a `u8`, which the compiler turns
/// into byte-wide vector compares (a plain `filter().count()` into a `usize` does not
/// vectorise as well: it was the build thread's largest cost in the sink's profile).
fn newlines(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|run| u64::from(run.iter().map(|&b| u8::from(b == b'\n')).sum::<u8>()))
        .sum()
}

fn record_len(record: &[u8]) -> usize {
    u32::from_le_bytes(record[8..HEADER].try_into().expect("4 bytes")) as usize
}

fn for_each_record(mut records: &[u8], mut each: impl FnMut(i64, &[u8])) {
    while records.len() >= HEADER {
        let timestamp = i64::from_le_bytes(records[..8].try_into().expect("8 bytes"));
        let len = record_len(records);
        each(timestamp, &records[HEADER..HEADER + len]);
        records = &records[HEADER + len..];
    }
}

fn open_spill(dir: &Path) -> io::Result<Spill> {
    // Removed at once: the open handles keep it until the buffer goes.
    let file = tempfile::tempfile_in(dir)?;
    let reader = Arc::new(file.try_clone()?);
    Ok(Spill {
        // Chunks of output (up to 64 KiB) are gathered into writes of a block.
        writer: BufWriter::with_capacity(BLOCK, file),
        reader,
        written: 0,
        read: 0,
        lines: 0,
    })
}

/// Cuts chunks of the log into lines on the consumer's side: each line with the time of the
/// chunk its first byte came in (kept in order: a time earlier than the line before, a clock set
/// back, takes that line's time), invalid UTF-8 replaced by U+FFFD, and lines longer than
/// `max_line` bytes cut into pieces at character boundaries (one event each).
#[derive(Debug)]
pub struct LineCutter {
    max_line: usize,
    partial: Vec<u8>,
    partial_at: i64,
    last: i64,
    lines: VecDeque<Entry>,
    /// Bytes of `lines`' texts.
    bytes: usize,
    /// Whole lines cut so far (a line cut into pieces counts once).
    cut: u64,
    /// Pieces beyond the first of the lines cut into pieces.
    extra: u64,
}

impl LineCutter {
    /// A cutter at the start of a log; `max_line` is the longest text of one entry.
    pub fn new(max_line: usize) -> LineCutter {
        LineCutter {
            max_line,
            partial: Vec::new(),
            partial_at: 0,
            last: 0,
            lines: VecDeque::new(),
            bytes: 0,
            cut: 0,
            extra: 0,
        }
    }

    /// Adds the chunk `bytes`, read at `timestamp`.
    pub fn push(&mut self, timestamp: i64, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(end + 1);
            if self.partial.is_empty() {
                self.line(timestamp, line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(self.partial_at, &whole);
                whole.clear();
                self.partial = whole;
            }
            bytes = rest;
        }
        if !bytes.is_empty() {
            if self.partial.is_empty() {
                self.partial_at = timestamp;
            }
            self.partial.extend_from_slice(bytes);
        }
    }

    /// The end of the log: its unfinished last line becomes a line.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            self.line(self.partial_at, &partial);
        }
    }

    fn line(&mut self, timestamp: i64, line: &[u8]) {
        let timestamp = timestamp.max(self.last);
        self.last = timestamp;
        self.cut += 1;
        let text = String::from_utf8_lossy(line);
        if text.len() <= self.max_line {
            self.bytes += text.len();
            self.lines.push_back(Entry {
                timestamp,
                text: text.into_owned(),
            });
            return;
        }
        let pieces = split(&text, self.max_line);
        self.extra += pieces.len() as u64 - 1;
        for piece in pieces {
            self.bytes += piece.len();
            self.lines.push_back(Entry {
                timestamp,
                text: piece.to_string(),
            });
        }
    }

    /// The next entry cut, if any.
    pub fn pop(&mut self) -> Option<Entry> {
        let entry = self.lines.pop_front()?;
        self.bytes -= entry.text.len();
        Some(entry)
    }

    /// The entries cut and not taken yet.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no entry waits.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Whether the entries waiting fill a batch within `limits` (more would not fit in it).
    pub fn fills(&self, limits: &BatchLimits) -> bool {
        let span = match (self.lines.front(), self.lines.back()) {
            (Some(first), Some(last)) => last.timestamp - first.timestamp,
            _ => 0,
        };
        self.lines.len() >= limits.max_events
            || self.bytes + self.lines.len() * limits.overhead_per_event >= limits.max_bytes
            || span > limits.max_span_ms
    }

    /// Takes the next batch within `limits` from the entries waiting (empty when none wait).
    /// An entry too large for any batch on its own is taken alone.
    pub fn batch(&mut self, limits: &BatchLimits) -> Batch {
        let mut batch = Batch::default();
        while let Some(entry) = self.lines.front() {
            let fits = match batch.entries.first() {
                None => true,
                Some(first) => {
                    batch.entries.len() < limits.max_events
                        && batch.bytes + entry.text.len() + limits.overhead_per_event
                            <= limits.max_bytes
                        && entry.timestamp - first.timestamp <= limits.max_span_ms
                }
            };
            if !fits {
                break;
            }
            let entry = self.pop().expect("a front entry");
            batch.bytes += entry.text.len() + limits.overhead_per_event;
            batch.entries.push(entry);
        }
        batch
    }

    /// Whole lines cut so far.
    pub fn lines_cut(&self) -> u64 {
        self.cut
    }

    /// Entries beyond one per line (the pieces of long lines).
    pub fn extra_pieces(&self) -> u64 {
        self.extra
    }
}

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
pub fn split(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut end = max;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    pieces
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

    /// Every batch the buffer's content makes, as a consumer takes them.
    fn drain(buffer: &LogBuffer, cutter: &mut LineCutter, limits: &BatchLimits) -> Vec<Batch> {
        let mut batches = Vec::new();
        loop {
            while !cutter.fills(limits) && buffer.take(cutter) {}
            if buffer.is_closed() && buffer.is_empty() {
                cutter.finish();
            }
            let batch = cutter.batch(limits);
            if batch.entries.is_empty() {
                return batches;
            }
            batches.push(batch);
        }
    }

    #[test]
    fn batches_stay_within_the_count_and_size_limits_and_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        // A small memory budget: most chunks go through the spill file.
        let buffer = LogBuffer::new(64 * 1024, 1, dir.path());
        let mut chunk = String::new();
        for i in 0..25_000 {
            chunk.push_str(&format!("line {i}\n"));
            if i % 1000 == 999 {
                buffer.push(1000 + i, chunk.as_bytes());
                chunk.clear();
            }
        }
        let long = "x".repeat(200_000);
        for i in 0..12 {
            buffer.push(50_000 + i, long.as_bytes());
            buffer.push(50_000 + i, b"\n");
        }
        buffer.close();
        let stats = buffer.stats();
        assert_eq!(stats.pushed, 25_012);
        assert!(stats.spilled > 15_000, "{stats:?}");
        let mut cutter = LineCutter::new(256 * 1024 - 26);
        let batches = drain(&buffer, &mut cutter, &CWL);
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
                    assert_eq!(e.text, format!("{long}\n"));
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 25_012);
        assert_eq!(cutter.lines_cut(), 25_012);
        // 25,000 short ones: 10,000 + 10,000 + 5,000 (37 bytes each as counted) with 4 long
        // ones (200,027 each), then 5 long per MiB.
        assert_eq!(batches[0].entries.len(), 10_000);
        assert_eq!(batches[2].entries.len(), 5_004);
        assert_eq!(buffer.stats().waiting_bytes, 0);
    }

    #[test]
    fn a_batch_never_spans_more_than_its_window_and_time_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new(1 << 20, 1, dir.path());
        let day = 24 * 3600 * 1000;
        buffer.push(10, b"a\n");
        buffer.push(5, b"clock set back\n");
        buffer.push(10 + day - 1, b"b\n");
        buffer.push(10 + day, b"c\n");
        let mut cutter = LineCutter::new(100);
        let batches = drain(&buffer, &mut cutter, &CWL);
        let got: Vec<Vec<i64>> = batches
            .iter()
            .map(|b| b.entries.iter().map(|e| e.timestamp).collect())
            .collect();
        assert_eq!(got, vec![vec![10, 10, 10 + day - 1], vec![10 + day]]);
    }

    #[test]
    fn lines_take_the_time_of_their_first_byte_and_long_ones_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new(1 << 20, 1, dir.path());
        buffer.push(1, b"one\ntw");
        buffer.push(2, b"o\nthr\xff");
        buffer.push(3, b"\n");
        // `é` is two bytes: it would straddle the first cut at 10.
        buffer.push(4, "aaaaaaaaaébbbbbbbbbbbb\n".as_bytes());
        buffer.push(5, b"tail");
        buffer.close();
        assert_eq!(buffer.stats().pushed, 5);
        let mut cutter = LineCutter::new(10);
        let got: Vec<(i64, String)> = drain(&buffer, &mut cutter, &CWL)
            .into_iter()
            .flat_map(|b| b.entries)
            .map(|e| (e.timestamp, e.text))
            .collect();
        let want = [
            (1, "one\n"),
            (1, "two\n"),
            (2, "thr\u{fffd}\n"),
            (4, "aaaaaaaaa"),
            (4, "ébbbbbbbb"),
            (4, "bbbb\n"),
            (5, "tail"),
        ];
        let want: Vec<(i64, String)> = want.iter().map(|(t, s)| (*t, s.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!((cutter.lines_cut(), cutter.extra_pieces()), (5, 2));
    }

    #[test]
    fn memory_and_spill_keep_one_order_across_refills() {
        let dir = tempfile::tempdir().unwrap();
        // Room for three chunks in memory.
        let buffer = LogBuffer::new(3 * (HEADER + 5), 1, dir.path());
        let mut cutter = LineCutter::new(100);
        let mut next = 0;
        let mut taken = Vec::new();
        for round in 0..20 {
            for _ in 0..(round % 9 + 1) {
                next += 1;
                buffer.push(next, format!("{next:04}\n").as_bytes());
            }
            buffer.take(&mut cutter);
            while let Some(e) = cutter.pop() {
                taken.push(e.text);
            }
        }
        while buffer.take(&mut cutter) {}
        while let Some(e) = cutter.pop() {
            taken.push(e.text);
        }
        let expected: Vec<String> = (1..=next).map(|i| format!("{i:04}\n")).collect();
        assert_eq!(taken, expected);
        assert!(buffer.stats().spilled > 0);
    }

    #[test]
    fn newlines_are_counted_across_runs() {
        let text: Vec<u8> = (0..10_000u32)
            .map(|i| if i % 3 == 0 { b'\n' } else { b'x' })
            .collect();
        assert_eq!(newlines(&text), 3334);
        assert_eq!(newlines(&[b'\n'; 600]), 600);
        assert_eq!(newlines(b""), 0);
    }

    #[test]
    fn a_chunk_larger_than_a_block_goes_through_the_spill_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new(0, 1, dir.path());
        let big = "y".repeat(BLOCK + 10) + "\n";
        buffer.push(1, b"small\n");
        buffer.push(2, big.as_bytes());
        buffer.push(3, b"after\n");
        let mut cutter = LineCutter::new(usize::MAX);
        while buffer.take(&mut cutter) {}
        let texts: Vec<String> = std::iter::from_fn(|| cutter.pop().map(|e| e.text)).collect();
        assert_eq!(texts, ["small\n", big.as_str(), "after\n"]);
        assert_eq!(buffer.stats().spilled, 3);
    }
}
