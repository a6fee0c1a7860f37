//! The records of staged retirement in the ledger (`retirement#<region>`, one item per image):
//! the stage amiguard took and when, the stage it is about to take (written before the call),
//! the launch permissions recorded before disabling, the usage report it asked for, and how the
//! retirement ended. Functions over any [`LedgerStore`]: the flow reads a region's records once
//! and writes one image's record before and after each of its calls.

use std::collections::BTreeMap;

use amiguard::ledger::{keys, Condition, Item, LedgerStore, TTL_ATTRIBUTE};
use amiguard::AwsError;
use chrono::{DateTime, Duration, Utc};

use crate::core::{LaunchPermissions, Stage, StageRecord};

/// How long the record of an image deregistered, or of a retirement that ended, is kept: longer
/// than any `RETIRE_UNUSED_AMIS_AFTER_DAYS` pause a person would set, and than the Recycle Bin.
pub const KEEP_ENDED: Duration = Duration::days(400);

const STAGE: &str = "stage";
const STAGE_AT: &str = "stage_at";
const BEGAN_AT: &str = "began_at";
const CANDIDATE_SINCE: &str = "candidate_since";
const INTENDED: &str = "intended_stage";
const INTENDED_AT: &str = "intended_at";
const PERMISSIONS_RECORDED: &str = "launch_permissions_recorded";
const USERS: &str = "launch_permission_accounts";
const ORGS: &str = "launch_permission_organizations";
const UNITS: &str = "launch_permission_units";
const REPORT_ID: &str = "usage_report_id";
const REPORT_PERMISSIONS: &str = "usage_report_permissions_recorded";
const REPORT_USERS: &str = "usage_report_accounts";
const REPORT_ORGS: &str = "usage_report_organizations";
const REPORT_UNITS: &str = "usage_report_units";
const ENDED_AT: &str = "ended_at";
const ENDED_WHY: &str = "ended_why";
const BY: &str = "by_run";
const EVIDENCE: &str = "evidence";
const DEPRECATED_BY_AMIGUARD: &str = "deprecated_by_amiguard";
const VERSION: &str = "record_version";

/// Every retirement record of the region, by image id.
pub async fn read_records(store: &impl LedgerStore, region: &str) -> Result<BTreeMap<String, StageRecord>, AwsError> {
    let mut records = BTreeMap::new();
    store
        .query(&keys::retirement(region), "", &mut |item| {
            if let Some(record) = from_item(&item) {
                records.insert(item.sk.clone(), record);
            }
        })
        .await?;
    Ok(records)
}

/// Writes `record` of `image_id` as its next version, by the run `run_id`, with the evidence it
/// acted on in words: only if the ledger still holds the version read (`record.version`; a
/// record never read is written over a forgotten one or none). Another writer's record in
/// between: an error, nothing written.
pub async fn write_record(
    store: &impl LedgerStore,
    region: &str,
    image_id: &str,
    record: &StageRecord,
    run_id: &str,
    evidence: &str,
) -> Result<(), AwsError> {
    let next = StageRecord { version: record.version + 1, ..record.clone() };
    let item = to_item(region, image_id, &next).with_s(BY, run_id).with_s(EVIDENCE, evidence);
    let condition = match record.version {
        0 => Condition::Always,
        read => Condition::Equals { attribute: VERSION, value: read.to_string() },
    };
    match store.put(&item, &condition).await? {
        amiguard::ledger::Written::Yes => Ok(()),
        amiguard::ledger::Written::ConditionFailed => Err(AwsError::new(
            "PutItem",
            "ConditionalCheckFailedException",
            format!("the retirement record of {image_id} changed since it was read (version {})", record.version),
        )),
    }
}

