//! Drawing a batch's events: each child's CodeBuild log with its identifier in front of every
//! line (`[linux] [Container] ...`, batch lines as `[Batch] <time> ...`), JSON lines tagged with
//! `build_identifier`, one progress line per running child on a terminal, one log file per child
//! (`--log-dir`), and a summary table at the end (identifier, status, duration, failing phase).
//!
//! A child's lines are drawn by the single-build renderer ([`CodeBuildLog`]) into a writer that
//! adds the prefix and passes whole lines only, so the children's interleaved output can be split
//! again with `grep '^\[linux\] '`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use buildagent_runner::batch::events::{
    BatchEvent, BatchEventKind, BatchStop, ChildStatus, ChildSummary,
};
use buildagent_runner::events::{BuildStatus, EventKind};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::LogFormat;
use crate::render::{timestamp, CodeBuildLog, Reporter};

/// Something that shows a batch's events.
pub trait BatchReporter {
    /// Shows one event.
    fn report(&mut self, event: &BatchEvent) -> io::Result<()>;
}

/// The reporter for standard output in `format`.
pub fn for_stdout(format: LogFormat, color: bool) -> Box<dyn BatchReporter + Send> {
    match format {
        LogFormat::Codebuild => Box::new(Prefixed::new(BufWriter::new(io::stdout()), false)),
        LogFormat::Json => Box::new(JsonLines {
            out: BufWriter::new(io::stdout()),
        }),
        LogFormat::Pretty => Box::new(Progress::new(color)),
    }
}

/// A writer shared by the children's line writers.
type Shared<W> = Arc<Mutex<W>>;

fn lock<W>(shared: &Shared<W>) -> std::sync::MutexGuard<'_, W> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Passes whole lines to the shared writer, each with the prefix in front.
pub struct LineWriter<W: Write> {
    prefix: Vec<u8>,
    partial: Vec<u8>,
    out: Shared<W>,
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(nl + 1);
            let mut out = lock(&self.out);
            out.write_all(&self.prefix)?;
            out.write_all(&self.partial)?;
            out.write_all(line)?;
            self.partial.clear();
            rest = tail;
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.out).flush()
    }
}

/// The CodeBuild format with every line prefixed by the child's identifier, batch lines as
/// `[Batch] <time> message`, and the summary table at the end.
pub struct Prefixed<W: Write> {
    out: Shared<W>,
    color: bool,
    logs: HashMap<String, CodeBuildLog<LineWriter<W>>>,
    /// Each child's description, for the summary.
    descriptions: HashMap<String, String>,
}

impl<W: Write> Prefixed<W> {
    /// The prefixed log on `out` (`color`: ANSI colour in the batch's own lines).
    pub fn new(out: W, color: bool) -> Prefixed<W> {
        Prefixed {
            out: Arc::new(Mutex::new(out)),
            color,
            logs: HashMap::new(),
            descriptions: HashMap::new(),
        }
    }

    fn line(&self, at: SystemTime, message: &str) -> io::Result<()> {
        let mut out = lock(&self.out);
        writeln!(out, "[Batch] {} {message}", timestamp(at))?;
        out.flush()
    }

    fn child_log(&mut self, identifier: &str) -> &mut CodeBuildLog<LineWriter<W>> {
        let out = self.out.clone();
        self.logs.entry(identifier.to_string()).or_insert_with(|| {
            CodeBuildLog::new(
                LineWriter {
                    prefix: format!("[{identifier}] ").into_bytes(),
                    partial: Vec::new(),
                    out,
                },
                false,
                false,
            )
        })
    }
}

impl<W: Write> BatchReporter for Prefixed<W> {
    fn report(&mut self, event: &BatchEvent) -> io::Result<()> {
        match &event.kind {
            BatchEventKind::Child { identifier, event } => {
                self.child_log(identifier).report(event)?;
            }
            BatchEventKind::ChildQueued {
                identifier,
                description,
                ..
            } => {
                self.descriptions
                    .insert(identifier.clone(), description.clone());
                if let Some(message) = message(&event.kind) {
                    self.line(event.at, &message)?;
                }
            }
            BatchEventKind::ChildFinished { identifier, .. } => {
                // Its lines are all out: every command's output ends with a newline.
                self.logs.remove(identifier);
                if let Some(message) = message(&event.kind) {
                    self.line(event.at, &message)?;
                }
            }
            BatchEventKind::BatchFinished {
                status,
                duration,
                children,
            } => {
                let mut out = lock(&self.out);
                summary(&mut *out, *status, *duration, children, self.color)?;
                out.flush()?;
            }
            other => {
                if let Some(message) = message(other) {
                    self.line(event.at, &message)?;
                }
            }
        }
        Ok(())
    }
}

