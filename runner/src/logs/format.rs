//! CodeBuild's log format: events turned into `[Container] YYYY/MM/DD HH:MM:SS.ffffff message`
//! lines and the commands' raw output.
//!
//! [`Formatter`] is the one place that decides what the log says for each event; the terminal
//! renderer, the log file and the sinks (CloudWatch Logs, S3) all draw from it, so they hold the
//! same text. It gives [`Piece`]s: a renderer writes them as they come (with colour when it
//! wants), the sinks queue them as chunks and cut them into lines on their own threads
//! ([`super::buffer::LineCutter`]).

use std::time::SystemTime;

use crate::events::{BuildPhase, CancelReason, CommandOutcome, Event, EventKind, PhaseStatus};

/// How a terminal may emphasise an agent line (the log file and the sinks ignore it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A phase being entered.
    Heading,
    /// A command being run.
    Command,
    /// Something that worked (an artifact written, a cache restored, passing tests).
    Success,
    /// Something that failed.
    Failure,
    /// Something to notice (a warning, a stop).
    Notice,
}

/// One piece of the CodeBuild-format log, in the order it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece<'e> {
    /// An agent line, written `[Container] <timestamp(at)> <message>` and a newline.
    Line {
        /// When it happened.
        at: SystemTime,
        /// The text after the timestamp.
        message: String,
        /// How a terminal may emphasise it.
        style: Option<Style>,
    },
    /// Command output, as read (already masked; not cut at lines).
    Output {
        /// When the agent read it.
        at: SystemTime,
        /// The bytes.
        bytes: &'e [u8],
    },
    /// A newline: the end of an unfinished output line, or the empty line CodeBuild leaves after
    /// each command's output.
    Newline {
        /// When it was written.
        at: SystemTime,
    },
}

/// The agent line `[Container] <timestamp> <message>`, without the newline.
pub fn line_text(at: SystemTime, message: &str) -> String {
    format!("[Container] {} {message}", timestamp(at))
}

