//! Staged, reversible retirement (`RETIRE_STAGES`, issue 22): an unused own image is deprecated,
//! then disabled, then deregistered, one stage a run at most, each after `RETIRE_DWELL_DAYS`; use
//! seen while it is in a stage undoes amiguard's own stage, and a person's `EnableImage` (or
//! removed deprecation) ends it.
//!
//! Pure: the image as EC2 lists it, the ledger's record of its retirement and this run's evidence
//! in, one [`Verdict`] out. What acts comes from EC2's fields and the ledger: a tag, a name or a
//! description only ever keeps. A shared image advances only on an AMI usage report (EC2's view of
//! every account) that is `available`, unexpired, covers every account it is shared with, is new
//! enough, and shows no use; an unshared one on the in-account evidence of today's retirement.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::retire::ImageKeepReason;
pub use super::usage_reports::{report_evidence, Asked, LaunchPermissions, UsageEntry, UsageReport};
use amiguard::tags::{self, Tag};

/// The tag EC2 Image Builder writes on the images it makes: the image's ARN.
pub const IMAGE_BUILDER_TAG: &str = "Ec2ImageBuilderArn";

/// Where an image is in its retirement, as amiguard took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Active,
    Deprecated,
    Disabled,
    Deregistered,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Active => "active",
            Stage::Deprecated => "deprecated",
            Stage::Disabled => "disabled",
            Stage::Deregistered => "deregistered",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Stage::Active, Stage::Deprecated, Stage::Disabled, Stage::Deregistered].into_iter().find(|s| s.name() == name)
    }
}

/// `RETIRE_STAGES`: the stages retirement takes, in order, always ending with deregistration
/// (`deprecate,disable,deregister` by default; `deregister` alone is the one-step retirement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages(Vec<Stage>);

impl Default for Stages {
    fn default() -> Self {
        Self(vec![Stage::Deprecated, Stage::Disabled, Stage::Deregistered])
    }
}

impl Stages {
    /// The verbs of `RETIRE_STAGES` in order, each once, ending with `deregister`; `None` otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        let mut stages = Vec::new();
        for word in text.split(',').map(str::trim) {
            let stage = match word {
                "deprecate" => Stage::Deprecated,
                "disable" => Stage::Disabled,
                "deregister" => Stage::Deregistered,
                _ => return None,
            };
            if stages.last().is_some_and(|last| *last >= stage) {
                return None;
            }
            stages.push(stage);
        }
        (stages.last() == Some(&Stage::Deregistered)).then_some(Self(stages))
    }

    /// Today's one-step retirement: deregistration only (`flow::retirement`, unchanged).
    pub fn is_one_step(&self) -> bool {
        self.0 == [Stage::Deregistered]
    }

    /// The stage after `stage` (`None` after deregistration).
    pub fn after(&self, stage: Stage) -> Option<Stage> {
        self.0.iter().copied().find(|s| *s > stage)
    }
}

/// The settings of staged retirement.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePolicy {
    pub stages: Stages,
    /// `RETIRE_UNUSED_AMIS_AFTER_DAYS`: younger or more recently launched images are kept, and a
    /// retirement that ended is not begun again for this long.
    pub unused_for: Duration,
    /// `RETIRE_DWELL_DAYS`: the least time between two stages.
    pub dwell: Duration,
    /// `USAGE_REPORT_LAG_DAYS`: a usage report is evidence for a later stage only when made at
    /// least this long after the previous stage was taken (launch templates lag a few days).
    pub lag: Duration,
    /// `PROTECT_TAG`: an image carrying it (any letter case) is kept.
    pub protect_tag: String,
    /// `RETIRE_IMAGE_BUILDER_IMAGES`: Image Builder's images are left to its own lifecycle unless set.
    pub image_builder_images: bool,
    /// `USAGE_REPORT_TEMPLATE_DEPTH`: a report is evidence only if it read launch templates at
    /// least this deep (and instances).
    pub template_depth: u32,
}

/// What the stages read of an own image, as `DescribeImages` lists it (disabled ones included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedImage {
    pub image_id: String,
    pub name: String,
    /// EC2's state: `available`, `disabled`, `pending`, ...
    pub state: String,
    pub public: bool,
    pub creation_date: Option<DateTime<Utc>>,
    pub last_launched_time: Option<DateTime<Utc>>,
    /// EC2's `DeprecationTime` (rounded to the minute by EC2: never compared with the ledger's).
    pub deprecation_time: Option<DateTime<Utc>>,
    pub deregistration_protection: Option<String>,
    pub snapshot_ids: Vec<String>,
    /// The sizes of its EBS volumes: what its snapshots hold at most.
    pub gib: u64,
    /// Every tag: families read the `RETIRE_FAMILY_TAG` and `Ec2ImageBuilderArn` values (to keep).
    pub tags: Vec<Tag>,
}

/// The ledger's record of one image's retirement (`retirement#<region>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRecord {
    /// The last stage amiguard took (`Active`: a candidate, none taken yet).
    pub stage: Stage,
    /// When it took `stage` (the run's clock).
    pub stage_at: Option<DateTime<Utc>>,
    /// When it took the first stage: a launch after this is use.
    pub began_at: Option<DateTime<Utc>>,
    /// When the image first became a candidate: a report for the first stage is made after it.
    pub candidate_since: DateTime<Utc>,
    /// A stage recorded before its call (`None` once the call is known done): it was taken if EC2
    /// shows it, else it was not.
    pub intended: Option<(Stage, DateTime<Utc>)>,
    /// The launch permissions recorded before disabling: what an `EnableImage` must put back.
    pub permissions: Option<LaunchPermissions>,
    /// The usage report amiguard asked for and has not read yet: the only report that is
    /// evidence for a stage.
    pub report_id: Option<String>,
    /// The launch permissions the image had when amiguard asked for `report_id` (for a disabled
    /// image, the recorded ones): a report is evidence only while today's are within them.
    pub report_permissions: Option<LaunchPermissions>,
    /// When and why the retirement ended (undone on use, or by a person); it is not begun again
    /// for `RETIRE_UNUSED_AMIS_AFTER_DAYS` after.
    pub ended: Option<(DateTime<Utc>, String)>,
    /// amiguard deprecated the image (its own deprecation: removed when the retirement ends).
    pub deprecated_by_amiguard: bool,
    /// The version of the record as read (0: none read): a write takes the next one only if the
    /// ledger still holds this one (no last writer wins over recorded permissions).
    pub version: u64,
}

