//! Undo: what amiguard deletes or deregisters goes to the Recycle Bin, restorable for
//! `RECYCLE_BIN_RETENTION_DAYS`.
//!
//! The stack's two retention rules (`AWS::Rbin::Rule`, one for EBS snapshots, one for AMIs)
//! select resources by a tag present *at deletion time*. amiguard writes that tag on each
//! resource right before it deletes or deregisters it, in `CreateTags` calls of up to 1,000 ids,
//! so the rules take in exactly what amiguard deletes and nothing a person deletes by hand. The
//! tag can only keep (a resource carrying it that anyone deletes goes to the bin): it never makes
//! amiguard delete anything.
//!
//! A resource whose tag could not be written is not deleted: a deletion amiguard could not make
//! undoable waits for the next run.

use chrono::{DateTime, Duration, Utc};
use std::future::Future;

use crate::config::{number_var, ConfigError, VarSource};
use crate::error::AwsError;
use crate::tags::Tag;

/// The tag the retention rules select (key and value, as `template.yaml`'s rules name them).
pub const TAG_KEY: &str = "amiguard:recycle-bin";
pub const TAG_VALUE: &str = "retain";
/// The variable the stack sets from `RecycleBinRetentionDays`.
pub const RETENTION_DAYS_VAR: &str = "RECYCLE_BIN_RETENTION_DAYS";
/// The longest undo amiguard offers (a rule may keep up to 3,650 days; what is in the bin stays
/// billed, and a year is long enough to notice a mistake). `RecycleBinRetentionDays` agrees.
pub const MAX_RETENTION_DAYS: u32 = 365;
/// `CreateTags` takes up to 1,000 resource ids a call.
pub const CREATE_TAGS_MAX_IDS: usize = 1000;

/// The stack's retention rules, as this function knows them: their retention in days, or none,
/// and whether they are in the region at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecycleBin {
    retention_days: u32,
    /// The stack's rules are in this region (its own). Elsewhere deletions are still tagged, so
    /// that a rule made there selecting the same tag keeps them, but no restore is promised.
    rules_here: bool,
}

/// No rules (what an unset `RECYCLE_BIN_RETENTION_DAYS` means).
impl Default for RecycleBin {
    fn default() -> Self {
        Self::retaining_for(0)
    }
}

