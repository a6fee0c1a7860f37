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

/// The stack's retention rules, as this function knows them: their retention in days, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecycleBin {
    retention_days: u32,
}

impl RecycleBin {
    /// `RECYCLE_BIN_RETENTION_DAYS` (0-365; unset means 0: no rule is known to exist, so nothing
    /// is tagged and no report promises a restore).
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        Ok(Self::retaining_for(number_var(source, RETENTION_DAYS_VAR, 0, 0, MAX_RETENTION_DAYS)?))
    }

    /// Rules keeping what is deleted for `days` (0: no rules).
    pub const fn retaining_for(days: u32) -> Self {
        Self { retention_days: days }
    }

    /// Whether deletions are tagged for the rules.
    pub const fn is_on(&self) -> bool {
        self.retention_days > 0
    }

    pub const fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// Until when a resource deleted at `deleted_at` can be restored; `None` without rules.
    pub fn restorable_until(&self, deleted_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.is_on().then(|| deleted_at + Duration::days(i64::from(self.retention_days)))
    }

    /// The tag the rules select.
    pub fn tag() -> Tag {
        Tag::new(TAG_KEY, TAG_VALUE)
    }

    /// Tags `ids` for the rules, `CREATE_TAGS_MAX_IDS` a call through `create_tags`, and answers
    /// which ids carry the tag now (all of them, or those of the calls that succeeded) with the
    /// first failure. With no rules it tags nothing and answers every id: deleting them is as
    /// undoable as it ever was.
    pub async fn mark<F, Fut>(&self, ids: &[String], mut create_tags: F) -> (Vec<String>, Option<AwsError>)
    where
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<(), AwsError>>,
    {
        if !self.is_on() {
            return (ids.to_vec(), None);
        }
        let (mut marked, mut failure) = (Vec::with_capacity(ids.len()), None);
        for batch in ids.chunks(CREATE_TAGS_MAX_IDS) {
            match create_tags(batch.to_vec()).await {
                Ok(()) => marked.extend_from_slice(batch),
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        (marked, failure)
    }
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
