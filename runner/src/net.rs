//! The network timeout shared by the registry client ([`crate::oci::registry`]) and the AWS
//! clients ([`crate::aws::sdk_config`]: S3, ECR, CloudWatch Logs...).
//!
//! A request that waits longer than [`timeout`] for the server (a connection that does not
//! open, an answer that does not come, a body that stops arriving) is abandoned and counts as a
//! transient failure: it is tried again with backoff like a 5xx answer. The default,
//! [`DEFAULT_TIMEOUT`], suits slow links; `BUILDAGENT_NETWORK_TIMEOUT` (seconds) changes it, for
//! tests that stall a server on purpose, or hosts that would rather fail fast.

use std::time::Duration;

/// The environment variable [`timeout`] reads: a number of seconds (`2`, `0.5`).
pub const TIMEOUT_VARIABLE: &str = "BUILDAGENT_NETWORK_TIMEOUT";

/// How long a request may wait for the server when [`TIMEOUT_VARIABLE`] is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest a connection may take to open: the timeout, at most 30 s (a server that does
/// not accept a connection in that time is not going to).
pub fn connect_timeout(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(30))
}

/// The timeout [`TIMEOUT_VARIABLE`] sets, else [`DEFAULT_TIMEOUT`]; an error naming the variable
/// when its value is not a positive number of seconds.
pub fn timeout() -> Result<Duration, String> {
    match std::env::var(TIMEOUT_VARIABLE) {
        Ok(text) if !text.trim().is_empty() => parse(&text),
        _ => Ok(DEFAULT_TIMEOUT),
    }
}

fn parse(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!(
                "{TIMEOUT_VARIABLE}=`{text}`: not a number of seconds between 0 and 86400 \
                 (such as 30 or 0.5)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_parsed_and_bad_values_named() {
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse(" 0.5 "), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "soon", "NaN", "inf", "100000"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(TIMEOUT_VARIABLE) && e.contains(bad), "{e}");
        }
        assert_eq!(connect_timeout(DEFAULT_TIMEOUT), Duration::from_secs(30));
        assert_eq!(
            connect_timeout(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
