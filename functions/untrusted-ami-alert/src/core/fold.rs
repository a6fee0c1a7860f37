//! No storm: launch alerts for one image fold after the first three in an hour. An Auto Scaling
//! group that keeps replacing instances from an untrusted image would otherwise send one message
//! per instance without limit. The first three launches of an image in a clock hour alert one by
//! one, the fourth sends a follow-up saying that more are folded, and the rest are counted only:
//! their instances' alert records stay unsent, so the next audit's digest lists every one of them.
//! Enforcement is never folded.
//!
//! Here the decisions, pure: the hour, and what the n-th launch alert of an image in it is. The
//! slots themselves are conditional writes in the ledger (the first writer of a slot has it:
//! `Records::claim_slot`); without a ledger nothing folds (a duplicate beats silence).

use chrono::{DateTime, Utc};

/// Launch alerts of one image sent one by one in a clock hour.
pub const ALERTS_PER_HOUR: u32 = 3;

/// The slots of an image's hour: its alerts sent one by one, then the follow-up.
pub const SLOTS_PER_HOUR: u32 = ALERTS_PER_HOUR + 1;

/// The clock hour `now` is in, as the slots' key.
pub fn hour(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H").to_string()
}

/// What a launch alert is, by its place among the image's launch alerts this hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchAlert {
    /// One of the first three of the hour: alert as usual.
    Alert,
    /// The fourth: the follow-up that says more are folded.
    FollowUp,
    /// Counted, not sent: the audit's digest lists it.
    Folded,
}

impl LaunchAlert {
    /// The `n`-th launch alert of an image this hour (1-based).
    pub fn nth(n: u32) -> Self {
        if n <= ALERTS_PER_HOUR {
            Self::Alert
        } else if n == SLOTS_PER_HOUR {
            Self::FollowUp
        } else {
            Self::Folded
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn three_alerts_a_follow_up_then_folded() {
        let kinds: Vec<LaunchAlert> = (1..=6).map(LaunchAlert::nth).collect();
        use LaunchAlert::{Alert, Folded, FollowUp};
        assert_eq!(kinds, [Alert, Alert, Alert, FollowUp, Folded, Folded]);
        assert_eq!(LaunchAlert::nth(u32::MAX), Folded);
    }

    #[test]
    fn the_hour_is_the_clock_hour() {
        assert_eq!(hour(Utc.with_ymd_and_hms(2026, 5, 1, 10, 59, 59).unwrap()), "20260501T10");
    }
}