/// `YYYY/MM/DD HH:MM:SS.ffffff` in UTC.
pub fn timestamp(at: SystemTime) -> String {
    let t = crate::utc::utc(at);
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Turns events into [`Piece`]s of the CodeBuild-format log (stateful: it remembers the running
/// command for its failure line, and whether the output ended in the middle of a line).
#[derive(Debug)]
pub struct Formatter {
    command: String,
    at_line_start: bool,
}

impl Default for Formatter {
    fn default() -> Self {
        Formatter::new()
    }
}

impl Formatter {
    /// A formatter at the start of a log.
    pub fn new() -> Formatter {
        Formatter {
            command: String::new(),
            at_line_start: true,
        }
    }

    /// The pieces `event` adds to the log, in order (none for events the log does not show).
    pub fn pieces<'e>(&mut self, event: &'e Event) -> Vec<Piece<'e>> {
        let mut out = Vec::new();
        self.format(event, &mut out);
        out
    }

    fn line(
        &mut self,
        out: &mut Vec<Piece<'_>>,
        at: SystemTime,
        message: String,
        style: Option<Style>,
    ) {
        self.end_output_line(out, at);
        out.push(Piece::Line { at, message, style });
    }

    fn end_output_line(&mut self, out: &mut Vec<Piece<'_>>, at: SystemTime) {
        if !self.at_line_start {
            out.push(Piece::Newline { at });
            self.at_line_start = true;
        }
    }

    fn format<'e>(&mut self, event: &'e Event, out: &mut Vec<Piece<'e>>) {
        let at = event.at;
        match &event.kind {
            EventKind::BuildStarted { build_id, .. } => self.line(
                out,
                at,
                format!(
                    "Running on buildagent {} (build {build_id})",
                    env!("CARGO_PKG_VERSION")
                ),
                None,
            ),
            EventKind::PhaseStarted { phase } => match phase {
                BuildPhase::DownloadSource => {
                    self.line(out, at, "Phase is DOWNLOAD_SOURCE".into(), None)
                }
                BuildPhase::UploadArtifacts | BuildPhase::Finalizing => {}
                other => self.line(
                    out,
                    at,
                    format!("Entering phase {}", other.as_str()),
                    Some(Style::Heading),
                ),
            },
            EventKind::PhaseFinished {
                phase,
                status,
                context,
                ..
            } if *phase != BuildPhase::Finalizing => {
                let style = (*status != PhaseStatus::Succeeded).then_some(Style::Failure);
                self.line(
                    out,
                    at,
                    format!(
                        "Phase complete: {} State: {}",
                        phase.as_str(),
                        status.as_str()
                    ),
                    style,
                );
                let (code, message) = context
                    .as_ref()
                    .map(|c| (c.code.as_str(), c.message.as_str()))
                    .unwrap_or(("", ""));
                self.line(
                    out,
                    at,
                    format!("Phase context status code: {code} Message: {message}"),
                    None,
                );
            }
            EventKind::CommandStarted { command, .. } => {
                self.command = command.clone();
                self.line(
                    out,
                    at,
                    format!("Running command {command}"),
                    Some(Style::Command),
                );
            }
            EventKind::Output { bytes, .. } if !bytes.is_empty() => {
                out.push(Piece::Output { at, bytes });
                self.at_line_start = bytes.ends_with(b"\n");
            }
            EventKind::CommandFinished { outcome, .. } => {
                self.end_output_line(out, at);
                // CodeBuild leaves an empty line after each command's output.
                out.push(Piece::Newline { at });
                let reason = match outcome {
                    CommandOutcome::Success => None,
                    CommandOutcome::Exited(code) => Some(format!("exit status {code}")),
                    CommandOutcome::Signaled(sig) => Some(format!("signal {sig}")),
                    CommandOutcome::TimedOut => Some("timed out".to_string()),
                    CommandOutcome::Stopped => Some("stopped".to_string()),
                    CommandOutcome::SpawnFailed(why) => Some(why.clone()),
                };
                if let Some(reason) = reason {
                    let command = std::mem::take(&mut self.command);
                    self.line(
                        out,
                        at,
                        format!("Command did not exit successfully {command} {reason}"),
                        Some(Style::Failure),
                    );
                }
            }
            EventKind::Info { message } => self.line(out, at, message.clone(), None),
            EventKind::ArtifactUploaded {
                identifier,
                path,
                files,
                bytes,
            } => {
                let which = match identifier {
                    None => "Primary artifact".to_string(),
                    Some(id) => format!("Secondary artifact {id}"),
                };
                self.line(
                    out,
                    at,
                    format!(
                        "{which} written to {}: {files} file(s), {bytes} bytes",
                        path.display()
                    ),
                    Some(Style::Success),
                )
            }
            EventKind::ReportGroupFinished {
                group,
                format,
                total,
                passed,
                failed,
                skipped,
                errors,
                duration,
                line_coverage,
                ..
            } => {
                let totals = crate::reports::Totals {
                    total: *total,
                    passed: *passed,
                    failed: *failed,
                    skipped: *skipped,
                    errors: *errors,
                    duration: duration.as_secs_f64(),
                };
                let coverage = buildagent_spec::ReportFormat::from_name(format)
                    .is_some_and(|f| f.is_coverage());
                let message =
                    crate::reports::summary_line(group, &totals, *line_coverage, coverage);
                let style = if failed + errors > 0 {
                    Style::Failure
                } else {
                    Style::Success
                };
                self.line(out, at, message, Some(style));
            }
            EventKind::Warning { message } => {
                self.line(out, at, format!("Warning: {message}"), Some(Style::Notice))
            }
            EventKind::Cancelling { reason } => {
                let message = match reason {
                    CancelReason::Timeout => "Build timed out: the running command was stopped",
                    CancelReason::Signal => "Build stop requested: the running command was stopped",
                };
                self.line(out, at, message.into(), Some(Style::Notice));
            }
            EventKind::CacheRestored {
                key,
                entry,
                files,
                bytes,
            } => {
                let key = key.as_deref().map_or(String::new(), |k| format!(" {k}"));
                self.line(
                    out,
                    at,
                    format!("Cache{key} restored from {entry}: {files} file(s), {bytes} bytes"),
                    Some(Style::Success),
                )
            }
            EventKind::CacheMissed { keys } => self.line(
                out,
                at,
                format!("Cache miss (tried: {})", keys.join(", ")),
                None,
            ),
            EventKind::CacheSaved {
                key,
                entry,
                files,
                bytes,
            } => {
                let key = key.as_deref().map_or(String::new(), |k| format!(" {k}"));
                self.line(
                    out,
                    at,
                    format!("Cache{key} saved to {entry}: {files} file(s), {bytes} bytes"),
                    Some(Style::Success),
                )
            }
            EventKind::ProcessesLeaked { processes } => {
                self.line(
                    out,
                    at,
                    format!(
                        "Ended {} process(es) the build left running:",
                        processes.len()
                    ),
                    Some(Style::Notice),
                );
                for p in processes {
                    self.line(out, at, format!("  pid {} {}", p.pid, p.command_line), None);
                }
            }
            EventKind::Logs { cloudwatch, s3 } => {
                if let Some(cw) = cloudwatch {
                    self.line(
                        out,
                        at,
                        format!(
                            "Logs streamed to CloudWatch Logs group {} stream {}: {}",
                            cw.group, cw.stream, cw.url
                        ),
                        None,
                    );
                }
                if let Some(url) = s3 {
                    self.line(out, at, format!("Logs saved to {url} at the end"), None);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_741_474_926_050_806 + micros)
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(timestamp(at(0)), "2025/03/08 23:02:06.050806");
        assert_eq!(timestamp(UNIX_EPOCH), "1970/01/01 00:00:00.000000");
    }
}
