//! Per-event measures: completeness (from the contract's required fields) and freshness (now −
//! event time), with a clock that tests and `check --now` can set. Pure: no I/O.

mod clock;

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use self::clock::{Clock, FixedClock, SystemClock};
use crate::contract::RecordView;
pub use crate::contract::RequiredFields;
pub use crate::contract::required::Completeness;

/// Event time of a record: the first of `fields` that holds an RFC 3339 string or epoch
/// milliseconds (Avro `timestamp-millis`).
pub fn event_time<'a>(record: impl RecordView<'a>, fields: &[String]) -> Option<OffsetDateTime> {
    fields.iter().find_map(|f| {
        let value = record.member(f)?;
        if let Some(s) = value.as_str() {
            return OffsetDateTime::parse(s, &Rfc3339).ok();
        }
        let ms = i128::from(value.as_number()?.as_i64()?);
        OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()
    })
}

/// Milliseconds since the Unix epoch, rounded down (Kafka timestamps, stored event times, window
/// bounds). Every `OffsetDateTime` fits: its years stay within ±9999.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
}

/// Freshness: how old the event is at `now`. An event from the future is zero seconds old.
pub fn freshness(event_time: OffsetDateTime, now: OffsetDateTime) -> Duration {
    let age = now - event_time;
    if age.is_negative() { Duration::ZERO } else { age.unsigned_abs() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn event_time_prefers_the_first_field_present() {
        let fields = vec!["updated_at".to_owned(), "created_at".to_owned()];
        let r = json!({"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:05Z"});
        assert_eq!(event_time(&r, &fields), Some(datetime!(2026-01-01 00:00:05 UTC)));
        let r = json!({"created_at": "2026-01-01T00:00:00Z"});
        assert_eq!(event_time(&r, &fields), Some(datetime!(2026-01-01 00:00:00 UTC)));
        let r = json!({"created_at": 1_767_225_600_000_i64});
        assert_eq!(event_time(&r, &fields), Some(datetime!(2026-01-01 00:00:00 UTC)));
        assert_eq!(event_time(&json!({"created_at": "yesterday"}), &fields), None);
    }

    #[test]
    fn freshness_is_age_and_never_negative() {
        let now = datetime!(2026-01-01 00:00:10 UTC);
        assert_eq!(freshness(datetime!(2026-01-01 00:00:07.5 UTC), now), Duration::from_millis(2_500));
        assert_eq!(freshness(datetime!(2026-01-01 00:01:00 UTC), now), Duration::ZERO);
    }
}