/// Forgets the record of `image_id` (a candidate that is one no more, at `at`): overwritten by an
/// item without a stage, which reads as no record, and expires (a PutItem: the role deletes nothing).
pub async fn forget_record(
    store: &impl LedgerStore,
    region: &str,
    image_id: &str,
    at: DateTime<Utc>,
) -> Result<(), AwsError> {
    let item = Item::new(keys::retirement(region), image_id)
        .with_time("forgotten_at", at)
        .with_n(TTL_ATTRIBUTE, (at + KEEP_ENDED).timestamp());
    store.put(&item, &Condition::Always).await.map(|_| ())
}

pub fn to_item(region: &str, image_id: &str, record: &StageRecord) -> Item {
    let mut item = Item::new(keys::retirement(region), image_id)
        .with_s(STAGE, record.stage.name())
        .with_time(CANDIDATE_SINCE, record.candidate_since)
        .with_opt_s(REPORT_ID, record.report_id.clone())
        .with_s(VERSION, record.version.to_string());
    for (name, time) in [(STAGE_AT, record.stage_at), (BEGAN_AT, record.began_at)] {
        if let Some(time) = time {
            item = item.with_time(name, time);
        }
    }
    if let Some((stage, at)) = record.intended {
        item = item.with_s(INTENDED, stage.name()).with_time(INTENDED_AT, at);
    }
    if let Some(permissions) = &record.permissions {
        item = item
            .with(PERMISSIONS_RECORDED, amiguard::ledger::Value::Bool(true))
            .with_list(USERS, permissions.user_ids.iter().cloned())
            .with_list(ORGS, permissions.organization_arns.iter().cloned())
            .with_list(UNITS, permissions.organizational_unit_arns.iter().cloned());
    }
    if let Some(permissions) = &record.report_permissions {
        item = item
            .with(REPORT_PERMISSIONS, amiguard::ledger::Value::Bool(true))
            .with_list(REPORT_USERS, permissions.user_ids.iter().cloned())
            .with_list(REPORT_ORGS, permissions.organization_arns.iter().cloned())
            .with_list(REPORT_UNITS, permissions.organizational_unit_arns.iter().cloned());
    }
    if record.deprecated_by_amiguard {
        item = item.with(DEPRECATED_BY_AMIGUARD, amiguard::ledger::Value::Bool(true));
    }
    if let Some((at, why)) = &record.ended {
        item = item.with_time(ENDED_AT, *at).with_s(ENDED_WHY, why.clone());
    }
    let ended_or_gone = record.ended.as_ref().map(|(at, _)| *at).or(match record.stage {
        Stage::Deregistered => record.stage_at,
        _ => None,
    });
    match ended_or_gone {
        Some(at) => item.with_n(TTL_ATTRIBUTE, (at + KEEP_ENDED).timestamp()),
        None => item,
    }
}