impl RecycleBin {
    /// `RECYCLE_BIN_RETENTION_DAYS` (0-365; unset means 0: no rule is known to exist, so nothing
    /// is tagged and no report promises a restore).
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        Ok(Self::retaining_for(number_var(source, RETENTION_DAYS_VAR, 0, 0, MAX_RETENTION_DAYS)?))
    }

    /// Rules keeping what is deleted for `days` (0: no rules), in the region at hand.
    pub const fn retaining_for(days: u32) -> Self {
        Self { retention_days: days, rules_here: true }
    }

    /// The same rules seen from another region than theirs: deletions there are tagged all the
    /// same (a rule made in that region for the tag keeps them), but none is promised a restore.
    pub const fn elsewhere(self) -> Self {
        Self { rules_here: false, ..self }
    }

    /// Whether deletions are tagged for the rules.
    pub const fn is_on(&self) -> bool {
        self.retention_days > 0
    }

    /// Whether the stack's rules are in the region at hand (tagged deletions are restorable).
    pub const fn rules_here(&self) -> bool {
        self.is_on() && self.rules_here
    }

    pub const fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// Until when a resource deleted at `deleted_at` can be restored; `None` without rules in
    /// the region at hand.
    pub fn restorable_until(&self, deleted_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.rules_here().then(|| deleted_at + Duration::days(i64::from(self.retention_days)))
    }

    /// The tag the rules select.
    pub fn tag() -> Tag {
        Tag::new(TAG_KEY, TAG_VALUE)
    }

    /// Tags `ids` for the rules, `CREATE_TAGS_MAX_IDS` a call through `create_tags`, and answers
    /// which ids carry the tag now (all of them, or those of the calls that succeeded) with the
    /// first failure. With no rules it tags nothing and answers every id: deleting them is as
    /// undoable as it ever was.
    ///
    /// One resource EC2 refuses fails its whole call (`CreateTags` is all or nothing): a batch
    /// refused for one of its resources (gone, or at its 50 tags) is split in halves until the
    /// refused ones are alone, so they cannot hold back the other 999 run after run. A refusal
    /// that is not about a resource (denied, throttled) is not split: every batch would fail
    /// alike, and splitting would multiply the calls.
    pub async fn mark<F, Fut>(&self, ids: &[String], mut create_tags: F) -> (Vec<String>, Option<AwsError>)
    where
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<(), AwsError>>,
    {
        if !self.is_on() {
            return (ids.to_vec(), None);
        }
        let (mut marked, mut failure) = (Vec::with_capacity(ids.len()), None);
        // A stack of batches still to tag, the next on top, so that ids are tagged in order.
        let mut pending: Vec<&[String]> = ids.chunks(CREATE_TAGS_MAX_IDS).rev().collect();
        while let Some(batch) = pending.pop() {
            match create_tags(batch.to_vec()).await {
                Ok(()) => marked.extend_from_slice(batch),
                Err(err) if batch.len() > 1 && refuses_a_resource(&err) => {
                    let (first, second) = batch.split_at(batch.len() / 2);
                    pending.extend([second, first]);
                }
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        (marked, failure)
    }
}

/// Until when every one of a set of deletions is restorable, `restorable_until` being one more of
/// them: the earliest of their times (`None` only if none is restorable).
pub fn earliest(until: Option<DateTime<Utc>>, restorable_until: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (until, restorable_until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `CreateTags` failed for one of its resources rather than for the call: a resource
/// gone or malformed, or one that already has its 50 tags.
fn refuses_a_resource(err: &AwsError) -> bool {
    err.is_not_found()
        || err.code.ends_with(".Malformed")
        || ["TagLimitExceeded", "InvalidAMIID.Unavailable", "InvalidID"].iter().any(|code| err.has_code(code))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::cell::RefCell;

    fn days(value: Option<&str>) -> Result<RecycleBin, ConfigError> {
        let value = value.map(str::to_string);
        RecycleBin::from_env(&move |name: &str| if name == RETENTION_DAYS_VAR { value.clone() } else { None })
    }

    #[test]
    fn retention_comes_from_the_variable_unset_is_off_and_bad_values_name_it() {
        assert_eq!(days(None).unwrap(), RecycleBin::retaining_for(0));
        assert!(!days(None).unwrap().is_on());
        assert_eq!(days(Some("7")).unwrap().retention_days(), 7);
        assert!(days(Some("7")).unwrap().is_on());
        for bad in ["-1", "366", "a week"] {
            let err = days(Some(bad)).unwrap_err();
            assert!(err.to_string().contains(RETENTION_DAYS_VAR), "{err}");
        }
    }

    #[test]
    fn restorable_until_is_the_deletion_plus_the_retention_and_none_without_rules() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        assert_eq!(
            RecycleBin::retaining_for(7).restorable_until(at),
            Some(Utc.with_ymd_and_hms(2026, 12, 8, 10, 0, 0).unwrap())
        );
        assert_eq!(RecycleBin::retaining_for(0).restorable_until(at), None);
    }

    #[test]
    fn the_earliest_time_holds_for_every_deletion() {
        let (a, b) =
            (Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap());
        assert_eq!(earliest(Some(b), Some(a)), Some(a));
        assert_eq!(earliest(Some(a), Some(b)), Some(a));
        assert_eq!(earliest(None, Some(b)), Some(b));
        assert_eq!(earliest(Some(a), None), Some(a));
        assert_eq!(earliest(None, None), None);
    }

    #[test]
    fn outside_the_rules_region_deletions_are_tagged_but_promised_nothing() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let elsewhere = RecycleBin::retaining_for(7).elsewhere();
        assert!(elsewhere.is_on() && !elsewhere.rules_here());
        assert_eq!(elsewhere.restorable_until(at), None);
        assert!(RecycleBin::retaining_for(7).rules_here());
        assert!(!RecycleBin::retaining_for(0).rules_here());
    }

    /// Tags `ids` through a `CreateTags` that refuses, whole, any call holding one of `refused`
    /// with `code`; answers what got tagged, the first failure and each call's size.
    async fn mark_refusing(ids: &[String], refused: &[&str], code: &str) -> (Vec<String>, Option<String>, Vec<usize>) {
        let calls = RefCell::new(Vec::new());
        let (marked, failure) = RecycleBin::retaining_for(7)
            .mark(ids, |batch| {
                calls.borrow_mut().push(batch.len());
                let refuse = batch.iter().any(|id| refused.contains(&id.as_str()));
                let code = code.to_string();
                async move {
                    if refuse {
                        Err(AwsError::new("CreateTags", code, "refused"))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        (marked, failure.map(|e| e.code), calls.into_inner())
    }

    #[tokio::test]
    async fn one_resource_ec2_refuses_holds_back_only_itself() {
        let ids: Vec<String> = (0..1500).map(|n| format!("snap-{n:05}")).collect();
        for code in ["TagLimitExceeded", "InvalidSnapshot.NotFound", "InvalidAMIID.Unavailable"] {
            let (marked, failure, calls) = mark_refusing(&ids, &["snap-00777"], code).await;
            let expected: Vec<String> = ids.iter().filter(|id| *id != "snap-00777").cloned().collect();
            assert_eq!(marked, expected, "{code}: everything else tagged, in order");
            assert_eq!(failure.as_deref(), Some(code));
            // The refused batch is halved down to the one id (1000, 500, 250, ... 1): about
            // twenty calls more, instead of a thousand.
            assert!(calls.len() <= 2 + 2 * 10, "{code}: {calls:?}");
            assert!(calls.contains(&1), "{code}: the refused id is tried alone: {calls:?}");
        }
    }

    #[tokio::test]
    async fn a_refusal_of_the_call_itself_is_not_split() {
        let ids: Vec<String> = (0..1500).map(|n| format!("snap-{n:05}")).collect();
        let all: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (marked, failure, calls) = mark_refusing(&ids, &all, "UnauthorizedOperation").await;
        assert!(marked.is_empty());
        assert_eq!(failure.as_deref(), Some("UnauthorizedOperation"));
        assert_eq!(calls, vec![1000, 500], "one call a batch, as without the failure");
    }

    #[tokio::test]
    async fn marking_tags_a_thousand_ids_a_call_and_says_which_calls_failed() {
        let ids: Vec<String> = (0..2500).map(|n| format!("snap-{n:05}")).collect();
        let calls = RefCell::new(Vec::new());
        let (marked, failure) = RecycleBin::retaining_for(7)
            .mark(&ids, |batch| {
                calls.borrow_mut().push(batch.len());
                let second = calls.borrow().len() == 2;
                async move {
                    if second {
                        Err(AwsError::new("CreateTags", "RequestLimitExceeded", "slow down"))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert_eq!(*calls.borrow(), vec![1000, 1000, 500]);
        assert_eq!(marked.len(), 1500);
        assert!(!marked.contains(&ids[1000]) && !marked.contains(&ids[1999]));
        assert!(marked.contains(&ids[999]) && marked.contains(&ids[2000]));
        assert_eq!(failure.unwrap().code, "RequestLimitExceeded");
    }

    #[tokio::test]
    async fn without_rules_nothing_is_tagged_and_everything_may_go() {
        let ids = vec!["snap-1".to_string()];
        let (marked, failure) = RecycleBin::retaining_for(0)
            .mark(&ids, |_| async { Err::<(), _>(AwsError::new("CreateTags", "X", "must not be called")) })
            .await;
        assert_eq!((marked, failure.map(|e| e.code)), (ids, None));
    }
}
