//! Reading a build's log back from CloudWatch Logs, and following it while the build runs.

use std::time::Duration;

use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_cloudwatchlogs::types::OrderBy;

/// A log that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot read CloudWatch Logs group {group}{}: {message}", stream.as_ref().map(|s| format!(" stream {s}")).unwrap_or_default())]
pub struct ReadError {
    /// The log group.
    pub group: String,
    /// The log stream, when known.
    pub stream: Option<String>,
    /// What the service said.
    pub message: String,
}

fn describe(error: &(impl ProvideErrorMetadata + std::error::Error)) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(error).to_string(),
    }
}

/// The stream of `group` with the latest event (the last build's, when each build has its own).
pub async fn latest_stream(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
) -> Result<String, ReadError> {
    let error = |message: String| ReadError {
        group: group.to_string(),
        stream: None,
        message,
    };
    let out = client
        .describe_log_streams()
        .log_group_name(group)
        .order_by(OrderBy::LastEventTime)
        .descending(true)
        .limit(1)
        .send()
        .await
        .map_err(|e| error(describe(&e.into_service_error())))?;
    out.log_streams()
        .first()
        .and_then(|s| s.log_stream_name())
        .map(str::to_string)
        .ok_or_else(|| error("the group has no log streams".to_string()))
}

/// How [`read_available`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Available {
    /// Every event the stream holds for now was read.
    AtEnd,
    /// `on_event` asked to stop.
    Stopped,
    /// The stream does not exist (yet: a build names it before its first line arrives); the
    /// service's answer, for a caller that does not wait for it.
    NoStream(ReadError),
}

/// Calls `on_event(timestamp_ms, message)` for each event of the stream after `token` (from its
/// start when `None`), page after page, up to the end of what the stream holds now, or until
/// `on_event` returns `false`; `token` is advanced past what was read, so a later call goes on
/// from there.
pub async fn read_available(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    token: &mut Option<String>,
    mut on_event: impl FnMut(i64, &str) -> bool,
) -> Result<Available, ReadError> {
    loop {
        let out = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let e = e.into_service_error();
                let error = ReadError {
                    group: group.to_string(),
                    stream: Some(stream.to_string()),
                    message: describe(&e),
                };
                if e.code() == Some("ResourceNotFoundException") {
                    return Ok(Available::NoStream(error));
                }
                return Err(error);
            }
        };
        for event in out.events() {
            if !on_event(
                event.timestamp().unwrap_or(0),
                event.message().unwrap_or(""),
            ) {
                return Ok(Available::Stopped);
            }
        }
        let next = out.next_forward_token().map(str::to_string);
        // The same token again: the end of what the stream holds for now.
        let at_end = next.is_none() || next == *token || out.events().is_empty();
        if next.is_some() {
            *token = next;
        }
        if at_end {
            return Ok(Available::AtEnd);
        }
    }
}

/// Calls `on_event(timestamp_ms, message)` for each event of the stream from its start; with
/// `follow`, keeps polling every `follow` for new events until `on_event` returns `false`
/// (without, returns at the end of what is there). Following, a stream that does not exist yet
/// is waited for.
pub async fn read_stream(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    follow: Option<Duration>,
    mut on_event: impl FnMut(i64, &str) -> bool,
) -> Result<(), ReadError> {
    let mut token: Option<String> = None;
    loop {
        match read_available(client, group, stream, &mut token, &mut on_event).await? {
            Available::Stopped => return Ok(()),
            Available::NoStream(error) if follow.is_none() => return Err(error),
            Available::AtEnd | Available::NoStream(_) => match follow {
                None => return Ok(()),
                Some(poll) => tokio::time::sleep(poll).await,
            },
        }
    }
}

/// A CloudWatch Logs client configured from the environment ([`crate::aws::sdk_config`]);
/// `default_region` is used when neither the environment nor the profile names a region.
pub async fn client_from_env(default_region: &str) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&crate::aws::sdk_config(default_region).await)
}