pub fn from_item(item: &Item) -> Option<StageRecord> {
    let stage = Stage::from_name(item.s(STAGE)?)?;
    let intended = match (item.s(INTENDED).and_then(Stage::from_name), item.time(INTENDED_AT)) {
        (Some(stage), Some(at)) => Some((stage, at)),
        _ => None,
    };
    let list = |name| item.list(name).unwrap_or_default().iter().cloned().collect();
    let permissions = (item.bool(PERMISSIONS_RECORDED) == Some(true)).then(|| LaunchPermissions {
        user_ids: list(USERS),
        organization_arns: list(ORGS),
        organizational_unit_arns: list(UNITS),
        public: false,
    });
    let report_permissions = (item.bool(REPORT_PERMISSIONS) == Some(true)).then(|| LaunchPermissions {
        user_ids: list(REPORT_USERS),
        organization_arns: list(REPORT_ORGS),
        organizational_unit_arns: list(REPORT_UNITS),
        public: false,
    });
    let ended = match (item.time(ENDED_AT), item.s(ENDED_WHY)) {
        (Some(at), why) => Some((at, why.unwrap_or_default().to_string())),
        _ => None,
    };
    Some(StageRecord {
        stage,
        stage_at: item.time(STAGE_AT),
        began_at: item.time(BEGAN_AT),
        candidate_since: item.time(CANDIDATE_SINCE).unwrap_or(DateTime::<Utc>::MIN_UTC),
        intended,
        permissions,
        report_id: item.s(REPORT_ID).map(str::to_string),
        report_permissions,
        ended,
        deprecated_by_amiguard: item.bool(DEPRECATED_BY_AMIGUARD) == Some(true),
        // A record written before versions: 0 (its next write is the last unconditional one).
        version: item.s(VERSION).and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_record_reads_back_as_written_with_its_permissions_and_intent() {
        let at = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let record = StageRecord {
            stage: Stage::Deprecated,
            stage_at: Some(at),
            began_at: Some(at),
            candidate_since: at - Duration::days(1),
            intended: Some((Stage::Disabled, at + Duration::days(14))),
            permissions: Some(LaunchPermissions {
                user_ids: ["111111111111".to_string()].into(),
                organization_arns: ["arn:aws:organizations::123456789012:organization/o-abc".to_string()].into(),
                organizational_unit_arns: ["arn:aws:organizations::123456789012:ou/o-abc/ou-1".to_string()].into(),
                public: false,
            }),
            report_id: Some("amiur-1".into()),
            report_permissions: Some(LaunchPermissions {
                user_ids: ["111111111111".to_string(), "222222222222".to_string()].into(),
                ..LaunchPermissions::default()
            }),
            ended: None,
            deprecated_by_amiguard: true,
            version: 3,
        };
        let item = to_item("us-east-1", "ami-1", &record);
        assert_eq!((item.pk.as_str(), item.sk.as_str()), ("retirement#us-east-1", "ami-1"));
        assert_eq!(from_item(&item), Some(record.clone()));
        assert!(item.n(TTL_ATTRIBUTE).is_none(), "a retirement under way never expires");
        let ended = StageRecord { ended: Some((at, "launched".into())), permissions: None, ..record };
        let item = to_item("us-east-1", "ami-1", &ended);
        assert_eq!(from_item(&item), Some(ended));
        assert_eq!(item.n(TTL_ATTRIBUTE), Some((at + KEEP_ENDED).timestamp()));
    }

    #[tokio::test]
    async fn a_record_is_written_only_over_the_version_read() {
        let ledger = amiguard::ledger::memory::MemoryLedger::new();
        let at = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let read = StageRecord::candidate(at);
        write_record(&ledger, "us-east-1", "ami-1", &read, "run-1", "").await.unwrap();
        let first = read_records(&ledger, "us-east-1").await.unwrap()["ami-1"].clone();
        assert_eq!(first.version, 1);
        // Another writer records the permissions meanwhile.
        let shared =
            LaunchPermissions { user_ids: ["111111111111".to_string()].into(), ..LaunchPermissions::default() };
        let theirs = StageRecord { permissions: Some(shared.clone()), ..first.clone() };
        write_record(&ledger, "us-east-1", "ami-1", &theirs, "run-2", "").await.unwrap();
        // A write from the stale read (permissions emptied) is refused, and theirs stays.
        let stale = StageRecord { permissions: Some(LaunchPermissions::default()), ..first };
        let refused = write_record(&ledger, "us-east-1", "ami-1", &stale, "run-1", "").await.unwrap_err();
        assert_eq!(refused.code, "ConditionalCheckFailedException");
        let now = read_records(&ledger, "us-east-1").await.unwrap()["ami-1"].clone();
        assert_eq!((now.permissions, now.version), (Some(shared), 2));
    }

    #[test]
    fn no_permissions_recorded_is_not_an_empty_record_of_them() {
        let record = StageRecord::candidate(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        assert_eq!(from_item(&to_item("us-east-1", "ami-1", &record)).unwrap().permissions, None);
        let unshared = StageRecord { permissions: Some(LaunchPermissions::default()), ..record };
        assert_eq!(
            from_item(&to_item("us-east-1", "ami-1", &unshared)).unwrap().permissions,
            Some(LaunchPermissions::default())
        );
    }
}
