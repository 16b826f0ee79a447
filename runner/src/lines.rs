//! Whole lines per stream: a command's stdout and stderr are never spliced into each other.
//!
//! A program may write one line in several writes (`printf 'a'; printf 'b\n'`), and the pipes
//! deliver what it wrote as it was written. When the other stream writes in between, a log that
//! shows chunks in arrival order would put the other stream's line in the middle of this one.
//! A [`LineAssembler`] sits in front of an [`OutputSink`] and passes on only whole lines, each
//! stream assembling its own; a partial line is held until its newline arrives, until it has
//! waited [`DEFAULT_DELAY`] (so that a prompt such as `Password: ` still shows
//! while the command waits), or until it reaches [`MAX_PARTIAL`] bytes.
//!
//! The delay needs a clock while the command runs: [`LineAssembler::drive`] runs the executor's
//! future and flushes partial lines when they are due. The engine does this for every command,
//! whatever the executor, so the host and container executors behave alike.
//!
//! ```
//! use std::time::Duration;
//! use buildagent_runner::events::Stream;
//! use buildagent_runner::executor::{CapturedOutput, OutputSink};
//! use buildagent_runner::lines::LineAssembler;
//!
//! let lines = LineAssembler::new(CapturedOutput::default(), Duration::from_millis(50));
//! let mut sink = lines.sink();
//! sink.output(Stream::Stdout, b"compiling ");
//! sink.output(Stream::Stderr, b"warning: x\n");
//! sink.output(Stream::Stdout, b"done\n");
//! let out = lines.into_inner();
//! assert_eq!(out.chunks, [
//!     (Stream::Stderr, b"warning: x\n".to_vec()),
//!     (Stream::Stdout, b"compiling done\n".to_vec()),
//! ]);
//! ```

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use crate::events::Stream;
use crate::executor::OutputSink;

/// How long a partial line waits for its newline before it is passed on: 50 ms, short enough for
/// a prompt to show at once to a person, long enough to join the writes of one line.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(50);

/// A partial line this long is passed on without waiting for its newline (a command that writes
/// megabytes without one must not be held in memory).
pub const MAX_PARTIAL: usize = 64 * 1024;

/// Assembles whole lines per stream in front of a sink (see the [module docs](self)).
///
/// It is shared by reference: [`LineAssembler::sink`] gives the handle an executor writes to,
/// while [`LineAssembler::drive`] flushes partial lines that have waited long enough.
#[derive(Debug)]
pub struct LineAssembler<S> {
    delay: Duration,
    state: Mutex<State<S>>,
    /// Woken when a partial line starts waiting, so that `drive` arms its timer.
    started: Notify,
}

#[derive(Debug)]
struct State<S> {
    sink: S,
    /// stdout's and stderr's partial lines.
    pending: [Partial; 2],
}

#[derive(Debug, Default)]
struct Partial {
    bytes: Vec<u8>,
    /// When the first byte of `bytes` arrived.
    since: Option<Instant>,
}

/// The handle an executor writes to: an [`OutputSink`] that feeds a [`LineAssembler`].
#[derive(Debug)]
pub struct LineSink<'a, S>(&'a LineAssembler<S>);

impl<S: OutputSink> LineAssembler<S> {
    /// An assembler in front of `sink` that passes on a partial line after `delay`.
    pub fn new(sink: S, delay: Duration) -> LineAssembler<S> {
        LineAssembler {
            delay,
            state: Mutex::new(State {
                sink,
                pending: Default::default(),
            }),
            started: Notify::new(),
        }
    }

