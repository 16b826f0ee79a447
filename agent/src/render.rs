//! Drawing build events for people (CodeBuild's log lines, optionally coloured, with a summary)
//! and for machines (JSON lines).

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use buildagent_runner::events::{BuildStatus, Event, EventKind, PhaseSummary};
pub use buildagent_runner::logs::format::timestamp;
use buildagent_runner::logs::format::{Formatter, Piece, Style};

/// Something that shows events.
pub trait Reporter {
    /// Shows one event.
    fn report(&mut self, event: &Event) -> io::Result<()>;
}

/// CodeBuild's log: `[Container] YYYY/MM/DD HH:MM:SS.ffffff message`, command output raw (the
/// runner's [`Formatter`] decides the text; this draws it, with colour and a summary).
pub struct CodeBuildLog<W: Write> {
    out: W,
    color: bool,
    summary: bool,
    formatter: Formatter,
    /// The exported variables, shown in the summary.
    exported: Vec<(String, String)>,
    /// The report groups' summary lines, shown in the summary.
    reports: Vec<String>,
    /// Where the log went besides here, shown in the summary.
    logs: Vec<String>,
}

impl<W: Write> CodeBuildLog<W> {
    /// A log on `out`; `color` adds ANSI colour, `summary` a phase table at the end.
    pub fn new(out: W, color: bool, summary: bool) -> CodeBuildLog<W> {
        CodeBuildLog {
            out,
            color,
            summary,
            formatter: Formatter::new(),
            exported: Vec::new(),
            reports: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn line(&mut self, at: SystemTime, message: &str, style: Option<Style>) -> io::Result<()> {
        let stamp = timestamp(at);
        match (self.color, style.map(ansi)) {
            (true, Some(code)) => writeln!(
                self.out,
                "\x1b[2m[Container] {stamp}\x1b[0m {code}{message}\x1b[0m"
            )?,
            (true, None) => writeln!(self.out, "\x1b[2m[Container] {stamp}\x1b[0m {message}")?,
            (false, _) => writeln!(self.out, "[Container] {stamp} {message}")?,
        }
        Ok(())
    }

    fn table(
        &mut self,
        status: BuildStatus,
        duration: Duration,
        phases: &[PhaseSummary],
    ) -> io::Result<()> {
        writeln!(self.out)?;
        writeln!(
            self.out,
            "{:<18} {:<10} {:>10}",
            "PHASE", "STATUS", "DURATION"
        )?;
        for p in phases {
            let status = p.status.as_str();
            let painted = self.paint_status(status);
            let pad = 10usize.saturating_sub(status.len());
            writeln!(
                self.out,
                "{:<18} {painted}{} {:>10}",
                p.phase.as_str(),
                " ".repeat(pad),
                secs(p.duration)
            )?;
        }
        for (name, value) in &self.exported {
            writeln!(self.out, "exported {name}={value}")?;
        }
        for line in &self.reports {
            writeln!(self.out, "{}", line.replacen("Report group", "report", 1))?;
        }
        for line in &self.logs {
            writeln!(self.out, "{line}")?;
        }
        let painted = self.paint_status(status.as_str());
        writeln!(self.out, "build {painted} in {}", secs(duration))?;
        Ok(())
    }

    fn paint_status(&self, status: &str) -> String {
        if !self.color {
            return status.to_string();
        }
        let code = match status {
            "SUCCEEDED" => "\x1b[32m",
            "FAILED" | "FAULT" => "\x1b[1;31m",
            _ => "\x1b[33m",
        };
        format!("{code}{status}\x1b[0m")
    }
}

/// The ANSI code of a line's style.
fn ansi(style: Style) -> &'static str {
    match style {
        Style::Heading => "\x1b[1m",
        Style::Command => "\x1b[36m",
        Style::Success => "\x1b[32m",
        Style::Failure => "\x1b[1;31m",
        Style::Notice => "\x1b[33m",
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

impl<W: Write> Reporter for CodeBuildLog<W> {
    fn report(&mut self, event: &Event) -> io::Result<()> {
        for piece in self.formatter.pieces(event) {
            match piece {
                Piece::Line { at, message, style } => {
                    if matches!(event.kind, EventKind::ReportGroupFinished { .. }) {
                        self.reports.push(message.clone());
                    }
                    self.line(at, &message, style)?;
                }
                Piece::Output { bytes, .. } => self.out.write_all(bytes)?,
                Piece::Newline { .. } => self.out.write_all(b"\n")?,
            }
        }
        match &event.kind {
            EventKind::VariablesExported { variables } => {
                self.exported = variables
                    .iter()
                    .map(|v| (v.name.clone(), v.value.clone()))
                    .collect();
            }
            EventKind::Logs { cloudwatch, s3 } => {
                if let Some(cw) = cloudwatch {
                    self.logs.push(format!(
                        "logs cloudwatch {}:{} {}",
                        cw.group, cw.stream, cw.url
                    ));
                }
                if let Some(url) = s3 {
                    self.logs.push(format!("logs s3 {url}"));
                }
            }
            EventKind::LogsUndelivered { sink, lines, .. } => {
                self.logs
                    .push(format!("logs {sink}: {lines} line(s) not delivered"));
            }
            EventKind::BuildFinished {
                status,
                duration,
                phases,
            } if self.summary => {
                self.table(*status, *duration, phases)?;
            }
            _ => {}
        }
        if !matches!(event.kind, EventKind::Output { .. }) {
            self.out.flush()?;
        }
        Ok(())
    }
}

/// One JSON object per event and line.
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    /// JSON lines on `out`.
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines { out }
    }
}

impl<W: Write> Reporter for JsonLines<W> {
    fn report(&mut self, event: &Event) -> io::Result<()> {
        event.write_json_line(&mut self.out)?;
        if !matches!(event.kind, EventKind::Output { .. }) {
            self.out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildagent_runner::events::{BuildPhase, CommandOutcome, PhaseContext, PhaseStatus};
    use std::time::UNIX_EPOCH;

    fn event(kind: EventKind) -> Event {
        Event::new(
            UNIX_EPOCH + Duration::from_micros(1_741_474_926_050_806),
            Duration::ZERO,
            kind,
        )
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_micros(1_741_474_926_050_806)),
            "2025/03/08 23:02:06.050806"
        );
        assert_eq!(timestamp(UNIX_EPOCH), "1970/01/01 00:00:00.000000");
    }

