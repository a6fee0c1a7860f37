//! When the instance stopped, by EC2's word: the time that names a stop's image, keys its record
//! and orders retention. An event's `time` is anyone's word (a direct invoke can send any), so it
//! only has to agree with EC2's (within [`EVENT_TOLERANCE`], and never in the future); where EC2
//! states no time, the event's serves only when it is not in the future and not before the
//! instance's last recorded stop.

use chrono::{DateTime, Duration, NaiveDateTime, SecondsFormat, Utc};

/// How far an event's time may be from EC2's stop time (EventBridge delivers late, never early;
/// a direct invoke may be off by a little).
pub const EVENT_TOLERANCE: Duration = Duration::minutes(15);

/// The stop time EC2 states in an instance's `StateTransitionReason`, in exactly the form AWS
/// writes it, `User initiated (2026-11-27 01:00:00 GMT)`, or moto's, `User initiated (2026-11-27
/// 01:00:00 UTC)`. Anything else states no time.
pub fn stated_by_ec2(reason: &str) -> Option<DateTime<Utc>> {
    let inner = reason.strip_prefix("User initiated (")?;
    let time = inner.strip_suffix(" GMT)").or_else(|| inner.strip_suffix(" UTC)"))?;
    // `YYYY-MM-DD HH:MM:SS`, digit for digit (chrono alone would take `2026-1-7 1:0:0`).
    let shape = time.len() == 19
        && time.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S").ok().map(|t| t.and_utc())
}

/// The stop a delivery acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopTime {
    /// EC2 states it, and the event agrees.
    Ec2(DateTime<Utc>),
    /// EC2 states none: the event's time, not in the future; it serves once the ledger says it is
    /// not before the instance's last recorded stop ([`not_before_last_recorded`]).
    EventOnly(DateTime<Utc>),
}

impl StopTime {
    pub fn time(self) -> DateTime<Utc> {
        match self {
            Self::Ec2(time) | Self::EventOnly(time) => time,
        }
    }
}

/// Why a delivery's time is not believed (the report's `reason`: both times, and nothing done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    InTheFuture { event: DateTime<Utc>, now: DateTime<Utc>, ec2: Option<DateTime<Utc>> },
    FarFromEc2 { event: DateTime<Utc>, ec2: DateTime<Utc> },
    BeforeLastRecordedStop { event: DateTime<Utc>, last: DateTime<Utc> },
}

fn shown(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nothing = "nothing is done for this event";
        match self {
            Self::InTheFuture { event, now, ec2 } => {
                let ec2 = ec2.map_or_else(|| "states no stop time".to_string(), |t| format!("says it stopped at {}", shown(t)));
                write!(f, "the event's time {} is in the future (now {}); EC2 {ec2}: {nothing}", shown(*event), shown(*now))
            }
            Self::FarFromEc2 { event, ec2 } => write!(
                f,
                "the event's time {} is more than 15 minutes from the stop time EC2 states, {}: {nothing}",
                shown(*event),
                shown(*ec2)
            ),
            Self::BeforeLastRecordedStop { event, last } => write!(
                f,
                "EC2 states no stop time, and the event's time {} is before the instance's last recorded stop, {}: {nothing}",
                shown(*event),
                shown(*last)
            ),
        }
    }
}

/// The stop a delivery dated `event` acts on, when EC2 states `ec2` (`None`: no time) and the
/// clock says `now`.
pub fn decide(ec2: Option<DateTime<Utc>>, event: DateTime<Utc>, now: DateTime<Utc>) -> Result<StopTime, Refused> {
    if event > now {
        return Err(Refused::InTheFuture { event, now, ec2 });
    }
    match ec2 {
        Some(ec2) if (event - ec2).abs() > EVENT_TOLERANCE => Err(Refused::FarFromEc2 { event, ec2 }),
        Some(ec2) => Ok(StopTime::Ec2(ec2)),
        None => Ok(StopTime::EventOnly(event)),
    }
}