    /// The handle to give an executor.
    pub fn sink(&self) -> LineSink<'_, S> {
        LineSink(self)
    }

    /// Runs `future` (typically [`Executor::run`](crate::executor::Executor::run) writing to
    /// [`LineAssembler::sink`]) and passes on each partial line that has waited its delay
    /// meanwhile. Lines still partial when it ends stay held: [`LineAssembler::into_inner`] or
    /// the next write decides.
    pub async fn drive<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        loop {
            let due = self.next_due();
            tokio::select! {
                biased;
                out = &mut future => return out,
                _ = self.started.notified() => {}
                // Without a partial line the timer is far away and disabled.
                _ = sleep_until(due.unwrap_or_else(|| Instant::now() + self.delay)), if due.is_some() => {
                    self.flush_due(Instant::now());
                }
            }
        }
    }

    /// Passes on every held partial line and returns the sink.
    pub fn into_inner(self) -> S {
        let mut state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        state.flush(Stream::Stdout);
        state.flush(Stream::Stderr);
        state.sink
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // A panic in the sink leaves whole bytes behind, never a broken invariant.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_due(&self) -> Option<Instant> {
        let state = self.lock();
        state
            .pending
            .iter()
            .filter_map(|p| p.since)
            .min()
            .map(|since| since + self.delay)
    }

    fn flush_due(&self, now: Instant) {
        let mut state = self.lock();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let due = state.pending[index(stream)]
                .since
                .is_some_and(|since| since + self.delay <= now);
            if due {
                state.flush(stream);
            }
        }
    }

    fn push(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut state = self.lock();
        let State { sink, pending } = &mut *state;
        let partial = &mut pending[index(stream)];
        let rest = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                let (lines, rest) = bytes.split_at(last + 1);
                if partial.bytes.is_empty() {
                    // The common case, a chunk of whole lines: passed on without a copy.
                    sink.output(stream, lines);
                } else {
                    partial.bytes.extend_from_slice(lines);
                    sink.output(stream, &partial.bytes);
                    partial.bytes.clear();
                    partial.since = None;
                }
                rest
            }
            None => bytes,
        };
        if rest.is_empty() {
            return;
        }
        if partial.since.is_none() {
            partial.since = Some(Instant::now());
            self.started.notify_one();
        }
        partial.bytes.extend_from_slice(rest);
        if partial.bytes.len() >= MAX_PARTIAL {
            state.flush(stream);
        }
    }
}

impl<S: OutputSink> State<S> {
    fn flush(&mut self, stream: Stream) {
        let partial = &mut self.pending[index(stream)];
        partial.since = None;
        if !partial.bytes.is_empty() {
            self.sink.output(stream, &partial.bytes);
            partial.bytes.clear();
        }
    }
}

impl<S: OutputSink> OutputSink for LineSink<'_, S> {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        self.0.push(stream, bytes);
    }
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::CapturedOutput;

    fn assembler() -> LineAssembler<CapturedOutput> {
        LineAssembler::new(CapturedOutput::default(), Duration::from_secs(3600))
    }

    #[test]
    fn whole_lines_pass_at_once_and_partial_ones_wait_for_their_newline() {
        let lines = assembler();
        let mut sink = lines.sink();
        sink.output(Stream::Stdout, b"one\ntw");
        sink.output(Stream::Stderr, b"e");
        sink.output(Stream::Stderr, b"rr\n");
        sink.output(Stream::Stdout, b"o\nthr");
        let out = lines.into_inner();
        assert_eq!(
            out.chunks,
            [
                (Stream::Stdout, b"one\n".to_vec()),
                (Stream::Stderr, b"err\n".to_vec()),
                (Stream::Stdout, b"two\n".to_vec()),
                // The end of the stream passes on what is left.
                (Stream::Stdout, b"thr".to_vec()),
            ]
        );
    }

    #[test]
    fn a_long_partial_line_is_passed_on_at_the_limit() {
        let lines = assembler();
        let mut sink = lines.sink();
        let big = vec![b'x'; MAX_PARTIAL - 1];
        sink.output(Stream::Stdout, &big);
        sink.output(Stream::Stdout, b"yz");
        sink.output(Stream::Stdout, b"\n");
        let out = lines.into_inner();
        assert_eq!(out.chunks.len(), 2);
        assert_eq!(out.chunks[0].1.len(), MAX_PARTIAL + 1);
        assert_eq!(out.chunks[1].1, b"\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_is_passed_on_after_the_delay_while_the_command_runs() {
        let lines = LineAssembler::new(CapturedOutput::default(), Duration::from_millis(50));
        let seen = lines
            .drive(async {
                lines.sink().output(Stream::Stdout, b"Password: ");
                tokio::time::sleep(Duration::from_millis(10)).await;
                let early = lines.lock().sink.chunks.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                let late = lines.lock().sink.chunks.clone();
                (early, late)
            })
            .await;
        assert_eq!(seen.0, 0);
        assert_eq!(seen.1, [(Stream::Stdout, b"Password: ".to_vec())]);
    }
}