impl StageRecord {
    pub fn candidate(now: DateTime<Utc>) -> Self {
        Self {
            stage: Stage::Active,
            stage_at: None,
            began_at: None,
            candidate_since: now,
            intended: None,
            permissions: None,
            report_id: None,
            report_permissions: None,
            ended: None,
            deprecated_by_amiguard: false,
            version: 0,
        }
    }

    /// Whether the image's deprecation is amiguard's own: it took (or was taking) that stage.
    pub fn deprecation_is_amiguards(&self) -> bool {
        self.deprecated_by_amiguard
            || self.stage == Stage::Deprecated
            || matches!(self.intended, Some((Stage::Deprecated, _)))
    }

    /// The stage in effect: an intended one counts once EC2 shows it (the run that took it ended
    /// before recording it done). Answers the stage and when it was taken.
    pub fn effective(&self, image: &StagedImage) -> (Stage, Option<DateTime<Utc>>) {
        match self.intended {
            Some((Stage::Deprecated, at)) if image.deprecation_time.is_some() => (Stage::Deprecated, Some(at)),
            Some((Stage::Disabled, at)) if image.state == "disabled" => (Stage::Disabled, Some(at)),
            _ => (self.stage, self.stage_at),
        }
    }
}

/// This run's evidence of one image's use; `None`: not asked or the call failed (keeps it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// An instance of this account that is not terminated runs it.
    pub used_by_instance: bool,
    /// A launch template's default or latest version of this account launches it.
    pub used_by_launch_template: bool,
    /// `DescribeImageReferences` found it in use in this account.
    pub referenced: Option<bool>,
    /// Its launch permissions now.
    pub permissions: Option<LaunchPermissions>,
    /// One of its snapshots has a create-volume permission.
    pub snapshot_shared: Option<bool>,
    /// The usage reports of the image read this run.
    pub reports: Vec<UsageReport>,
    /// Whether its usage reports were listed this run (`reports` is then all of them).
    pub reports_read: bool,
}

/// What this run does with one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a candidate (and in no stage amiguard took): counted by reason.
    Keep(ImageKeepReason),
    /// A candidate or in a stage, not advancing now.
    Wait {
        waiting_for: String,
        next_at: Option<DateTime<Utc>>,
        /// Ask EC2 for a usage report now (none live of amiguard's; its evidence is due).
        request_report: bool,
    },
    /// Take the next stage.
    Advance(Stage),
    /// Use seen while in amiguard's stage: undo it (and put the recorded sharing back).
    Undo(String),
    /// A person ended amiguard's stage: put back the recorded sharing, record, stop.
    EndedByPerson(String),
    /// A candidate found used in another account: no stage taken, not considered again for a while.
    Spared(String),
}

/// The decision for one image. `newest_of_family`: the image is among the newest
/// `RETIRE_KEEP_NEWEST` of its family (see `families`).
pub fn decide(
    image: &StagedImage,
    record: Option<&StageRecord>,
    evidence: &Evidence,
    newest_of_family: bool,
    policy: &StagePolicy,
    now: DateTime<Utc>,
) -> Verdict {
    if image.public {
        // Never retired; a stage amiguard took on it before it was made public is undone.
        let live = record.filter(|r| r.ended.is_none()).map(|r| r.effective(image).0);
        if matches!(live, Some(Stage::Deprecated | Stage::Disabled)) {
            return Verdict::Undo("made public while in amiguard's stage: public images are never retired".into());
        }
        return Verdict::Keep(ImageKeepReason::Public);
    }
    if let Some((ended_at, _)) = record.and_then(|r| r.ended.as_ref()) {
        if !ended_long_enough(*ended_at, policy, now) {
            return Verdict::Keep(ImageKeepReason::RetirementEnded);
        }
    }
    let record = record.filter(|r| r.ended.is_none());
    let (stage, stage_at) = record.map_or((Stage::Active, None), |r| r.effective(image));
    if stage == Stage::Deregistered {
        // Listed again after amiguard deregistered it: a person restored it from the Recycle Bin.
        return Verdict::EndedByPerson(
            "restored from the Recycle Bin by someone else after amiguard deregistered it".into(),
        );
    }
    if let (Some(record), Stage::Deprecated | Stage::Disabled) = (record, stage) {
        return decide_in_stage(image, record, stage, stage_at, evidence, newest_of_family, policy, now);
    }
    if let Err(reason) = candidate(image, evidence, newest_of_family, policy, now) {
        return Verdict::Keep(reason);
    }
    let since = record.map_or(now, |r| r.candidate_since);
    advance_or_wait(image, record, Stage::Active, since, evidence.permissions.as_ref(), evidence, policy, now)
}

/// Whether a retirement that ended (`ended_at`) may begin again.
pub fn ended_long_enough(ended_at: DateTime<Utc>, policy: &StagePolicy, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(ended_at) >= policy.unused_for
}