    #[test]
    fn report_groups_have_a_line_and_a_summary_row() {
        let mut out = Vec::new();
        let mut log = CodeBuildLog::new(&mut out, false, true);
        log.report(&event(EventKind::ReportGroupFinished {
            group: "unit".into(),
            format: "JUNITXML".into(),
            total: 12,
            passed: 11,
            failed: 1,
            skipped: 0,
            errors: 0,
            duration: Duration::from_millis(1230),
            line_coverage: None,
            files: 2,
        }))
        .unwrap();
        log.report(&event(EventKind::ReportGroupFinished {
            group: "cov".into(),
            format: "COBERTURAXML".into(),
            total: 0,
            passed: 0,
            failed: 0,
            skipped: 0,
            errors: 0,
            duration: Duration::ZERO,
            line_coverage: Some(87.5),
            files: 1,
        }))
        .unwrap();
        log.report(&event(EventKind::BuildFinished {
            status: BuildStatus::Succeeded,
            duration: Duration::from_secs(1),
            phases: Vec::new(),
        }))
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let t = "[Container] 2025/03/08 23:02:06.050806";
        assert!(
            out.starts_with(&format!(
            "{t} Report group unit: 12 tests, 11 passed, 1 failed, 0 skipped, 0 errors (1.23 s)\n\
             {t} Report group cov: line coverage 87.50%\n"
        )),
            "{out}"
        );
        assert!(out.contains("\nreport unit: 12 tests, 11 passed, 1 failed, 0 skipped, 0 errors (1.23 s)\nreport cov: line coverage 87.50%\nbuild SUCCEEDED"), "{out}");
    }

