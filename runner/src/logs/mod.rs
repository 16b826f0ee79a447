//! The build's log beyond the terminal: CodeBuild's log format, and sinks that stream it to
//! CloudWatch Logs and S3 while the build runs.
//!
//! - [`format`](mod@format): events → the CodeBuild-format log ([`format::Formatter`]). The
//!   terminal, the log file and every sink show the same text, masked before it became an event.
//! - [`buffer`]: the bounded queue between the build and a sink, spilling to a local file when
//!   the service is slow or down, so that a sink never slows or blocks the build; the build's
//!   thread only appends chunks of the log to it, a writer thread compresses what spills into
//!   the file, and the sink's thread cuts them into lines.
//! - [`cloudwatch`]: one log event per line, batches within the service's limits, retried.
//! - [`pacing`]: while the build keeps every CPU busy, a sink sends one batch a second and
//!   leaves the rest for when a CPU is free or the build has ended.
//! - [`s3`]: one gzip object at the end (or parts uploaded while the build runs).
//! - [`read`]: reading a stream back (and following it while the build runs).
//! - [`LogSinks`]: the sinks of one build together, fed with its events, ended within a timeout
//!   with the events that say what was not delivered.

pub mod buffer;
#[cfg(feature = "aws")]
pub mod cloudwatch;
pub mod format;
pub mod pacing;
#[cfg(feature = "aws")]
pub mod read;
#[cfg(feature = "aws")]
pub mod s3;

#[cfg(feature = "aws")]
use std::time::{Duration, SystemTime};

#[cfg(feature = "aws")]
use crate::events::{CloudWatchLogsLocation, Event, EventKind};

/// What a sink delivered by its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Lines (log events) that arrived.
    pub delivered: u64,
    /// Lines that did not (still queued, refused, or lost).
    pub undelivered: u64,
    /// Why not, when `undelivered` is not zero.
    pub error: Option<String>,
}

/// A `GROUP[:STREAM]` given to `--cloudwatch-logs` or `buildagent logs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamName {
    /// The log group.
    pub group: String,
    /// The log stream, when one was named.
    pub stream: Option<String>,
}

/// A `GROUP[:STREAM]` that CloudWatch Logs would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}`: {reason}")]
pub struct StreamNameError {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl std::str::FromStr for StreamName {
    type Err = StreamNameError;

    /// `GROUP` or `GROUP:STREAM`; a group is 1 to 512 of `A-Z a-z 0-9 _ - / . #`, a stream 1 to
    /// 512 characters without `:` or `*` (the service's rules).
    fn from_str(text: &str) -> Result<StreamName, StreamNameError> {
        let error = |reason: &str| StreamNameError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (group, stream) = match text.split_once(':') {
            Some((g, s)) => (g, Some(s)),
            None => (text, None),
        };
        if group.is_empty() || group.len() > 512 {
            return Err(error("a log group name is 1 to 512 characters"));
        }
        if let Some(c) = group
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_-/.#".contains(*c)))
        {
            return Err(error(&format!(
                "`{c}` cannot be in a log group name (letters, digits, `_ - / . #`)"
            )));
        }
        if let Some(stream) = stream {
            if stream.is_empty() || stream.len() > 512 {
                return Err(error("a log stream name is 1 to 512 characters"));
            }
            if stream.contains([':', '*']) {
                return Err(error("`:` and `*` cannot be in a log stream name"));
            }
        }
        Ok(StreamName {
            group: group.to_string(),
            stream: stream.map(str::to_string),
        })
    }
}

/// The stream's page in the AWS console of `region`.
pub fn console_url(region: &str, group: &str, stream: &str) -> String {
    // The console's fragment holds each name URL-encoded twice, with `$` for `%`.
    fn encode(name: &str) -> String {
        let once = percent_encode(name);
        percent_encode(&once).replace('%', "$")
    }
    let host = if region.starts_with("cn-") {
        format!("{region}.console.amazonaws.cn")
    } else if region.starts_with("us-gov-") {
        format!("{region}.console.amazonaws-us-gov.com")
    } else {
        format!("{region}.console.aws.amazon.com")
    };
    format!(
        "https://{host}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{}/log-events/{}",
        encode(group),
        encode(stream)
    )
}

/// Every byte but `A-Z a-z 0-9 - _ . ~` as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The sinks of one build, fed with its events (see the module docs).
#[cfg(feature = "aws")]
pub struct LogSinks {
    formatter: format::Formatter,
    cloudwatch: Option<(cloudwatch::CloudWatchSink, CloudWatchLogsLocation)>,
    s3: Option<(s3::S3Sink, String)>,
}

#[cfg(feature = "aws")]
impl LogSinks {
    /// The sinks given (either may be absent); `region` is the CloudWatch Logs region, for the
    /// console link.
    pub fn new(
        cloudwatch: Option<cloudwatch::CloudWatchSink>,
        region: &str,
        s3: Option<s3::S3Sink>,
    ) -> LogSinks {
        let cloudwatch = cloudwatch.map(|sink| {
            let location = CloudWatchLogsLocation {
                group: sink.group().to_string(),
                stream: sink.stream().to_string(),
                region: region.to_string(),
                url: console_url(region, sink.group(), sink.stream()),
            };
            (sink, location)
        });
        let s3 = s3.map(|sink| {
            let url = sink.url().to_string();
            (sink, url)
        });
        LogSinks {
            formatter: format::Formatter::new(),
            cloudwatch,
            s3,
        }
    }