/// The batch's own line for an event, if it has one.
fn message(kind: &BatchEventKind) -> Option<String> {
    Some(match kind {
        BatchEventKind::BatchStarted {
            batch_id,
            kind,
            builds,
            jobs,
        } => format!(
            "Batch {} of {builds} build(s), {jobs} at a time (batch {batch_id})",
            kind.as_str()
        ),
        BatchEventKind::ChildQueued {
            identifier,
            description,
            depend_on,
            not_applicable,
        } => {
            let mut m = format!("Build {identifier} queued");
            if !description.is_empty() {
                m.push_str(&format!(" [{description}]"));
            }
            if !depend_on.is_empty() {
                m.push_str(&format!(", after {}", depend_on.join(", ")));
            }
            if !not_applicable.is_empty() {
                m.push_str(&format!(
                    "; not applicable on this machine, ignored: {}",
                    not_applicable.join(" ")
                ));
            }
            m
        }
        BatchEventKind::ChildStarted {
            identifier,
            build_id,
        } => format!("Build {identifier} started (build {build_id})"),
        BatchEventKind::ChildFinished {
            identifier,
            status,
            duration,
            failing_phase,
            ignore_failure,
            reason,
        } => {
            let mut m = format!("Build {identifier} {status}");
            if *status != ChildStatus::NotStarted {
                m.push_str(&format!(" in {}", secs(*duration)));
            }
            if let Some(phase) = failing_phase {
                m.push_str(&format!(", failing phase {phase}"));
            }
            if *ignore_failure && *status != ChildStatus::Succeeded {
                m.push_str(" (failure ignored)");
            }
            if let Some(reason) = reason {
                m.push_str(&format!(": {reason}"));
            }
            m
        }
        BatchEventKind::ReportMerged {
            group,
            shards,
            status,
            total,
            passed,
            failed,
            skipped,
            errors,
            duration,
        } => format!(
            "Report group {group} merged from {shards} shard(s): {total} tests, {passed} passed, {failed} failed, {skipped} skipped, {errors} errors ({:.2} s, the longest shard) {status}",
            duration.as_secs_f64()
        ),
        BatchEventKind::ArtifactsCombined { path, builds } => format!(
            "Combined artifacts of {builds} build(s) written to {}",
            path.display()
        ),
        BatchEventKind::BatchCancelling { reason } => match reason {
            BatchStop::FastFail => {
                "Fast-fail: a build failed; stopping the running builds".to_string()
            }
            BatchStop::Signal => "Batch stop requested: stopping the running builds".to_string(),
            BatchStop::Timeout => "Batch timed out: stopping the running builds".to_string(),
        },
        BatchEventKind::BatchWarning { message } => format!("Warning: {message}"),
        _ => return None,
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn paint(status: &str, color: bool) -> String {
    if !color {
        return status.to_string();
    }
    let code = match status {
        "SUCCEEDED" => "\x1b[32m",
        "FAILED" | "FAULT" => "\x1b[1;31m",
        _ => "\x1b[33m",
    };
    format!("{code}{status}\x1b[0m")
}

/// The summary table: one row per child (identifier, status, duration, failing phase, and what
/// else there is to say), then the batch's status.
pub fn summary(
    out: &mut dyn Write,
    status: BuildStatus,
    duration: Duration,
    children: &[ChildSummary],
    color: bool,
) -> io::Result<()> {
    let width = children
        .iter()
        .map(|c| c.identifier.len())
        .max()
        .unwrap_or(0)
        .max("IDENTIFIER".len());
    writeln!(out)?;
    writeln!(
        out,
        "{:<width$}  {:<11}  {:>9}  {:<16}  NOTE",
        "IDENTIFIER", "STATUS", "DURATION", "FAILING PHASE"
    )?;
    for c in children {
        let status = c.status.as_str();
        let pad = 11usize.saturating_sub(status.len());
        let mut note = Vec::new();
        if !c.description.is_empty() {
            note.push(c.description.clone());
        }
        if c.ignore_failure {
            note.push("failure ignored".to_string());
        }
        if let Some(reason) = &c.reason {
            note.push(reason.clone());
        }
        let duration = if c.status == ChildStatus::NotStarted {
            "-".to_string()
        } else {
            secs(c.duration)
        };
        writeln!(
            out,
            "{:<width$}  {}{}  {:>9}  {:<16}  {}",
            c.identifier,
            paint(status, color),
            " ".repeat(pad),
            duration,
            c.failing_phase.map(|p| p.as_str()).unwrap_or("-"),
            note.join("; ")
        )?;
    }
    let counts = |s: ChildStatus| children.iter().filter(|c| c.status == s).count();
    writeln!(
        out,
        "batch {} in {}: {} succeeded, {} failed, {} stopped, {} not started",
        paint(status.as_str(), color),
        secs(duration),
        counts(ChildStatus::Succeeded),
        counts(ChildStatus::Failed) + counts(ChildStatus::Fault),
        counts(ChildStatus::Stopped) + counts(ChildStatus::TimedOut),
        counts(ChildStatus::NotStarted)
    )?;
    Ok(())
}

/// One JSON object per event and line (children's events tagged with `build_identifier`).
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> BatchReporter for JsonLines<W> {
    fn report(&mut self, event: &BatchEvent) -> io::Result<()> {
        event.write_json_line(&mut self.out)?;
        let output = matches!(
            &event.kind,
            BatchEventKind::Child { event, .. } if matches!(event.kind, EventKind::Output { .. })
        );
        if !output {
            self.out.flush()?;
        }
        Ok(())
    }
}

/// `--log-dir DIR`: each child's full log in CodeBuild's format, `DIR/<identifier>.log`.
pub struct LogDir {
    dir: PathBuf,
    logs: HashMap<String, CodeBuildLog<BufWriter<File>>>,
}

impl LogDir {
    /// Logs in `dir` (which exists).
    pub fn new(dir: &Path) -> LogDir {
        LogDir {
            dir: dir.to_path_buf(),
            logs: HashMap::new(),
        }
    }
}

impl BatchReporter for LogDir {
    fn report(&mut self, event: &BatchEvent) -> io::Result<()> {
        match &event.kind {
            BatchEventKind::ChildStarted { identifier, .. } => {
                let path = self.dir.join(format!("{identifier}.log"));
                let file = File::create(&path).map_err(|e| {
                    io::Error::new(e.kind(), format!("--log-dir {}: {e}", path.display()))
                })?;
                self.logs.insert(
                    identifier.clone(),
                    CodeBuildLog::new(BufWriter::new(file), false, true),
                );
            }
            BatchEventKind::Child { identifier, event } => {
                if let Some(log) = self.logs.get_mut(identifier) {
                    log.report(event)?;
                }
            }
            BatchEventKind::ChildFinished { identifier, .. } => {
                // Dropping the log flushes its file.
                self.logs.remove(identifier);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The last lines a child wrote, shown under the summary when it did not succeed.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    const LINES: usize = 20;

    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(Self::LINES);
        lines[start..].iter().map(|l| l.to_string()).collect()
    }
}

/// A cheap handle on a child's tail, for its log.
#[derive(Clone, Default)]
struct TailWriter(Arc<Mutex<Tail>>);

impl Write for TailWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut tail = lock(&self.0);
        tail.bytes.extend_from_slice(buf);
        // Keep it small: cut to the last lines once it grows.
        if tail.bytes.len() > 64 * 1024 {
            let keep = tail.lines().join("\n") + "\n";
            tail.bytes = keep.into_bytes();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the terminal view shows, kept up to date from the batch's events. Its lines are made
/// here and only drawn by [`Progress`], so they can be checked without a terminal.
#[derive(Debug, Default)]
pub struct View {
    /// The longest identifier's length: the running lines' first column.
    width: usize,
    /// Every child, in plan order.
    children: Vec<ViewChild>,
}

#[derive(Debug)]
struct ViewChild {
    identifier: String,
    state: ViewState,
}

#[derive(Debug, Clone, PartialEq)]
enum ViewState {
    Queued,
    /// Its phase, and when it started (time since the batch started).
    Running {
        phase: &'static str,
        since: Duration,
    },
    Done,
}

/// How many queued identifiers the queued line names before it only counts them.
const QUEUED_NAMED: usize = 5;

impl View {
    /// Takes one event into account.
    pub fn apply(&mut self, event: &BatchEvent) {
        match &event.kind {
            BatchEventKind::ChildQueued { identifier, .. } => {
                self.width = self.width.max(identifier.chars().count());
                self.children.push(ViewChild {
                    identifier: identifier.clone(),
                    state: ViewState::Queued,
                });
            }
            BatchEventKind::ChildStarted { identifier, .. } => {
                self.set(
                    identifier,
                    ViewState::Running {
                        phase: buildagent_runner::events::BuildPhase::DownloadSource.as_str(),
                        since: event.elapsed,
                    },
                );
            }
            BatchEventKind::Child { identifier, event } => {
                if let EventKind::PhaseStarted { phase } = &event.kind {
                    if let Some(ViewState::Running { phase: shown, .. }) = self.state(identifier) {
                        *shown = phase.as_str();
                    }
                }
            }
            BatchEventKind::ChildFinished { identifier, .. } => {
                self.set(identifier, ViewState::Done);
            }
            _ => {}
        }
    }

    fn state(&mut self, identifier: &str) -> Option<&mut ViewState> {
        self.children
            .iter_mut()
            .find(|c| c.identifier == identifier)
            .map(|c| &mut c.state)
    }

    fn set(&mut self, identifier: &str, state: ViewState) {
        if let Some(s) = self.state(identifier) {
            *s = state;
        }
    }

    /// The line of a running child at `now` (time since the batch started): its identifier,
    /// phase and time since it started (`compile  BUILD            1m05s`); `None` when it is
    /// not running.
    pub fn running_line(&self, identifier: &str, now: Duration) -> Option<String> {
        let child = self.children.iter().find(|c| c.identifier == identifier)?;
        let ViewState::Running { phase, since } = &child.state else {
            return None;
        };
        Some(format!(
            "{:<width$}  {phase:<16} {:>7}",
            child.identifier,
            clock(now.saturating_sub(*since)),
            width = self.width
        ))
    }

    /// The line under the running ones while children wait for a slot or their dependencies:
    /// `3 queued: test, package, docs` (the first few named).
    pub fn queued_line(&self) -> Option<String> {
        let queued: Vec<&str> = self
            .children
            .iter()
            .filter(|c| c.state == ViewState::Queued)
            .map(|c| c.identifier.as_str())
            .collect();
        if queued.is_empty() {
            return None;
        }
        let mut line = format!(
            "{} queued: {}",
            queued.len(),
            queued[..queued.len().min(QUEUED_NAMED)].join(", ")
        );
        if queued.len() > QUEUED_NAMED {
            line.push_str(&format!(" and {} more", queued.len() - QUEUED_NAMED));
        }
        Some(line)
    }

    /// Every line the terminal shows at `now`, as [`Progress`] lays them out: the running
    /// children in the order they started (each bar is added when its child starts), then the
    /// queued line (its bar stays last).
    #[cfg(test)]
    fn lines(&self, now: Duration) -> Vec<String> {
        let mut running: Vec<(Duration, &str)> = self
            .children
            .iter()
            .filter_map(|c| match &c.state {
                ViewState::Running { since, .. } => Some((*since, c.identifier.as_str())),
                _ => None,
            })
            .collect();
        running.sort_by_key(|(since, _)| *since);
        running
            .into_iter()
            .filter_map(|(_, id)| self.running_line(id, now))
            .chain(self.queued_line())
            .collect()
    }
}

/// A duration as a terminal clock: `7s`, `1m05s`, `2h03m04s`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// The line printed above the running ones when a child ends: a mark (`✔` succeeded, `-` not
/// started, `✘` otherwise) and the batch's line for it.
pub fn finished_line(kind: &BatchEventKind, color: bool) -> Option<String> {
    let BatchEventKind::ChildFinished { status, .. } = kind else {
        return None;
    };
    let mark = match status {
        ChildStatus::Succeeded => "✔",
        ChildStatus::NotStarted => "-",
        _ => "✘",
    };
    let line = message(kind)?;
    let line = line.replacen(status.as_str(), &paint(status.as_str(), color), 1);
    Some(format!("{mark} {line}"))
}

fn lock_view(view: &Mutex<View>) -> std::sync::MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|p| p.into_inner())
}

/// On a terminal: one line per running child with its phase and elapsed time, a line naming
/// the queued ones, a line per child that ends, the summary table, and the last lines of each
/// child that did not succeed. The text of every line comes from [`View`] and
/// [`finished_line`]; indicatif draws it (and the spinner) and redraws the elapsed times.
pub struct Progress {
    multi: MultiProgress,
    color: bool,
    view: Arc<Mutex<View>>,
    /// When the batch started, the origin of the view's times.
    started: std::time::Instant,
    bars: HashMap<String, ProgressBar>,
    queued: Option<ProgressBar>,
    tails: HashMap<String, (CodeBuildLog<TailWriter>, TailWriter)>,
}

impl Progress {
    fn new(color: bool) -> Progress {
        Progress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            color,
            view: Arc::default(),
            started: std::time::Instant::now(),
            bars: HashMap::new(),
            queued: None,
            tails: HashMap::new(),
        }
    }

    fn println(&self, line: &str) -> io::Result<()> {
        if self.multi.is_hidden() {
            let mut out = io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()
        } else {
            self.multi.println(line)
        }
    }

    /// A bar that draws child `identifier`'s running line, its elapsed time read when drawn.
    fn running_bar(&self, identifier: &str) -> ProgressBar {
        let view = self.view.clone();
        let id = identifier.to_string();
        let started = self.started;
        let style = ProgressStyle::with_template("{spinner} {line}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "line",
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    // Drawn on indicatif's ticker thread; the reporter never holds the view's
                    // lock while it calls indicatif, so this cannot wait on itself.
                    if let Some(line) = lock_view(&view).running_line(&id, started.elapsed()) {
                        let _ = w.write_str(&line);
                    }
                },
            );
        let bar = ProgressBar::new_spinner().with_style(style);
        let bar = match &self.queued {
            Some(queued) => self.multi.insert_before(queued, bar),
            None => self.multi.add(bar),
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// Shows the queued line as the view has it, or removes it when nothing waits.
    fn refresh_queued(&mut self) {
        let line = lock_view(&self.view).queued_line();
        match (line, &self.queued) {
            (Some(line), Some(bar)) => bar.set_message(line),
            (Some(line), None) => {
                let style = ProgressStyle::with_template("  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bar = self.multi.add(ProgressBar::new_spinner().with_style(style));
                bar.set_message(line);
                self.queued = Some(bar);
            }
            (None, Some(bar)) => {
                bar.finish_and_clear();
                self.multi.remove(bar);
                self.queued = None;
            }
            (None, None) => {}
        }
    }
}

impl BatchReporter for Progress {
    fn report(&mut self, event: &BatchEvent) -> io::Result<()> {
        lock_view(&self.view).apply(event);
        match &event.kind {
            BatchEventKind::BatchStarted { .. } => {
                self.started = std::time::Instant::now()
                    .checked_sub(event.elapsed)
                    .unwrap_or(self.started);
                if let Some(line) = message(&event.kind) {
                    self.println(&line)?;
                }
            }
            BatchEventKind::ChildQueued { .. } => self.refresh_queued(),
            BatchEventKind::ChildStarted { identifier, .. } => {
                let bar = self.running_bar(identifier);
                self.bars.insert(identifier.clone(), bar);
                self.refresh_queued();
                let tail = TailWriter::default();
                self.tails.insert(
                    identifier.clone(),
                    (CodeBuildLog::new(tail.clone(), false, false), tail),
                );
            }
            BatchEventKind::Child { identifier, event } => {
                // A new phase is in the view: the bar's next steady tick draws it.
                if let Some((log, _)) = self.tails.get_mut(identifier) {
                    log.report(event)?;
                }
            }
            BatchEventKind::ChildFinished { identifier, .. } => {
                if let Some(bar) = self.bars.remove(identifier) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.refresh_queued();
                if let Some(line) = finished_line(&event.kind, self.color) {
                    self.println(&line)?;
                }
            }
            BatchEventKind::BatchFinished {
                status,
                duration,
                children,
            } => {
                let _ = self.multi.clear();
                let mut out = io::stdout().lock();
                summary(&mut out, *status, *duration, children, self.color)?;
                for c in children.iter().filter(|c| {
                    !matches!(c.status, ChildStatus::Succeeded | ChildStatus::NotStarted)
                }) {
                    if let Some((_, tail)) = self.tails.get(&c.identifier) {
                        writeln!(out, "\n--- last lines of {} ---", c.identifier)?;
                        for line in lock(&tail.0).lines() {
                            writeln!(out, "{line}")?;
                        }
                    }
                }
                out.flush()?;
            }
            other => {
                if let Some(line) = message(other) {
                    self.println(&line)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildagent_runner::events::{BuildPhase, Event, Stream};
    use std::time::UNIX_EPOCH;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_741_474_926_050_806)
    }

    fn child(identifier: &str, kind: EventKind) -> BatchEvent {
        BatchEvent {
            at: at(),
            elapsed: Duration::ZERO,
            kind: BatchEventKind::Child {
                identifier: identifier.into(),
                event: Event::new(at(), Duration::ZERO, kind),
            },
        }
    }

    fn output(bytes: &[u8]) -> EventKind {
        EventKind::Output {
            stream: Stream::Stdout,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn interleaved_children_come_out_as_whole_prefixed_lines() {
        let out = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                lock(&self.0).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut log = Prefixed::new(Sink(out.clone()), false);
        for e in [
            child("a", output(b"hel")),
            child("b", output(b"one\ntw")),
            child("a", output(b"lo\n")),
            child("b", output(b"o\n")),
        ] {
            log.report(&e).unwrap();
        }
        assert_eq!(
            String::from_utf8(lock(&out).clone()).unwrap(),
            "[b] one\n[a] hello\n[b] two\n"
        );
    }

    fn batch_event(secs: f64, kind: BatchEventKind) -> BatchEvent {
        BatchEvent {
            at: at(),
            elapsed: Duration::from_secs_f64(secs),
            kind,
        }
    }

    fn queued(identifier: &str, depend_on: &[&str]) -> BatchEventKind {
        BatchEventKind::ChildQueued {
            identifier: identifier.into(),
            description: String::new(),
            depend_on: depend_on.iter().map(|d| d.to_string()).collect(),
            not_applicable: Vec::new(),
        }
    }

    fn started(identifier: &str) -> BatchEventKind {
        BatchEventKind::ChildStarted {
            identifier: identifier.into(),
            build_id: format!("demo:{identifier}"),
        }
    }

    fn phase(identifier: &str, phase: BuildPhase) -> BatchEventKind {
        BatchEventKind::Child {
            identifier: identifier.into(),
            event: Event::new(at(), Duration::ZERO, EventKind::PhaseStarted { phase }),
        }
    }

    fn finished(
        identifier: &str,
        status: ChildStatus,
        secs: f64,
        failing_phase: Option<BuildPhase>,
        reason: Option<&str>,
    ) -> BatchEventKind {
        BatchEventKind::ChildFinished {
            identifier: identifier.into(),
            status,
            duration: Duration::from_secs_f64(secs),
            failing_phase,
            ignore_failure: false,
            reason: reason.map(str::to_string),
        }
    }

    /// A build-graph with two slots as the terminal shows it: `compile` and `lint` run, `test`
    /// and `package` wait; `compile` fails, so `test` and `package` never start.
    #[test]
    fn the_terminal_view_shows_each_running_build_its_phase_and_time_and_the_queued_ones() {
        let mut view = View::default();
        let mut printed = Vec::new();
        let mut step = |view: &mut View, secs: f64, kind: BatchEventKind| {
            let event = batch_event(secs, kind);
            view.apply(&event);
            printed.extend(finished_line(&event.kind, false));
        };
        step(&mut view, 0.0, queued("compile", &[]));
        step(&mut view, 0.0, queued("lint", &[]));
        step(&mut view, 0.0, queued("test", &["compile"]));
        step(&mut view, 0.0, queued("package", &["compile", "test"]));
        assert_eq!(
            view.lines(Duration::ZERO),
            ["4 queued: compile, lint, test, package"]
        );

        step(&mut view, 0.1, started("compile"));
        step(&mut view, 0.3, started("lint"));
        assert_eq!(
            view.lines(Duration::from_secs_f64(0.4)),
            [
                "compile  DOWNLOAD_SOURCE       0s",
                "lint     DOWNLOAD_SOURCE       0s",
                "2 queued: test, package",
            ]
        );

        step(&mut view, 0.5, phase("compile", BuildPhase::Install));
        step(&mut view, 1.0, phase("lint", BuildPhase::Build));
        step(&mut view, 9.0, phase("compile", BuildPhase::Build));
        // Each build's own time, from its start: compile 65.2s, lint 65.0s.
        assert_eq!(
            view.lines(Duration::from_secs_f64(65.3)),
            [
                "compile  BUILD              1m05s",
                "lint     BUILD              1m05s",
                "2 queued: test, package",
            ]
        );
        assert_eq!(
            view.running_line("lint", Duration::from_secs(7384))
                .unwrap(),
            "lint     BUILD            2h03m03s"
        );
        assert_eq!(view.running_line("test", Duration::from_secs(1)), None);

        step(
            &mut view,
            70.0,
            finished(
                "compile",
                ChildStatus::Failed,
                69.9,
                Some(BuildPhase::Build),
                None,
            ),
        );
        step(
            &mut view,
            70.0,
            finished(
                "test",
                ChildStatus::NotStarted,
                0.0,
                None,
                Some("dependency `compile` FAILED"),
            ),
        );
        step(
            &mut view,
            70.0,
            finished(
                "package",
                ChildStatus::NotStarted,
                0.0,
                None,
                Some("dependency `test` NOT_STARTED"),
            ),
        );
        // Nothing waits any more: the queued line is gone.
        assert_eq!(
            view.lines(Duration::from_secs(71)),
            ["lint     BUILD              1m10s"]
        );
        step(&mut view, 75.0, phase("lint", BuildPhase::PostBuild));
        assert_eq!(
            view.lines(Duration::from_secs(75)),
            ["lint     POST_BUILD         1m14s"]
        );
        step(
            &mut view,
            76.0,
            finished("lint", ChildStatus::Succeeded, 75.7, None, None),
        );
        assert!(view.lines(Duration::from_secs(76)).is_empty());
        assert_eq!(
            printed,
            [
                "✘ Build compile FAILED in 69.90s, failing phase BUILD",
                "- Build test NOT_STARTED: dependency `compile` FAILED",
                "- Build package NOT_STARTED: dependency `test` NOT_STARTED",
                "✔ Build lint SUCCEEDED in 75.70s",
            ]
        );
    }

    #[test]
    fn many_queued_builds_are_counted_after_the_first_few() {
        let mut view = View::default();
        for i in 1..=8 {
            view.apply(&batch_event(0.0, queued(&format!("shard_{i}"), &[])));
        }
        view.apply(&batch_event(0.0, started("shard_1")));
        assert_eq!(
            view.lines(Duration::from_millis(2500)),
            [
                "shard_1  DOWNLOAD_SOURCE       2s",
                "7 queued: shard_2, shard_3, shard_4, shard_5, shard_6 and 2 more",
            ]
        );
    }

    #[test]
    fn a_finished_line_is_painted_only_with_color() {
        let kind = finished(
            "a",
            ChildStatus::TimedOut,
            2.0,
            Some(BuildPhase::Build),
            None,
        );
        assert_eq!(
            finished_line(&kind, true).unwrap(),
            "✘ Build a \x1b[33mTIMED_OUT\x1b[0m in 2.00s, failing phase BUILD"
        );
        assert_eq!(finished_line(&queued("a", &[]), false), None);
    }

    #[test]
    fn the_summary_has_a_row_per_child() {
        let mut out = Vec::new();
        let children = vec![
            ChildSummary {
                identifier: "build1".into(),
                description: String::new(),
                status: ChildStatus::Failed,
                duration: Duration::from_millis(1500),
                failing_phase: Some(buildagent_runner::events::BuildPhase::Build),
                ignore_failure: false,
                reason: None,
            },
            ChildSummary {
                identifier: "build2".into(),
                description: String::new(),
                status: ChildStatus::NotStarted,
                duration: Duration::ZERO,
                failing_phase: None,
                ignore_failure: false,
                reason: Some("dependency `build1` FAILED".into()),
            },
        ];
        summary(
            &mut out,
            BuildStatus::Failed,
            Duration::from_secs(2),
            &children,
            false,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\nIDENTIFIER  STATUS        DURATION  FAILING PHASE     NOTE\n\
             build1      FAILED           1.50s  BUILD             \n\
             build2      NOT_STARTED          -  -                 dependency `build1` FAILED\n\
             batch FAILED in 2.00s: 0 succeeded, 1 failed, 0 stopped, 1 not started\n"
        );
    }
}
