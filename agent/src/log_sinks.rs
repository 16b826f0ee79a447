//! `--cloudwatch-logs`, `--s3-logs`: the build's log sinks, started before the build and ended
//! before its summary.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use buildagent_runner::events::{Event, EventKind};
use buildagent_runner::logs::cloudwatch::{CloudWatchOptions, CloudWatchSink};
use buildagent_runner::logs::s3::{S3Options, S3Sink};
use buildagent_runner::logs::{LogSinks, StreamName};
use buildagent_runner::s3::{S3Client, S3Url};

use crate::cli::RunArgs;
use crate::run::InvalidInput;

/// The sink flags, checked before anything runs.
pub struct SinkArgs {
    cloudwatch: Option<StreamName>,
    s3: Option<S3Url>,
    stream_s3: bool,
    timeout: Duration,
}

impl SinkArgs {
    /// Reads and checks the flags (invalid input names the flag).
    pub fn parse(args: &RunArgs) -> anyhow::Result<SinkArgs> {
        let invalid = |m: String| anyhow::Error::new(InvalidInput(m));
        let timeout = buildagent_runner::plan::parse_duration(&args.log_flush_timeout)
            .map_err(|e| invalid(format!("--log-flush-timeout: {e}")))?;
        let cloudwatch = match &args.cloudwatch_logs {
            Some(text) => Some(
                text.parse::<StreamName>()
                    .map_err(|e| invalid(format!("--cloudwatch-logs {e}")))?,
            ),
            None => None,
        };
        let s3 = match &args.s3_logs {
            Some(text) => Some(
                text.parse::<S3Url>()
                    .map_err(|e| invalid(format!("--s3-logs: {e}")))?,
            ),
            None => None,
        };
        Ok(SinkArgs {
            cloudwatch,
            s3,
            stream_s3: args.s3_logs_stream,
            timeout,
        })
    }

    /// Starts the sinks asked for (none: `None`); `uuid` names the default stream and the S3
    /// object, `region` is the build's (used when the environment names none).
    pub async fn start(&self, uuid: &str, region: &str) -> anyhow::Result<Option<SinkHook>> {
        if self.cloudwatch.is_none() && self.s3.is_none() {
            return Ok(None);
        }
        let config = buildagent_runner::aws::sdk_config(region).await;
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| region.to_string());
        let work_dir = std::env::temp_dir();
        let cloudwatch = match &self.cloudwatch {
            Some(name) => {
                let stream = name.stream.clone().unwrap_or_else(|| uuid.to_string());
                let mut options = CloudWatchOptions::new(&name.group, &stream);
                options.spill_dir = work_dir.clone();
                // What was sent, for the tests (moto does not enforce the limits).
                options.batch_record =
                    std::env::var_os("BUILDAGENT_TEST_CWL_BATCHES").map(Into::into);
                Some(
                    CloudWatchSink::start(&config, options)
                        .context("starting the CloudWatch Logs sink")?,
                )
            }
            None => None,
        };
        let s3 = match &self.s3 {
            Some(url) => {
                let mut options = S3Options::new(&url.bucket, &url.key(&format!("{uuid}.gz")));
                options.stream = self.stream_s3;
                options.work_dir = work_dir;
                let client = S3Client::from_env(&region).await;
                Some(S3Sink::start(client, options).context("starting the S3 log sink")?)
            }
            None => None,
        };
        Ok(Some(SinkHook {
            sinks: Some(LogSinks::new(cloudwatch, &region, s3)),
            timeout: self.timeout,
        }))
    }
}

/// Feeds the sinks with the build's events and adds the sinks' own events to the stream the
/// renderers see.
pub struct SinkHook {
    sinks: Option<LogSinks>,
    timeout: Duration,
}

impl SinkHook {
    /// The events to render for `event`, in order: the sinks' end (before the build's
    /// summary), `event`, and where the log goes (after the build's start).
    pub fn around(&mut self, event: Event) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some(sinks) = self.sinks.as_mut() {
            sinks.push(&event);
        }
        if matches!(event.kind, EventKind::BuildFinished { .. }) {
            events.extend(self.finish(event.elapsed));
        }
        let started = matches!(event.kind, EventKind::BuildStarted { .. });
        let (at, elapsed) = (event.at, event.elapsed);
        events.push(event);
        if started {
            if let Some(sinks) = self.sinks.as_mut() {
                let logs = Event::new(at, elapsed, sinks.location());
                sinks.push(&logs);
                events.push(logs);
            }
        }
        events
    }

    /// Ends the sinks (waiting at most the flush timeout): the events that say what was not
    /// delivered. Nothing the second time.
    pub fn finish(&mut self, elapsed: Duration) -> Vec<Event> {
        match self.sinks.take() {
            Some(sinks) => sinks.finish(self.timeout, SystemTime::now(), elapsed),
            None => Vec::new(),
        }
    }
}