/// An event's time without EC2's serves only if it is not before `last_recorded` (the latest
/// stop the instance's records hold): a redelivery of that very stop is not before it.
pub fn not_before_last_recorded(stop: StopTime, last_recorded: Option<DateTime<Utc>>) -> Result<StopTime, Refused> {
    match (stop, last_recorded) {
        (StopTime::EventOnly(event), Some(last)) if event < last => {
            Err(Refused::BeforeLastRecordedStop { event, last })
        }
        _ => Ok(stop),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, h, m, s).unwrap()
    }

    #[test]
    fn reads_aws_and_motos_forms_and_nothing_else() {
        assert_eq!(stated_by_ec2("User initiated (2026-11-27 01:00:00 GMT)"), Some(at(1, 0, 0)));
        assert_eq!(stated_by_ec2("User initiated (2026-11-27 13:54:12 UTC)"), Some(at(13, 54, 12)));
        for other in [
            "",
            "User initiated",
            "User initiated shutdown",
            "User initiated (2026-11-27 01:00:00)",
            "User initiated (2026-11-27 01:00:00 PST)",
            "User initiated (2026-11-27T01:00:00Z)",
            "User initiated (2026-1-27 01:00:00 GMT)",
            "User initiated (2026-11-27 1:00:00 GMT) ",
            " User initiated (2026-11-27 01:00:00 GMT)",
            "user initiated (2026-11-27 01:00:00 GMT)",
            "User initiated (2026-13-27 01:00:00 GMT)",
            "User initiated (2026-11-27 25:00:00 GMT)",
            "User initiated (+2026-11-27 01:00:00 GMT)",
            "Server.ScheduledStop: Stopped due to scheduled retirement",
            "User initiated (2026-11-27 01:00:00 GMT)(2099-01-01 00:00:00 GMT)",
        ] {
            assert_eq!(stated_by_ec2(other), None, "{other:?}");
        }
    }

    #[test]
    fn ec2s_time_names_the_stop_when_the_event_agrees() {
        let now = at(2, 0, 0);
        let ec2 = Some(at(1, 0, 0));
        assert_eq!(decide(ec2, at(1, 0, 20), now), Ok(StopTime::Ec2(at(1, 0, 0))));
        assert_eq!(decide(ec2, at(0, 45, 0), now), Ok(StopTime::Ec2(at(1, 0, 0))), "15 minutes either way");
        assert_eq!(decide(ec2, at(1, 15, 0), now), Ok(StopTime::Ec2(at(1, 0, 0))));
        assert_eq!(decide(ec2, at(1, 15, 1), now), Err(Refused::FarFromEc2 { event: at(1, 15, 1), ec2: at(1, 0, 0) }));
        assert_eq!(
            decide(ec2, at(0, 44, 59), now),
            Err(Refused::FarFromEc2 { event: at(0, 44, 59), ec2: at(1, 0, 0) })
        );
        let forged = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(decide(ec2, forged, now), Err(Refused::InTheFuture { event: forged, now, ec2 }));
        // Even a second ahead of the clock, even when EC2 agrees.
        assert!(matches!(decide(Some(at(2, 0, 1)), at(2, 0, 1), now), Err(Refused::InTheFuture { .. })));
    }

    #[test]
    fn without_ec2s_time_the_event_serves_only_from_the_last_recorded_stop_on() {
        let now = at(5, 0, 0);
        let stop = decide(None, at(3, 0, 0), now).unwrap();
        assert_eq!(stop, StopTime::EventOnly(at(3, 0, 0)));
        assert_eq!(not_before_last_recorded(stop, None), Ok(stop));
        assert_eq!(not_before_last_recorded(stop, Some(at(3, 0, 0))), Ok(stop), "a redelivery of the last stop");
        assert_eq!(not_before_last_recorded(stop, Some(at(2, 0, 0))), Ok(stop));
        assert_eq!(
            not_before_last_recorded(stop, Some(at(4, 0, 0))),
            Err(Refused::BeforeLastRecordedStop { event: at(3, 0, 0), last: at(4, 0, 0) })
        );
        // EC2's own time is never held to the records.
        assert_eq!(
            not_before_last_recorded(StopTime::Ec2(at(1, 0, 0)), Some(at(4, 0, 0))),
            Ok(StopTime::Ec2(at(1, 0, 0)))
        );
        assert!(matches!(decide(None, at(5, 0, 1), now), Err(Refused::InTheFuture { ec2: None, .. })));
    }

    #[test]
    fn a_refusal_names_both_times() {
        let far = Refused::FarFromEc2 { event: at(0, 0, 0), ec2: at(1, 0, 0) }.to_string();
        assert!(far.contains("2026-11-27T00:00:00Z") && far.contains("2026-11-27T01:00:00Z"), "{far}");
        let future = Refused::InTheFuture { event: at(9, 0, 0), now: at(1, 0, 0), ec2: Some(at(0, 59, 0)) }.to_string();
        assert!(future.contains("2026-11-27T09:00:00Z") && future.contains("2026-11-27T00:59:00Z"), "{future}");
        let before = Refused::BeforeLastRecordedStop { event: at(0, 0, 0), last: at(1, 0, 0) }.to_string();
        assert!(before.contains("2026-11-27T00:00:00Z") && before.contains("2026-11-27T01:00:00Z"), "{before}");
    }

    proptest! {
        /// Whatever the event says, the stop acted on is EC2's time when EC2 states one, never in
        /// the future of the clock when only the event's, and never before the last recorded stop.
        #[test]
        fn the_stop_is_ec2s_or_a_past_event_after_the_records(
            ec2 in prop::option::of(0i64..100_000),
            event in -1_000_000i64..5_000_000_000,
            now in 0i64..200_000,
            last in prop::option::of(0i64..200_000),
        ) {
            let t = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
            let decided = decide(ec2.map(t), t(event), t(now)).and_then(|s| not_before_last_recorded(s, last.map(t)));
            if let Ok(stop) = decided {
                prop_assert!(t(event) <= t(now));
                match (stop, ec2) {
                    (StopTime::Ec2(time), Some(ec2)) => {
                        prop_assert_eq!(time, t(ec2));
                        prop_assert!((t(event) - t(ec2)).abs() <= EVENT_TOLERANCE);
                    }
                    (StopTime::EventOnly(time), None) => {
                        prop_assert_eq!(time, t(event));
                        prop_assert!(last.is_none_or(|l| t(l) <= time));
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