    /// Whether there is no sink at all.
    pub fn is_empty(&self) -> bool {
        self.cloudwatch.is_none() && self.s3.is_none()
    }

    /// The [`EventKind::Logs`] event that says where the log goes.
    pub fn location(&self) -> EventKind {
        EventKind::Logs {
            cloudwatch: self.cloudwatch.as_ref().map(|(_, l)| l.clone()),
            s3: self.s3.as_ref().map(|(_, url)| url.clone()),
        }
    }

    /// Queues the log's text for `event`; never waits. This runs on the build's thread, so it
    /// does nothing per line: command output goes to the sinks' buffers as the chunk it came in
    /// (with the time it was read), and the sinks' threads cut it into lines.
    pub fn push(&mut self, event: &Event) {
        let (cloudwatch, s3) = (&self.cloudwatch, &self.s3);
        chunks(&mut self.formatter, event, |timestamp, bytes| {
            if let Some((sink, _)) = cloudwatch {
                sink.push(timestamp, bytes);
            }
            if let Some((sink, _)) = s3 {
                sink.push(timestamp, bytes);
            }
        });
    }

    /// Ends the sinks, waiting at most `timeout` for them together, and gives the events that
    /// say what was not delivered ([`EventKind::LogsUndelivered`] and a [`EventKind::Warning`]
    /// per sink that missed lines), stamped `at`, `elapsed` into the build.
    pub fn finish(mut self, timeout: Duration, at: SystemTime, elapsed: Duration) -> Vec<Event> {
        // Both end at once: the timeout is for the pair, not for each.
        let cloudwatch = self
            .cloudwatch
            .take()
            .map(|(sink, location)| std::thread::spawn(move || (sink.finish(timeout), location)));
        let s3 = self
            .s3
            .take()
            .map(|(sink, url)| (sink.finish(timeout), url));
        let mut events = Vec::new();
        let mut report = |sink: &str, whereto: String, delivery: Delivery| {
            if delivery.undelivered == 0 {
                return;
            }
            let reason = delivery.error.unwrap_or_default();
            events.push(Event::new(
                at,
                elapsed,
                EventKind::LogsUndelivered {
                    sink: sink.to_string(),
                    lines: delivery.undelivered,
                    delivered: delivery.delivered,
                    reason: reason.clone(),
                },
            ));
            events.push(Event::new(
                at,
                elapsed,
                EventKind::Warning {
                    message: format!(
                        "{} log line(s) were not delivered to {whereto} ({} were): {reason}",
                        delivery.undelivered, delivery.delivered
                    ),
                },
            ));
        };
        if let Some(thread) = cloudwatch {
            if let Ok((delivery, location)) = thread.join() {
                report(
                    "cloudwatch",
                    format!(
                        "CloudWatch Logs group {} stream {}",
                        location.group, location.stream
                    ),
                    delivery,
                );
            }
        }
        if let Some((delivery, url)) = s3 {
            report("s3", url, delivery);
        }
        events
    }
}

/// The log's text for `event` in chunks, each with its time in milliseconds since the Unix
/// epoch: an agent line whole, command output as it was read.
#[cfg(feature = "aws")]
fn chunks(formatter: &mut format::Formatter, event: &Event, mut send: impl FnMut(i64, &[u8])) {
    for piece in formatter.pieces(event) {
        match piece {
            format::Piece::Line { at, message, .. } => {
                let mut line = format::line_text(at, &message);
                line.push('\n');
                send(buffer::millis(at), line.as_bytes());
            }
            format::Piece::Output { at, bytes } => send(buffer::millis(at), bytes),
            format::Piece::Newline { at } => send(buffer::millis(at), b"\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "aws")]
    use crate::events::{Block, BuildPhase, CommandOutcome, Stream};
    #[cfg(feature = "aws")]
    use std::time::UNIX_EPOCH;

    #[cfg(feature = "aws")]
    #[test]
    fn lines_carry_the_time_of_their_first_byte() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(1_741_474_926_050 + ms);
        let output = |ms: u64, bytes: &[u8]| {
            Event::new(
                at(ms),
                Duration::ZERO,
                EventKind::Output {
                    stream: Stream::Stdout,
                    bytes: bytes.to_vec(),
                },
            )
        };
        let events = [
            Event::new(
                at(0),
                Duration::ZERO,
                EventKind::CommandStarted {
                    phase: BuildPhase::Build,
                    block: Block::Commands,
                    index: 0,
                    command: "make".into(),
                },
            ),
            output(1, b"one\ntw"),
            output(2, b"o\nthr\xff"),
            Event::new(
                at(3),
                Duration::ZERO,
                EventKind::CommandFinished {
                    phase: BuildPhase::Build,
                    block: Block::Commands,
                    index: 0,
                    outcome: CommandOutcome::Exited(2),
                    duration: Duration::ZERO,
                },
            ),
            output(4, b"tail"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let log = buffer::LogBuffer::new(1 << 20, 1, dir.path());
        let mut formatter = format::Formatter::new();
        for event in &events {
            chunks(&mut formatter, event, |t, bytes| log.push(t, bytes));
        }
        log.close();
        let mut cutter = buffer::LineCutter::new(usize::MAX);
        while log.take(&mut cutter) {}
        cutter.finish();
        let got: Vec<(i64, String)> = std::iter::from_fn(|| cutter.pop())
            .map(|e| (e.timestamp - 1_741_474_926_050, e.text))
            .collect();
        let want = [
            (0, "[Container] 2025/03/08 23:02:06.050000 Running command make\n"),
            (1, "one\n"),
            (1, "two\n"),
            (2, "thr\u{fffd}\n"),
            (3, "\n"),
            (
                3,
                "[Container] 2025/03/08 23:02:06.053000 Command did not exit successfully make exit status 2\n",
            ),
            (4, "tail"),
        ];
        let want: Vec<(i64, String)> = want.iter().map(|(t, s)| (*t, s.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!(log.stats().pushed, 7);
    }

    #[test]
    fn stream_names_follow_the_service_rules() {
        let n: StreamName = "/aws/codebuild/app:abc-123".parse().unwrap();
        assert_eq!(n.group, "/aws/codebuild/app");
        assert_eq!(n.stream.as_deref(), Some("abc-123"));
        let n: StreamName = "builds".parse().unwrap();
        assert_eq!(n.stream, None);
        let e = "my group".parse::<StreamName>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`my group`: ` ` cannot be in a log group name (letters, digits, `_ - / . #`)"
        );
        assert!("g:".parse::<StreamName>().is_err());
        assert!("g:a*b".parse::<StreamName>().is_err());
        assert!(":s".parse::<StreamName>().is_err());
    }

    #[test]
    fn console_links_encode_names_as_the_console_does() {
        assert_eq!(
            console_url("eu-west-1", "/aws/codebuild/app", "1f2e"),
            "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/$252Faws$252Fcodebuild$252Fapp/log-events/1f2e"
        );
        assert!(console_url("cn-north-1", "g", "s")
            .starts_with("https://cn-north-1.console.amazonaws.cn/"));
    }
}