/// An image in a stage amiguard took: a person's change ends it, use undoes it, otherwise it
/// advances when its dwell and evidence allow.
#[allow(clippy::too_many_arguments)]
fn decide_in_stage(
    image: &StagedImage,
    record: &StageRecord,
    stage: Stage,
    stage_at: Option<DateTime<Utc>>,
    evidence: &Evidence,
    newest_of_family: bool,
    policy: &StagePolicy,
    now: DateTime<Utc>,
) -> Verdict {
    if stage == Stage::Disabled && image.state == "available" {
        return Verdict::EndedByPerson(
            "enabled again by someone else (EnableImage) while amiguard had it disabled".into(),
        );
    }
    if stage == Stage::Deprecated && image.deprecation_time.is_none() && image.state == "available" {
        return Verdict::EndedByPerson(
            "its deprecation was removed by someone else while amiguard had it deprecated".into(),
        );
    }
    // Any other state than the one amiguard left (a person's DisableImage, `error`, ...): not
    // amiguard's to go on with, and a disabled image's emptied permissions say nothing of its sharing.
    let left = if stage == Stage::Deprecated { "available" } else { "disabled" };
    if image.state != left {
        return Verdict::EndedByPerson(format!(
            "found {} while amiguard had it {}: changed by someone else; amiguard's retirement stops",
            image.state,
            stage.name()
        ));
    }
    let began = record.began_at.or(stage_at).unwrap_or(now);
    if let Some(use_seen) = use_since(image, evidence, began) {
        return Verdict::Undo(use_seen);
    }
    if let Err(reason) = holds(image, newest_of_family, policy) {
        // A keep rule never keeps it broken: amiguard's stage is undone.
        return Verdict::Undo(format!("kept now ({}): amiguard's stage undone", reason_name(reason)));
    }
    if evidence.referenced != Some(false) {
        let waiting_for = "references unknown: DescribeImageReferences did not answer for it this run".to_string();
        return Verdict::Wait { waiting_for, next_at: None, request_report: false };
    }
    // Once disabled, EC2 has removed its launch permissions: the recorded ones say who could use it.
    let permissions =
        if stage >= Stage::Disabled { record.permissions.as_ref() } else { evidence.permissions.as_ref() };
    if permissions.is_some_and(|p| p.public) {
        return Verdict::Undo("made public while in amiguard's stage: public images are never retired".into());
    }
    let at = stage_at.unwrap_or(now);
    advance_or_wait(image, Some(record), stage, at, permissions, evidence, policy, now)
}

/// The use seen since `began`, in words; `None` when none.
fn use_since(image: &StagedImage, evidence: &Evidence, began: DateTime<Utc>) -> Option<String> {
    if let Some(at) = image.last_launched_time.filter(|at| *at > began) {
        return Some(format!("launched at {} (LastLaunchedTime), after its retirement began", at.to_rfc3339()));
    }
    if evidence.used_by_instance {
        return Some("an instance of this account runs it".into());
    }
    if evidence.used_by_launch_template {
        return Some("a launch template of this account launches it".into());
    }
    if evidence.referenced == Some(true) {
        return Some("DescribeImageReferences found it in use in this account".into());
    }
    let report = evidence.reports.iter().find(|r| r.state == "available" && r.uses().next().is_some())?;
    let uses: Vec<String> =
        report.uses().map(|e| format!("{} {} x{}", e.account_id, e.resource_type, e.usage_count)).collect();
    Some(format!("usage report {} shows use: {}", report.report_id, uses.join(", ")))
}

/// The rules that keep an image whatever its stage: what a person said (a tag only keeps) and
/// what EC2 says of it.
fn holds(image: &StagedImage, newest_of_family: bool, policy: &StagePolicy) -> Result<(), ImageKeepReason> {
    use ImageKeepReason::*;
    if image.tags.iter().any(|t| t.key.eq_ignore_ascii_case(&policy.protect_tag)) {
        return Err(Protected);
    }
    if tags::value(&image.tags, tags::CREATED_BY) == Some(tags::CREATED_BY_SNAPSHOT_ON_STOP) {
        return Err(CreatedBySnapshotOnStop);
    }
    if !policy.image_builder_images && tags::value(&image.tags, IMAGE_BUILDER_TAG).is_some() {
        return Err(LeftToImageBuilder);
    }
    if newest_of_family {
        return Err(NewestOfFamily);
    }
    if image.deregistration_protection.as_deref().is_some_and(|p| p != "disabled") {
        return Err(DeregistrationProtected);
    }
    Ok(())
}

/// Whether an image in no stage is a candidate: today's rules of in-account use and age, plus
/// families, Image Builder, and a deprecation a person set (left alone).
fn candidate(
    image: &StagedImage,
    evidence: &Evidence,
    newest_of_family: bool,
    policy: &StagePolicy,
    now: DateTime<Utc>,
) -> Result<(), ImageKeepReason> {
    use ImageKeepReason::*;
    holds(image, newest_of_family, policy)?;
    let recent = |time: Option<DateTime<Utc>>| time.is_none_or(|t| now.signed_duration_since(t) < policy.unused_for);
    let checks = [
        (evidence.used_by_instance, UsedByInstance),
        (evidence.used_by_launch_template, UsedByLaunchTemplate),
        (image.state == "disabled", Disabled),
        (image.state != "available" && image.state != "disabled", NotRetirableState),
        (image.deprecation_time.is_some(), DeprecatedByPerson),
        (recent(image.creation_date), TooYoung),
        (image.last_launched_time.is_some() && recent(image.last_launched_time), RecentlyLaunched),
    ];
    if let Some((_, reason)) = checks.into_iter().find(|(applies, _)| *applies) {
        return Err(reason);
    }
    let facts = [
        (evidence.referenced, Referenced, ReferencesUnknown),
        (evidence.permissions.as_ref().map(|p| p.public), Public, SharingUnknown),
        (evidence.snapshot_shared, SnapshotShared, SnapshotSharingUnknown),
    ];
    for (fact, used, unknown) in facts {
        match fact {
            Some(false) => {}
            Some(true) => return Err(used),
            None => return Err(unknown),
        }
    }
    Ok(())
}