    #[test]
    fn cache_lines_name_the_key_the_entry_and_its_size() {
        let mut out = Vec::new();
        let mut log = CodeBuildLog::new(&mut out, false, false);
        log.report(&event(EventKind::CacheMissed {
            keys: vec!["npm-1".into(), "npm-*".into()],
        }))
        .unwrap();
        log.report(&event(EventKind::CacheRestored {
            key: Some("npm-1".into()),
            entry: "/c/keys/npm-1.tar.zst".into(),
            files: 3,
            bytes: 120,
        }))
        .unwrap();
        log.report(&event(EventKind::CacheSaved {
            key: None,
            entry: "/c/default.tar.zst".into(),
            files: 1,
            bytes: 2,
        }))
        .unwrap();
        let t = "[Container] 2025/03/08 23:02:06.050806";
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{t} Cache miss (tried: npm-1, npm-*)\n\
                 {t} Cache npm-1 restored from /c/keys/npm-1.tar.zst: 3 file(s), 120 bytes\n\
                 {t} Cache saved to /c/default.tar.zst: 1 file(s), 2 bytes\n"
            )
        );
    }

    #[test]
    fn artifact_lines_name_the_artifact_and_its_size() {
        let mut out = Vec::new();
        let mut log = CodeBuildLog::new(&mut out, false, false);
        for identifier in [None, Some("docs".to_string())] {
            log.report(&event(EventKind::ArtifactUploaded {
                identifier,
                path: "/out/a.zip".into(),
                files: 3,
                bytes: 120,
            }))
            .unwrap();
        }
        let t = "[Container] 2025/03/08 23:02:06.050806";
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{t} Primary artifact written to /out/a.zip: 3 file(s), 120 bytes\n\
                 {t} Secondary artifact docs written to /out/a.zip: 3 file(s), 120 bytes\n"
            )
        );
    }

    #[test]
    fn codebuild_lines_are_exact() {
        let mut out = Vec::new();
        let mut log = CodeBuildLog::new(&mut out, false, false);
        for kind in [
            EventKind::PhaseStarted {
                phase: BuildPhase::Build,
            },
            EventKind::CommandStarted {
                phase: BuildPhase::Build,
                block: buildagent_runner::events::Block::Commands,
                index: 0,
                command: "false".into(),
            },
            EventKind::Output {
                stream: buildagent_runner::events::Stream::Stdout,
                bytes: b"no newline".to_vec(),
            },
            EventKind::CommandFinished {
                phase: BuildPhase::Build,
                block: buildagent_runner::events::Block::Commands,
                index: 0,
                outcome: CommandOutcome::Exited(1),
                duration: Duration::ZERO,
            },
            EventKind::PhaseFinished {
                phase: BuildPhase::Build,
                status: PhaseStatus::Failed,
                duration: Duration::ZERO,
                context: Some(PhaseContext {
                    code: "COMMAND_EXECUTION_ERROR".into(),
                    message: "Error while executing command: false. Reason: exit status 1".into(),
                }),
            },
            EventKind::PhaseFinished {
                phase: BuildPhase::PostBuild,
                status: PhaseStatus::Succeeded,
                duration: Duration::ZERO,
                context: None,
            },
        ] {
            log.report(&event(kind)).unwrap();
        }
        let t = "[Container] 2025/03/08 23:02:06.050806";
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{t} Entering phase BUILD\n{t} Running command false\nno newline\n\n{t} Command did not exit successfully false exit status 1\n\
                 {t} Phase complete: BUILD State: FAILED\n{t} Phase context status code: COMMAND_EXECUTION_ERROR Message: Error while executing command: false. Reason: exit status 1\n\
                 {t} Phase complete: POST_BUILD State: SUCCEEDED\n{t} Phase context status code:  Message: \n"
            )
        );
    }
}
