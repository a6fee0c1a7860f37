//! The grace clock: since when a snapshot is an orphan, by amiguard's own observation.
//!
//! A snapshot's `StartTime` says when it was taken, not when its AMI went away: an AMI of two
//! years deregistered by mistake five minutes before the sweep must not lose its snapshots in
//! that sweep. The clock starts when its AMI went away by the ledger's latest evidence (an
//! `EC2 AMI State Change` event, or the sweep that first found the AMI missing, or left the
//! Recycle Bin: [`GoneImage`]), else when the sweeper first saw the snapshot orphaned; a snapshot is
//! deletable only `MIN_AGE_HOURS` after that.

use chrono::{DateTime, Duration, Utc};

/// Since when the snapshot is an orphan. `deregistered` is when its AMI went away, by the latest
/// evidence the ledger holds; it wins over `first_seen` (the ledger's record of the first sweep
/// that saw the snapshot orphaned; `None`: this sweep is the first), which may be older than a
/// restore of the AMI. A deregistration time that cannot be right (before the snapshot was taken,
/// or in the future) is not used.
pub fn orphaned_since(
    first_seen: Option<DateTime<Utc>>,
    deregistered: Option<DateTime<Utc>>,
    start_time: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match deregistered {
        Some(at) if at >= start_time && at <= now => at,
        _ => first_seen.unwrap_or(now).min(now),
    }
}

/// When an orphan since `since` becomes deletable.
pub fn deletable_after(since: DateTime<Utc>, min_age: Duration) -> DateTime<Utc> {
    since + min_age
}

/// What the ledger says of an own image that is gone.
pub struct GoneImage {
    /// The sweep that first found it missing.
    pub gone_at: DateTime<Utc>,
    /// The last sweep that listed it: it was registered then.
    pub last_live: DateTime<Utc>,
    /// The sweep that first found it out of the Recycle Bin again.
    pub left_bin_at: Option<DateTime<Utc>>,
    /// It was (or is) in the Recycle Bin.
    pub binned: bool,
}

impl GoneImage {
    /// When the image went away, by the latest evidence. A deregistration event counts only if it
    /// happened after the image was last seen registered (an older one is from before a restore);
    /// an image that was in the Recycle Bin went away when it left the bin, since its snapshots
    /// were kept while it was there.
    pub fn deregistered_at(&self, event: Option<DateTime<Utc>>) -> DateTime<Utc> {
        if self.binned {
            return self.left_bin_at.unwrap_or(self.gone_at).max(self.gone_at);
        }
        match event {
            Some(at) if at >= self.last_live && at <= self.gone_at => at,
            _ => self.gone_at,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap() + Duration::hours(hours)
    }

    #[test]
    fn an_old_snapshot_first_seen_orphaned_now_waits_the_whole_grace_period() {
        // Taken two years ago, its AMI deregistered five minutes before this first look.
        let since = orphaned_since(None, None, t(-2 * 365 * 24), t(0));
        assert_eq!(since, t(0));
        assert_eq!(deletable_after(since, Duration::hours(24)), t(24));
    }

    #[test]
    fn the_latest_deregistration_starts_the_clock_else_the_first_sighting() {
        assert_eq!(orphaned_since(Some(t(-30)), None, t(-100), t(0)), t(-30));
        // The event before the first sighting: EC2 says when it went.
        assert_eq!(orphaned_since(Some(t(-30)), Some(t(-40)), t(-100), t(0)), t(-40));
        // A sighting older than the deregistration belongs to an earlier absence (a restore since).
        assert_eq!(orphaned_since(Some(t(-300)), Some(t(-2)), t(-400), t(0)), t(-2));
        assert_eq!(orphaned_since(None, Some(t(-2)), t(-100), t(0)), t(-2));
        // An impossible event time is ignored: before the snapshot existed, or in the future.
        assert_eq!(orphaned_since(None, Some(t(-200)), t(-100), t(0)), t(0));
        assert_eq!(orphaned_since(Some(t(-3)), Some(t(5)), t(-100), t(0)), t(-3));
        // A record from a skewed clock in the future counts as now.
        assert_eq!(orphaned_since(Some(t(7)), None, t(-100), t(0)), t(0));
    }

    #[test]
    fn a_gone_image_went_away_at_the_latest_evidence() {
        let gone = GoneImage { gone_at: t(48), last_live: t(24), left_bin_at: None, binned: false };
        // An event between the last sweep that listed it and the one that missed it: EC2's time.
        assert_eq!(gone.deregistered_at(Some(t(30))), t(30));
        // No event, or one from before it was last seen live (an earlier absence): the sweep's.
        assert_eq!(gone.deregistered_at(None), t(48));
        assert_eq!(gone.deregistered_at(Some(t(10))), t(48));
        assert_eq!(gone.deregistered_at(Some(t(50))), t(48));
        // A binned image went away when it left the bin, whatever the event says.
        let binned = GoneImage { binned: true, left_bin_at: Some(t(200)), ..gone };
        assert_eq!(binned.deregistered_at(Some(t(30))), t(200));
        assert_eq!(GoneImage { left_bin_at: None, ..binned }.deregistered_at(Some(t(30))), t(48));
    }

    proptest! {
        /// The clock never starts before anything amiguard observed, nor after now: no input
        /// makes a snapshot deletable before MIN_AGE_HOURS of observed orphanhood.
        #[test]
        fn the_clock_starts_only_at_an_observation(
            start in -1000i64..0,
            first_seen in prop::option::of(-1000i64..100),
            deregistered in prop::option::of(-1100i64..100),
            min_age in 0i64..100,
        ) {
            let now = t(0);
            let since = orphaned_since(first_seen.map(t), deregistered.map(t), t(start), now);
            prop_assert!(since <= now);
            let observed: Vec<DateTime<Utc>> = first_seen.map(t).into_iter()
                .chain(deregistered.map(t).filter(|d| *d >= t(start)))
                .chain(std::iter::once(now))
                .collect();
            prop_assert!(observed.iter().any(|o| since == (*o).min(now)), "{since} is not an observation");
            if let Some(d) = deregistered.map(t).filter(|d| *d >= t(start) && *d <= now) {
                prop_assert_eq!(since, d, "the latest deregistration decides");
            }
            prop_assert!(since >= t(start).min(first_seen.map(t).unwrap_or(now)), "before the snapshot existed");
            let deletable = now >= deletable_after(since, Duration::hours(min_age));
            if first_seen.is_none() && deregistered.is_none() {
                prop_assert_eq!(deletable, min_age == 0, "a first sighting deletes only with MIN_AGE_HOURS=0");
            }
        }
    }
}