/// The next stage after `stage` (taken at `at`; for a candidate, when it became one), if its
/// dwell is over and its evidence allows; else why it waits.
#[allow(clippy::too_many_arguments)]
fn advance_or_wait(
    image: &StagedImage,
    record: Option<&StageRecord>,
    stage: Stage,
    at: DateTime<Utc>,
    permissions: Option<&LaunchPermissions>,
    evidence: &Evidence,
    policy: &StagePolicy,
    now: DateTime<Utc>,
) -> Verdict {
    let Some(next) = policy.stages.after(stage) else {
        return Verdict::Keep(ImageKeepReason::NotRetirableState);
    };
    // Deprecation, which launches survive, may come as soon as an image is a candidate; any other
    // stage (a first stage that disables included) waits the dwell and the lag after the last one
    // (or after the candidacy).
    let gentle = stage == Stage::Active && next == Stage::Deprecated;
    let dwell_ends = if gentle { at } else { at + policy.dwell };
    let Some(permissions) = permissions else {
        let waiting_for = "its launch permissions could not be read (recorded or now)".to_string();
        return Verdict::Wait { waiting_for, next_at: None, request_report: false };
    };
    if permissions.public {
        return Verdict::Keep(ImageKeepReason::Public);
    }
    if !permissions.is_shared() {
        if now < dwell_ends {
            return dwelling(dwell_ends, false);
        }
        return Verdict::Advance(next);
    }
    // Use any report shows (whoever asked for it) keeps it.
    let mine = evidence.reports.iter().filter(|r| r.image_id == image.image_id && r.state == "available");
    if let Some(report) = mine.into_iter().find(|r| r.uses().next().is_some()) {
        let accounts: BTreeSet<&str> = report.uses().map(|e| e.account_id.as_str()).collect();
        let accounts: Vec<&str> = accounts.into_iter().collect();
        return Verdict::Spared(format!("usage report {} shows use in {}", report.report_id, accounts.join(", ")));
    }
    if !evidence.reports_read {
        let waiting_for = "its usage reports could not be listed this run".to_string();
        return Verdict::Wait { waiting_for, next_at: None, request_report: false };
    }
    // Shared: only amiguard's own usage report over every account it is shared with is evidence.
    let made_after = if gentle { at } else { at + policy.lag };
    let asked = Asked {
        report_id: record.and_then(|r| r.report_id.as_deref()),
        with: record.and_then(|r| r.report_permissions.as_ref()),
        depth: policy.template_depth,
    };
    match report_evidence(&image.image_id, permissions, &evidence.reports, &asked, made_after, now) {
        Ok(report) if report.uses().next().is_some() => {
            let accounts: BTreeSet<&str> = report.uses().map(|e| e.account_id.as_str()).collect();
            let accounts: Vec<&str> = accounts.into_iter().collect();
            Verdict::Spared(format!("usage report {} shows use in {}", report.report_id, accounts.join(", ")))
        }
        Ok(_) if now < dwell_ends => dwelling(dwell_ends, false),
        Ok(_) => Verdict::Advance(next),
        Err(why) => {
            // A report asked now is made now: due once it would be new enough, and at the end of
            // the dwell (so that it sees the dwell's use).
            let due = made_after.max(dwell_ends);
            let ours_pending = record
                .and_then(|r| r.report_id.as_deref())
                .is_some_and(|id| evidence.reports.iter().any(|r| r.report_id == id && r.state == "pending"));
            let request_report = !ours_pending && now >= due && evidence.reports_read;
            Verdict::Wait { waiting_for: why, next_at: (now < due).then_some(due), request_report }
        }
    }
}

