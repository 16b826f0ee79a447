//! Calendar time in UTC, for everything the agent writes with a date: event timestamps, log
//! lines and zip entries.

use std::time::{SystemTime, UNIX_EPOCH};

pub use time::OffsetDateTime;

/// `t` as a UTC calendar time; times before the Unix epoch or beyond what a calendar date can
/// hold give the epoch itself, so no clock or file time can make the agent fail.
pub fn utc(t: SystemTime) -> OffsetDateTime {
    let nanos = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calendar_fields() {
        let t = utc(UNIX_EPOCH + Duration::from_micros(1_741_474_926_050_806));
        assert_eq!((t.year(), u8::from(t.month()), t.day()), (2025, 3, 8));
        assert_eq!(
            (t.hour(), t.minute(), t.second(), t.microsecond()),
            (23, 2, 6, 50_806)
        );
        assert_eq!(
            utc(UNIX_EPOCH - Duration::from_secs(5)),
            OffsetDateTime::UNIX_EPOCH
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)),
            OffsetDateTime::UNIX_EPOCH
        );
    }
}