/// A keep reason as the report names it.
pub fn reason_name(reason: ImageKeepReason) -> String {
    serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn dwelling(until: DateTime<Utc>, request_report: bool) -> Verdict {
    Verdict::Wait { waiting_for: format!("dwell until {}", until.to_rfc3339()), next_at: Some(until), request_report }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn days(n: i64) -> Duration {
        Duration::days(n)
    }

    pub(crate) fn policy() -> StagePolicy {
        StagePolicy {
            stages: Stages::default(),
            unused_for: days(90),
            dwell: days(14),
            lag: days(3),
            protect_tag: tags::KEEP.to_string(),
            image_builder_images: false,
            template_depth: 20,
        }
    }

    pub(crate) fn image(id: &str) -> StagedImage {
        StagedImage {
            image_id: id.into(),
            name: format!("golden-{id}"),
            state: "available".into(),
            public: false,
            creation_date: Some(now() - days(200)),
            last_launched_time: None,
            deprecation_time: None,
            deregistration_protection: None,
            snapshot_ids: vec![format!("snap-{id}")],
            gib: 8,
            tags: vec![],
        }
    }

    fn consumer() -> LaunchPermissions {
        LaunchPermissions { user_ids: ["111111111111".to_string()].into(), ..LaunchPermissions::default() }
    }

    fn unused(permissions: LaunchPermissions) -> Evidence {
        Evidence {
            referenced: Some(false),
            permissions: Some(permissions),
            snapshot_shared: Some(false),
            reports_read: true,
            ..Evidence::default()
        }
    }

    fn report(id: &str, state: &str, created: DateTime<Utc>, entries: Vec<UsageEntry>) -> UsageReport {
        UsageReport {
            report_id: id.into(),
            image_id: "ami-1".into(),
            state: state.into(),
            created: Some(created),
            expires: Some(created + days(30)),
            account_ids: BTreeSet::new(),
            resource_types: asked_by_amiguard(),
            entries: (state == "available").then_some(entries),
        }
    }

    /// What amiguard asks a report to read (`USAGE_REPORT_TEMPLATE_DEPTH` 20).
    fn asked_by_amiguard() -> Vec<(String, Option<u32>)> {
        vec![("ec2:Instance".into(), None), ("ec2:LaunchTemplate".into(), Some(20))]
    }

    fn in_stage(stage: Stage, at: DateTime<Utc>) -> StageRecord {
        StageRecord {
            stage,
            stage_at: Some(at),
            began_at: Some(at),
            candidate_since: at - days(1),
            intended: None,
            permissions: Some(consumer()),
            report_id: None,
            report_permissions: Some(consumer()),
            ended: None,
            deprecated_by_amiguard: true,
            version: 1,
        }
    }

    /// `record`, with amiguard's report `id` asked for while shared with `consumer()`.
    fn asked(record: StageRecord, id: &str) -> StageRecord {
        StageRecord { report_id: Some(id.into()), report_permissions: Some(consumer()), ..record }
    }

    fn decide_now(image: &StagedImage, record: Option<&StageRecord>, evidence: &Evidence) -> Verdict {
        decide(image, record, evidence, false, &policy(), now())
    }

    fn use_by(account: &str) -> UsageEntry {
        UsageEntry { account_id: account.into(), resource_type: "ec2:LaunchTemplate".into(), usage_count: 1 }
    }

    #[test]
    fn an_unshared_image_advances_one_stage_a_run_after_each_dwell() {
        let evidence = unused(LaunchPermissions::default());
        assert_eq!(decide_now(&image("ami-1"), None, &evidence), Verdict::Advance(Stage::Deprecated));
        let mut deprecated = image("ami-1");
        deprecated.deprecation_time = Some(now() - days(15));
        let record = in_stage(Stage::Deprecated, now() - days(15));
        assert_eq!(decide_now(&deprecated, Some(&record), &evidence), Verdict::Advance(Stage::Disabled));
        let recent = in_stage(Stage::Deprecated, now() - days(1));
        let Verdict::Wait { waiting_for, next_at, .. } = decide_now(&deprecated, Some(&recent), &evidence) else {
            panic!("waits")
        };
        assert!(waiting_for.starts_with("dwell until"), "{waiting_for}");
        assert_eq!(next_at, Some(now() + days(13)));
        let disabled = StagedImage { state: "disabled".into(), ..deprecated };
        let record = StageRecord {
            permissions: Some(LaunchPermissions::default()),
            ..in_stage(Stage::Disabled, now() - days(14))
        };
        assert_eq!(decide_now(&disabled, Some(&record), &evidence), Verdict::Advance(Stage::Deregistered));
    }

    #[test]
    fn a_shared_candidate_waits_for_a_report_made_after_it_became_one() {
        let candidate = StageRecord { permissions: None, ..StageRecord::candidate(now() - days(2)) };
        let mut evidence = unused(consumer());
        match decide_now(&image("ami-1"), Some(&candidate), &evidence) {
            Verdict::Wait { request_report: true, waiting_for, .. } => assert_eq!(waiting_for, "no usage report yet"),
            other => panic!("{other:?}"),
        }
        let ours = asked(candidate.clone(), "r-1");
        evidence.reports = vec![report("r-1", "pending", now() - days(1), vec![])];
        assert!(matches!(
            decide_now(&image("ami-1"), Some(&ours), &evidence),
            Verdict::Wait { request_report: false, .. }
        ));
        evidence.reports = vec![report("r-1", "available", now() - days(3), vec![])];
        let Verdict::Wait { waiting_for, request_report: true, .. } =
            decide_now(&image("ami-1"), Some(&ours), &evidence)
        else {
            panic!("a report older than the candidacy is no evidence")
        };
        assert!(waiting_for.contains("older"), "{waiting_for}");
        evidence.reports = vec![report("r-1", "available", now() - days(1), vec![])];
        assert_eq!(decide_now(&image("ami-1"), Some(&ours), &evidence), Verdict::Advance(Stage::Deprecated));
        evidence.reports = vec![report("r-1", "available", now() - days(1), vec![use_by("222222222222")])];
        assert!(
            matches!(decide_now(&image("ami-1"), Some(&ours), &evidence), Verdict::Spared(why) if why.contains("222222222222"))
        );
    }

    #[test]
    fn pending_failed_expired_or_narrow_reports_advance_nothing() {
        let candidate = StageRecord::candidate(now() - days(40));
        let org = LaunchPermissions {
            organization_arns: ["arn:aws:organizations::123456789012:organization/o-abc".to_string()].into(),
            ..LaunchPermissions::default()
        };
        let narrow = UsageReport {
            account_ids: ["111111111111".to_string()].into(),
            ..report("r-4", "available", now() - days(1), vec![])
        };
        for (permissions, report) in [
            (consumer(), report("r-1", "pending", now() - days(1), vec![])),
            (consumer(), report("r-2", "error", now() - days(1), vec![])),
            (consumer(), report("r-3", "available", now() - days(31), vec![])),
            (org, narrow),
        ] {
            let evidence = Evidence { reports: vec![report.clone()], ..unused(permissions) };
            let verdict = decide_now(&image("ami-1"), Some(&candidate), &evidence);
            assert!(matches!(verdict, Verdict::Wait { .. }), "{report:?}: {verdict:?}");
        }
    }

    #[test]
    fn a_later_stage_needs_a_report_made_the_lag_after_the_stage() {
        let policy = StagePolicy { dwell: days(0), ..policy() };
        let taken = now() - days(5);
        let mut deprecated = image("ami-1");
        deprecated.deprecation_time = Some(taken);
        let record = asked(in_stage(Stage::Deprecated, taken), "r-1");
        let early =
            Evidence { reports: vec![report("r-1", "available", taken + days(2), vec![])], ..unused(consumer()) };
        let verdict = decide(&deprecated, Some(&record), &early, false, &policy, now());
        assert!(
            matches!(&verdict, Verdict::Wait { waiting_for, .. } if waiting_for.contains("USAGE_REPORT_LAG_DAYS")),
            "{verdict:?}"
        );
        let record = asked(record, "r-2");
        let late =
            Evidence { reports: vec![report("r-2", "available", taken + days(3), vec![])], ..unused(consumer()) };
        assert_eq!(decide(&deprecated, Some(&record), &late, false, &policy, now()), Verdict::Advance(Stage::Disabled));
    }

    #[test]
    fn use_seen_in_amiguards_stage_undoes_it() {
        let taken = now() - days(5);
        let mut deprecated = image("ami-1");
        deprecated.deprecation_time = Some(taken);
        let record = in_stage(Stage::Deprecated, taken);
        let launched = StagedImage { last_launched_time: Some(taken + days(1)), ..deprecated.clone() };
        assert!(
            matches!(decide_now(&launched, Some(&record), &unused(consumer())), Verdict::Undo(why) if why.contains("LastLaunchedTime"))
        );
        let used = Evidence {
            reports: vec![report("r-1", "available", taken + days(3), vec![use_by("333333333333")])],
            ..unused(consumer())
        };
        assert!(
            matches!(decide_now(&deprecated, Some(&record), &used), Verdict::Undo(why) if why.contains("333333333333"))
        );
        let referenced = Evidence { referenced: Some(true), ..unused(consumer()) };
        assert!(matches!(decide_now(&deprecated, Some(&record), &referenced), Verdict::Undo(_)));
    }

    #[test]
    fn a_persons_enable_or_removed_deprecation_ends_amiguards_retirement() {
        let record = in_stage(Stage::Disabled, now() - days(3));
        assert!(matches!(decide_now(&image("ami-1"), Some(&record), &unused(consumer())), Verdict::EndedByPerson(_)));
        let record = in_stage(Stage::Deprecated, now() - days(3));
        assert!(matches!(decide_now(&image("ami-1"), Some(&record), &unused(consumer())), Verdict::EndedByPerson(_)));
    }

    #[test]
    fn an_image_restored_from_the_recycle_bin_ends_amiguards_retirement() {
        let record = in_stage(Stage::Deregistered, now() - days(3));
        assert!(matches!(decide_now(&image("ami-1"), Some(&record), &unused(consumer())), Verdict::EndedByPerson(_)));
    }

    #[test]
    fn a_deprecation_a_person_set_is_left_alone() {
        let deprecated = StagedImage { deprecation_time: Some(now() - days(1)), ..image("ami-1") };
        let verdict = decide_now(&deprecated, None, &unused(LaunchPermissions::default()));
        assert_eq!(verdict, Verdict::Keep(ImageKeepReason::DeprecatedByPerson));
    }

    #[test]
    fn a_stage_recorded_but_not_shown_by_ec2_was_not_taken() {
        let intended = StageRecord {
            intended: Some((Stage::Deprecated, now() - days(1))),
            ..StageRecord::candidate(now() - days(2))
        };
        let verdict = decide_now(&image("ami-1"), Some(&intended), &unused(LaunchPermissions::default()));
        assert_eq!(verdict, Verdict::Advance(Stage::Deprecated), "taken again, not undone");
        let shown = StagedImage { deprecation_time: Some(now()), ..image("ami-1") };
        let Verdict::Wait { waiting_for, .. } =
            decide_now(&shown, Some(&intended), &unused(LaunchPermissions::default()))
        else {
            panic!("in its dwell")
        };
        assert!(waiting_for.starts_with("dwell"));
    }

    #[test]
    fn public_images_and_ended_retirements_are_kept() {
        let public = StagedImage { public: true, ..image("ami-1") };
        let record = in_stage(Stage::Deprecated, now() - days(30));
        assert_eq!(decide_now(&public, None, &unused(consumer())), Verdict::Keep(ImageKeepReason::Public));
        // Made public while in amiguard's stage: that stage is undone (issue 22 review #7).
        let deprecated = StagedImage { deprecation_time: Some(now() - days(30)), ..public.clone() };
        assert!(matches!(decide_now(&deprecated, Some(&record), &unused(consumer())), Verdict::Undo(_)));
        let ended = StageRecord { ended: Some((now() - days(10), "launched".into())), ..record };
        let verdict = decide_now(&image("ami-1"), Some(&ended), &unused(LaunchPermissions::default()));
        assert_eq!(verdict, Verdict::Keep(ImageKeepReason::RetirementEnded));
        let long_ago = StageRecord { ended: Some((now() - days(91), "launched".into())), ..ended };
        let verdict = decide_now(&image("ami-1"), Some(&long_ago), &unused(LaunchPermissions::default()));
        assert_eq!(verdict, Verdict::Advance(Stage::Deprecated));
    }

    #[test]
    fn tags_only_keep() {
        let evidence = unused(LaunchPermissions::default());
        let protected = StagedImage { tags: vec![Tag::new("AMIGUARD:KEEP", "")], ..image("ami-1") };
        assert_eq!(decide_now(&protected, None, &evidence), Verdict::Keep(ImageKeepReason::Protected));
        let built = StagedImage {
            tags: vec![Tag::new(IMAGE_BUILDER_TAG, "arn:aws:imagebuilder:us-east-1:1:image/r/1.0.0/1")],
            ..image("ami-1")
        };
        assert_eq!(decide_now(&built, None, &evidence), Verdict::Keep(ImageKeepReason::LeftToImageBuilder));
        let policy = StagePolicy { image_builder_images: true, ..policy() };
        assert_eq!(decide(&built, None, &evidence, false, &policy, now()), Verdict::Advance(Stage::Deprecated));
        assert_eq!(
            decide(&built, None, &evidence, true, &policy, now()),
            Verdict::Keep(ImageKeepReason::NewestOfFamily)
        );
    }

    #[test]
    fn retire_stages_parses_ordered_verbs_ending_with_deregister() {
        assert_eq!(Stages::parse("deprecate,disable,deregister"), Some(Stages::default()));
        assert!(Stages::parse("deregister").unwrap().is_one_step());
        assert_eq!(Stages::parse("disable,deregister").unwrap().after(Stage::Active), Some(Stage::Disabled));
        for bad in ["", "deprecate", "deregister,disable", "disable,disable,deregister", "delete"] {
            assert_eq!(Stages::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_amiguards_own_report_reading_instances_and_deep_templates_is_evidence() {
        let candidate = asked(StageRecord::candidate(now() - days(2)), "r-1");
        let full = report("r-1", "available", now() - days(1), vec![]);
        let persons = UsageReport { report_id: "r-9".into(), ..full.clone() };
        let instances_only = UsageReport { resource_types: vec![("ec2:Instance".into(), None)], ..full.clone() };
        let shallow = UsageReport {
            resource_types: vec![("ec2:Instance".into(), None), ("ec2:LaunchTemplate".into(), Some(1))],
            ..full.clone()
        };
        for report in [persons, instances_only, shallow] {
            let evidence = Evidence { reports: vec![report.clone()], ..unused(consumer()) };
            let verdict = decide_now(&image("ami-1"), Some(&candidate), &evidence);
            assert!(matches!(verdict, Verdict::Wait { .. }), "{report:?}: {verdict:?}");
        }
        let evidence = Evidence { reports: vec![full], ..unused(consumer()) };
        assert_eq!(decide_now(&image("ami-1"), Some(&candidate), &evidence), Verdict::Advance(Stage::Deprecated));
    }

    #[test]
    fn a_report_asked_before_the_image_was_shared_wider_is_no_evidence_a_fresh_one_is_asked() {
        let candidate = asked(StageRecord::candidate(now() - days(2)), "r-1");
        let wider = LaunchPermissions {
            user_ids: ["111111111111".to_string(), "222222222222".to_string()].into(),
            ..LaunchPermissions::default()
        };
        let evidence = Evidence { reports: vec![report("r-1", "available", now() - days(1), vec![])], ..unused(wider) };
        let Verdict::Wait { waiting_for, request_report: true, .. } =
            decide_now(&image("ami-1"), Some(&candidate), &evidence)
        else {
            panic!("waits for a fresh report")
        };
        assert!(waiting_for.contains("sharing changed"), "{waiting_for}");
        // Not recorded at all (asked before the record kept them): no evidence either.
        let unknown = StageRecord { report_permissions: None, ..candidate };
        let evidence = Evidence { permissions: Some(consumer()), ..evidence };
        assert!(matches!(decide_now(&image("ami-1"), Some(&unknown), &evidence), Verdict::Wait { .. }));
    }

    #[test]
    fn an_image_found_in_another_state_than_amiguard_left_it_stops_its_retirement() {
        let policy = StagePolicy { dwell: days(0), ..policy() };
        let record = StageRecord { permissions: None, ..in_stage(Stage::Deprecated, now() - days(20)) };
        let deprecated = StagedImage { deprecation_time: Some(now() - days(20)), ..image("ami-1") };
        for state in ["disabled", "error", "pending"] {
            let changed = StagedImage { state: state.into(), ..deprecated.clone() };
            // A person's DisableImage emptied its launch permissions: never read as "not shared".
            let verdict = decide(&changed, Some(&record), &unused(LaunchPermissions::default()), false, &policy, now());
            assert!(matches!(&verdict, Verdict::EndedByPerson(why) if why.contains(state)), "{state}: {verdict:?}");
        }
        let disabled = StagedImage { state: "error".into(), ..deprecated };
        let record = in_stage(Stage::Disabled, now() - days(20));
        let verdict = decide(&disabled, Some(&record), &unused(LaunchPermissions::default()), false, &policy, now());
        assert!(matches!(verdict, Verdict::EndedByPerson(_)), "{verdict:?}");
    }

    #[test]
    fn a_stage_waits_until_describe_image_references_answered_for_it() {
        let deprecated = StagedImage { deprecation_time: Some(now() - days(20)), ..image("ami-1") };
        let record = in_stage(Stage::Deprecated, now() - days(20));
        let unknown = Evidence { referenced: None, ..unused(LaunchPermissions::default()) };
        let verdict = decide_now(&deprecated, Some(&record), &unknown);
        assert!(
            matches!(&verdict, Verdict::Wait { waiting_for, .. } if waiting_for.contains("references unknown")),
            "{verdict:?}"
        );
        let answered = unused(LaunchPermissions::default());
        assert_eq!(decide_now(&deprecated, Some(&record), &answered), Verdict::Advance(Stage::Disabled));
    }

    #[test]
    fn a_first_stage_that_disables_waits_the_dwell_and_a_report_the_lag_after_the_candidacy() {
        let policy = StagePolicy { stages: Stages::parse("disable,deregister").unwrap(), ..policy() };
        let young = StageRecord::candidate(now() - days(2));
        let verdict =
            decide(&image("ami-1"), Some(&young), &unused(LaunchPermissions::default()), false, &policy, now());
        assert!(
            matches!(&verdict, Verdict::Wait { waiting_for, .. } if waiting_for.starts_with("dwell")),
            "{verdict:?}"
        );
        let since = now() - days(20);
        let candidate = asked(StageRecord::candidate(since), "r-1");
        let early =
            Evidence { reports: vec![report("r-1", "available", since + days(2), vec![])], ..unused(consumer()) };
        let verdict = decide(&image("ami-1"), Some(&candidate), &early, false, &policy, now());
        assert!(
            matches!(&verdict, Verdict::Wait { waiting_for, .. } if waiting_for.contains("USAGE_REPORT_LAG_DAYS")),
            "{verdict:?}"
        );
        let late =
            Evidence { reports: vec![report("r-1", "available", since + days(3), vec![])], ..unused(consumer()) };
        assert_eq!(
            decide(&image("ami-1"), Some(&candidate), &late, false, &policy, now()),
            Verdict::Advance(Stage::Disabled)
        );
    }

    #[test]
    fn a_keep_rule_that_starts_while_in_amiguards_stage_undoes_the_stage() {
        let disabled =
            StagedImage { state: "disabled".into(), deprecation_time: Some(now() - days(20)), ..image("ami-1") };
        let record = in_stage(Stage::Disabled, now() - days(20));
        let protected = StagedImage { tags: vec![Tag::new(tags::KEEP, "")], ..disabled.clone() };
        let verdict = decide_now(&protected, Some(&record), &unused(LaunchPermissions::default()));
        assert!(matches!(&verdict, Verdict::Undo(why) if why.contains("protected")), "{verdict:?}");
        let newest = decide(&disabled, Some(&record), &unused(LaunchPermissions::default()), true, &policy(), now());
        assert!(matches!(&newest, Verdict::Undo(why) if why.contains("newest")), "{newest:?}");
    }

    #[test]
    fn no_report_is_asked_for_when_the_reports_could_not_be_listed() {
        let candidate = StageRecord::candidate(now() - days(2));
        let evidence = Evidence { reports_read: false, ..unused(consumer()) };
        let verdict = decide_now(&image("ami-1"), Some(&candidate), &evidence);
        assert!(matches!(verdict, Verdict::Wait { request_report: false, .. }), "{verdict:?}");
    }

    fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..120).prop_map(|d| now() - days(d))
    }

    fn arb_permissions() -> impl Strategy<Value = LaunchPermissions> {
        (0u8..5).prop_map(|kind| match kind {
            0 => LaunchPermissions::default(),
            1 => consumer(),
            2 => LaunchPermissions { user_ids: ["1".into(), "2".into()].into(), ..LaunchPermissions::default() },
            3 => LaunchPermissions { organizational_unit_arns: ["ou".into()].into(), ..LaunchPermissions::default() },
            _ => LaunchPermissions { public: true, ..LaunchPermissions::default() },
        })
    }

    /// Reports of any maker: ids r-0..r-3 (a record may name one), of this image or another,
    /// reading what amiguard asks or less (instances only, templates 1 deep).
    fn arb_report() -> impl Strategy<Value = UsageReport> {
        (0u8..3, arb_time(), 0u8..3, any::<bool>(), any::<bool>(), 0u8..4, 0u8..4, any::<bool>()).prop_map(
            |(state, created, accounts, used, read, id, types, other_image)| {
                let state = ["pending", "available", "error"][state as usize];
                UsageReport {
                    image_id: if other_image { "ami-2".into() } else { "ami-1".into() },
                    account_ids: match accounts {
                        0 => BTreeSet::new(),
                        1 => ["111111111111".to_string()].into(),
                        _ => ["1".to_string()].into(),
                    },
                    resource_types: match types {
                        0 => vec![("ec2:Instance".into(), None)],
                        1 => vec![("ec2:Instance".into(), None), ("ec2:LaunchTemplate".into(), Some(1))],
                        _ => asked_by_amiguard(),
                    },
                    entries: (state == "available" && read).then(|| if used { vec![use_by("9")] } else { vec![] }),
                    ..report(&format!("r-{id}"), state, created, vec![])
                }
            },
        )
    }

    fn arb_record() -> impl Strategy<Value = Option<StageRecord>> {
        let stage = prop::sample::select(vec![Stage::Active, Stage::Deprecated, Stage::Disabled]);
        let intended = prop::sample::select(vec![None, Some(Stage::Deprecated), Some(Stage::Disabled)]);
        let asked = (proptest::option::of(0u8..4), proptest::option::of(arb_permissions()));
        proptest::option::of(
            (stage, arb_time(), arb_time(), proptest::option::of(arb_permissions()), intended, any::<bool>(), asked)
                .prop_map(|(stage, at, since, permissions, intended, ended, (report, asked_with))| StageRecord {
                    stage,
                    stage_at: (stage != Stage::Active).then_some(at),
                    began_at: (stage != Stage::Active).then_some(at),
                    candidate_since: since,
                    intended: intended.map(|s| (s, at)),
                    permissions,
                    report_id: report.map(|n| format!("r-{n}")),
                    report_permissions: asked_with,
                    ended: ended.then_some((at, "launched".into())),
                    deprecated_by_amiguard: stage != Stage::Active,
                    version: 1,
                }),
        )
    }

    fn arb_image() -> impl Strategy<Value = StagedImage> {
        (any::<bool>(), 0u8..3, proptest::option::of(arb_time()), proptest::option::of(arb_time()), arb_time())
            .prop_map(|(public, state, deprecation, launched, created)| StagedImage {
                public,
                state: ["available", "disabled", "pending"][state as usize].into(),
                deprecation_time: deprecation,
                last_launched_time: launched,
                creation_date: Some(created - days(60)),
                ..image("ami-1")
            })
    }

    proptest! {
        /// No verdict ever advances a shared image without amiguard's own report (the record's
        /// id) of this image, available, unexpired, reading instances and launch templates deep
        /// enough, covering every account it is shared with, asked for while its sharing was at
        /// least today's, made late enough for its stage, that shows no use (nor any other report
        /// showing use); an image in a stage advances only in the state amiguard left it and with
        /// DescribeImageReferences' answer "none"; a public image is never advanced, and only
        /// amiguard's own stage is undone or ended.
        #[test]
        fn no_shared_image_advances_without_a_covering_report_newer_than_its_stage(
            image in arb_image(),
            record in arb_record(),
            permissions in proptest::option::of(arb_permissions()),
            reports in proptest::collection::vec(arb_report(), 0..4),
            referenced in proptest::option::of(any::<bool>()),
            reports_read in any::<bool>(),
            dwell in 0i64..20,
            lag in 0i64..5,
            stages in prop::sample::select(vec!["deprecate,disable,deregister", "disable,deregister"]),
        ) {
            let policy = StagePolicy { dwell: days(dwell), lag: days(lag), stages: Stages::parse(stages).unwrap(), ..policy() };
            let evidence = Evidence { referenced, permissions: permissions.clone(), snapshot_shared: Some(false), reports: reports.clone(), reports_read, ..Evidence::default() };
            let verdict = decide(&image, record.as_ref(), &evidence, false, &policy, now());
            let live = record.as_ref().filter(|r| r.ended.is_none());
            let (stage, stage_at) = live.map_or((Stage::Active, None), |r| r.effective(&image));
            match &verdict {
                Verdict::Advance(next) => {
                    prop_assert!(!image.public);
                    prop_assert_eq!(Some(*next), policy.stages.after(stage), "one stage, the next");
                    if stage != Stage::Active {
                        prop_assert_eq!(referenced, Some(false), "references answered");
                        let left = if stage == Stage::Deprecated { "available" } else { "disabled" };
                        prop_assert_eq!(image.state.as_str(), left, "in the state amiguard left it");
                    }
                    let judged = if stage >= Stage::Disabled { live.and_then(|r| r.permissions.clone()) } else { permissions.clone() };
                    let judged = judged.expect("advanced on known permissions");
                    prop_assert!(!judged.public);
                    if judged.is_shared() {
                        let gentle = stage == Stage::Active && *next == Stage::Deprecated;
                        let since = match stage {
                            Stage::Active => live.map_or(now(), |r| r.candidate_since),
                            _ => stage_at.unwrap(),
                        };
                        let made_after = if gentle { since } else { since + policy.lag };
                        let record = live.expect("a shared image advances on a report amiguard asked for");
                        let own = reports.iter().find(|r| Some(&r.report_id) == record.report_id.as_ref() && r.image_id == "ami-1");
                        let own = own.expect("amiguard's own report");
                        prop_assert!(
                            own.state == "available"
                                && own.expires.is_some_and(|e| e > now())
                                && own.created.is_some_and(|c| c >= made_after)
                                && own.resource_types.contains(&("ec2:Instance".to_string(), None))
                                && own.resource_types.contains(&("ec2:LaunchTemplate".to_string(), Some(20)))
                                && (own.account_ids.is_empty() || (!judged.needs_every_account() && judged.user_ids.is_subset(&own.account_ids)))
                                && record.report_permissions.as_ref().is_some_and(|then| judged.within(then))
                                && own.entries.as_ref().is_some_and(|e| e.iter().all(|e| e.usage_count == 0)),
                            "{:?} advanced on {:?}", next, own
                        );
                        prop_assert!(reports_read);
                        prop_assert!(!reports.iter().any(|r| r.image_id == "ami-1" && r.uses().next().is_some()), "no report shows use");
                    }
                    if !gentle_first(stage, *next) {
                        let since = stage_at.or(live.map(|r| r.candidate_since)).unwrap_or(now());
                        prop_assert!(now() >= since + policy.dwell, "the dwell is over");
                    }
                }
                Verdict::Undo(_) | Verdict::EndedByPerson(_) => {
                    prop_assert!(matches!(stage, Stage::Deprecated | Stage::Disabled), "only amiguard's own stage");
                }
                _ => {}
            }
            if image.public && !matches!(stage, Stage::Deprecated | Stage::Disabled) {
                prop_assert_eq!(verdict, Verdict::Keep(ImageKeepReason::Public));
            }
        }
    }

    fn gentle_first(stage: Stage, next: Stage) -> bool {
        stage == Stage::Active && next == Stage::Deprecated
    }
}
