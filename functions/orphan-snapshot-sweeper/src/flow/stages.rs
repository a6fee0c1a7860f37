//! Staged retirement of one region (`RETIRE_STAGES` beyond `deregister`, issue 22): the images
//! listed with their deprecation, the ledger's records read, the evidence gathered (in-account use,
//! references, launch permissions, usage reports), each image decided (`core::stage_plan`), and
//! then, unless a dry run, each decision taken: a stage recorded in the ledger before its call and
//! again once done; an undo or a person's end recorded once the sharing is back. Deregistration,
//! the last stage, goes through today's path (Recycle Bin tag, journal).

use std::collections::BTreeMap;

use amiguard::AwsError;
use chrono::{DateTime, Duration, Utc};

use super::retirement::{in_use, retire_one, retired_image, Retirement};
use super::run::Run;
use crate::core::{
    plan_stages, Evidence, FamilyRule, ImageFacts, RetirementStageEntry, Stage, StageChange, StageEvidence, StageInput,
    StagePolicy, StageRecord, StageTotals, StagedImage, UsageReport, Verdict,
};
use crate::ports::{Ec2, Records};
use crate::report::{RegionReport, RetireOutcome, RetiredImage};

/// What the region's staged retirement works with.
pub(super) struct Region<'a, 'r, E, L> {
    pub run: &'a Run<'r, L>,
    pub region: &'a str,
    pub ec2: &'a E,
    pub policy: StagePolicy,
}

/// Decides and takes this region's stages; the images deregistered (or, in a dry run, that would
/// be) are answered for the snapshot planner. A listing or ledger read it needs that fails skips
/// it in the region (`retirement_skipped`); the sweep goes on.
#[allow(clippy::too_many_arguments)]
pub(super) async fn retire_in_stages<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    images: &[ImageFacts],
    days: u32,
    budget: &mut u64,
    report: &mut RegionReport,
    retired_out: &mut Vec<RetiredImage>,
    warnings: &mut Vec<String>,
) -> Retirement {
    let mut retirement = Retirement { retired: Vec::new(), deregistered_any: false };
    let Some((instances, templates)) = in_use(run, ec2, report).await else { return retirement };
    let staged = match run.until_cutoff("DescribeImages", ec2.staged_images()).await {
        Ok(staged) => staged,
        Err(err) => {
            report.retirement_skipped = Some(format!("listing images for the retirement stages failed: {err}"));
            return retirement;
        }
    };
    let records = match run.store() {
        Some(store) => match run.until_cutoff("Query", store.retirement_records(region)).await {
            Ok(records) => records,
            Err(err) => {
                run.ledger_broke(&err);
                report.retirement_skipped = Some(format!("reading the retirement records failed: {err}"));
                return retirement;
            }
        },
        None => BTreeMap::new(),
    };
    let settings = &run.config.staged_retirement;
    let policy = StagePolicy {
        stages: settings.stages.clone(),
        unused_for: Duration::days(i64::from(days)),
        dwell: Duration::days(i64::from(settings.dwell_days)),
        lag: Duration::days(i64::from(settings.lag_days)),
        protect_tag: run.config.protect_tag.clone(),
        image_builder_images: settings.image_builder_images,
        template_depth: settings.template_depth,
    };
    let families = FamilyRule {
        tag: settings.family_tag.clone(),
        keep_newest: settings.keep_newest,
        image_builder_images: settings.image_builder_images,
    };
    let here = Region { run, region, ec2, policy };
    let mut evidence: BTreeMap<String, Evidence> = staged
        .iter()
        .map(|image| {
            let id = image.image_id.clone();
            let used = Evidence {
                used_by_instance: instances.contains(&id),
                used_by_launch_template: templates.contains(&id),
                ..Evidence::default()
            };
            (id, used)
        })
        .collect();
    let unbounded = StageInput {
        now: run.invocation.now,
        images: &staged,
        records: &records,
        evidence: &evidence,
        budget: u64::MAX,
        max_delete_fraction: 1.0,
    };
    // EC2 is asked about use only for the images that pass every other rule, and those in a stage.
    let first = plan_stages(&unbounded, &here.policy, &families);
    let to_ask: Vec<String> = staged
        .iter()
        .map(|image| image.image_id.clone())
        .filter(|id| in_stage(records.get(id)) || first.to_ask.contains(id))
        .collect();
    here.gather(&to_ask, &staged, &records, &mut evidence, warnings).await;
    let input = StageInput {
        now: run.invocation.now,
        images: &staged,
        records: &records,
        evidence: &evidence,
        budget: *budget,
        max_delete_fraction: run.config.max_delete_fraction,
    };
    let plan = plan_stages(&input, &here.policy, &families);
    report.images_kept = plan.kept.clone();
    if let Some(trip) = &plan.circuit_breaker {
        report.retirement_skipped = Some(format!("{trip} (images)"));
    }
    if !run.dry_run {
        here.forget_candidates(&plan.no_longer_candidates, &records, warnings).await;
    }
    let advancing = plan.decided.iter().filter(|(_, v)| matches!(v, Verdict::Advance(_))).count() as u64;
    *budget = budget.saturating_sub(advancing);
    let mut entries = Vec::new();
    let deregistering = here.deregistering(&plan.decided, images, warnings).await;
    for (image, verdict) in &plan.decided {
        let facts = &evidence[&image.image_id];
        let record = records.get(&image.image_id).filter(|r| r.ended.is_none());
        let mut step = Step::new(image, record, facts, &here.policy, run.invocation.now);
        if let Some(image_facts) = deregistering.facts.get(image.image_id.as_str()) {
            if !run.dry_run {
                here.consume_report(&mut step, warnings).await;
                // Recorded before it is taken, like every stage.
                step.record.intended = Some((Stage::Deregistered, run.invocation.now));
                if !here.save(&mut step, warnings).await {
                    entries.push(step.entry);
                    continue;
                }
            }
            let (outcome, error, entry) =
                retire_one(run, region, ec2, image_facts, &deregistering.bin, &deregistering.untagged, warnings).await;
            retired_out.push(retired_image(region, image_facts, &entry, outcome, error.clone()));
            retirement.deregistered_any |= outcome == RetireOutcome::Deregistered;
            if matches!(outcome, RetireOutcome::Deregistered | RetireOutcome::AlreadyGone | RetireOutcome::DryRun) {
                retirement.retired.push((*image_facts).clone());
            }
            here.finish_deregistration(&mut step, outcome, error, warnings).await;
        } else {
            here.act(&mut step, verdict, warnings).await;
        }
        entries.push(step.entry);
    }
    report.retirement_stage_totals = Some(StageTotals::of(&entries, run.config.price_per_gb_month));
    // What this run changed first: the list may be cut to fit the log event.
    entries.sort_by_key(|e| e.change == StageChange::None);
    report.retirement_stages = Some(entries);
    retirement
}

/// Whether the record says amiguard took (or was about to take) a stage of a retirement under way.
pub(super) fn in_stage(record: Option<&StageRecord>) -> bool {
    record.is_some_and(|r| r.ended.is_none() && (r.stage != Stage::Active || r.intended.is_some()))
}

/// One image's step: its record as it will be written, and its report entry.
struct Step {
    record: StageRecord,
    /// Whether `record` must be written (it changed).
    changed: bool,
    entry: RetirementStageEntry,
    /// The evidence acted on, in words (written with the record).
    evidence_words: String,
    /// Whether EC2 lists the image deprecated now.
    deprecated_now: bool,
    /// EC2's state of the image now (`available`, `disabled`, ...).
    state_now: String,
    /// The launch permissions the decision was judged against (the recorded ones once disabled).
    judged: Option<crate::core::LaunchPermissions>,
    /// Whether amiguard's report (the record's id) is listed for this image: only then is it
    /// deleted; an id not listed is forgotten, never deleted (it may name someone else's report).
    own_listed: bool,
    /// Whether the usage report amiguard asked for is done with: read, in error, expired, or no
    /// longer listed (delete it, forget its id); `false` while pending or when the reports could
    /// not be read.
    report_consumed: bool,
}

impl Step {
    fn new(
        image: &StagedImage,
        record: Option<&StageRecord>,
        evidence: &Evidence,
        policy: &StagePolicy,
        now: DateTime<Utc>,
    ) -> Self {
        let (stage, since) = record.map_or((Stage::Active, None), |r| r.effective(image));
        let judged = if stage >= Stage::Disabled {
            record.and_then(|r| r.permissions.as_ref())
        } else {
            evidence.permissions.as_ref()
        };
        let read: Vec<&UsageReport> = evidence.reports.iter().filter(|r| r.entries.is_some()).collect();
        let entry = RetirementStageEntry {
            image_id: image.image_id.clone(),
            name: image.name.clone(),
            shared: judged.is_some_and(|p| p.is_shared()),
            stage,
            since,
            change: StageChange::None,
            next_stage: policy.stages.after(stage),
            next_at: None,
            waiting_for: None,
            why_stopped: None,
            evidence: StageEvidence {
                usage_reports: read.iter().map(|r| r.report_id.clone()).collect(),
                usage_entries: read.iter().flat_map(|r| r.uses().cloned()).collect(),
                referenced: evidence.referenced,
                last_launched: image.last_launched_time,
            },
            gib: image.gib,
        };
        let evidence_words = format!(
            "shared: {:?}; usage reports read: {:?}; uses: {}; referenced: {:?}; last launched: {:?}; in-account instance: {}, launch template: {}",
            judged,
            entry.evidence.usage_reports,
            entry.evidence.usage_entries.len(),
            evidence.referenced,
            image.last_launched_time,
            evidence.used_by_instance,
            evidence.used_by_launch_template
        );
        let own = record
            .and_then(|r| r.report_id.as_deref())
            .and_then(|id| evidence.reports.iter().find(|r| r.report_id == id && r.image_id == image.image_id));
        let own_listed = own.is_some();
        let report_consumed = record.and_then(|r| r.report_id.as_deref()).is_some() && evidence.reports_read && {
            own.is_none_or(|r| r.entries.is_some() || r.state == "error" || r.expires.is_some_and(|at| at <= now))
        };
        let judged = judged.cloned();
        let record = record.cloned().unwrap_or_else(|| StageRecord::candidate(now));
        let deprecated_now = image.deprecation_time.is_some();
        let state_now = image.state.clone();
        Self {
            record,
            changed: false,
            entry,
            evidence_words,
            deprecated_now,
            state_now,
            judged,
            own_listed,
            report_consumed,
        }
    }

    fn stopped(&mut self, change: StageChange, why: String, now: DateTime<Utc>) {
        // amiguard's own deprecation is gone by now (removed, or by a person).
        self.record = StageRecord {
            stage: Stage::Active,
            intended: None,
            ended: Some((now, why.clone())),
            deprecated_by_amiguard: false,
            ..self.record.clone()
        };
        self.changed = true;
        self.entry.change = change;
        self.entry.stage = Stage::Active;
        self.entry.since = None;
        self.entry.next_stage = None;
        self.entry.why_stopped = Some(why);
    }
}

impl<E: Ec2, L: Records> Region<'_, '_, E, L> {
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.run.invocation.now
    }

    /// Takes one image's decision (a dry run only says it), then writes its record if it changed.
    async fn act(&self, step: &mut Step, verdict: &Verdict, warnings: &mut Vec<String>) {
        let dry_run = self.run.dry_run;
        match verdict {
            Verdict::Keep(_) => {}
            Verdict::Wait { waiting_for, next_at, request_report } => {
                step.entry.waiting_for = Some(waiting_for.clone());
                step.entry.next_at = *next_at;
                if !dry_run {
                    self.consume_report(step, warnings).await;
                    if *request_report {
                        self.request_report(step, warnings).await;
                    }
                    // A candidate is remembered from its first run: the first report must be newer.
                    step.changed |= step.record.stage == Stage::Active && step.record.candidate_since == self.now();
                }
            }
            Verdict::Advance(next) if dry_run => {
                step.entry.change = StageChange::WouldAdvance;
                step.entry.next_stage = Some(*next);
                step.entry.next_at = Some(self.now());
            }
            Verdict::Advance(next) => self.advance(step, *next, warnings).await,
            Verdict::Undo(why) if dry_run => step.entry.why_stopped = Some(format!("would undo: {why}")),
            Verdict::Undo(why) => self.undo(step, why, warnings).await,
            Verdict::EndedByPerson(why) if dry_run => {
                step.entry.why_stopped = Some(format!("would put its recorded sharing back and end: {why}"))
            }
            Verdict::EndedByPerson(why) => self.ended_by_person(step, why, warnings).await,
            Verdict::Spared(why) => {
                step.entry.next_stage = None;
                step.entry.why_stopped = Some(why.clone());
                if !dry_run {
                    self.consume_report(step, warnings).await;
                    step.stopped(StageChange::None, why.clone(), self.now());
                }
            }
        }
        if step.changed && !dry_run {
            self.save(step, warnings).await;
        }
    }

    /// Deletes the usage report amiguard asked for once it was read (or failed, or expired).
    async fn consume_report(&self, step: &mut Step, warnings: &mut Vec<String>) {
        let Some(report_id) = step.record.report_id.clone() else { return };
        if !step.report_consumed {
            return;
        }
        if !step.own_listed {
            // Not listed for this image: gone, or not amiguard's; forgotten, never deleted.
            step.record.report_id = None;
            step.record.report_permissions = None;
            step.changed = true;
            return;
        }
        let done =
            self.run.until_cutoff("DeleteImageUsageReport", self.ec2.delete_image_usage_report(&report_id)).await;
        match done {
            Ok(()) => {}
            Err(err) if err.is_not_found() => {}
            Err(err) => {
                warnings.push(format!("{}: usage report {report_id} could not be deleted: {err}", self.region));
                return;
            }
        }
        step.record.report_id = None;
        step.record.report_permissions = None;
        step.changed = true;
    }

    /// Asks for a fresh report, the launch permissions it is judged against recorded with it; the
    /// one amiguard had (no longer evidence: the core asks only when it is not pending) is deleted
    /// first, so that at most one is live.
    async fn request_report(&self, step: &mut Step, warnings: &mut Vec<String>) {
        if step.record.report_id.is_some() {
            step.report_consumed = true;
            self.consume_report(step, warnings).await;
            if step.record.report_id.is_some() {
                return;
            }
        }
        let (image_id, depth) = (&step.entry.image_id, self.run.config.staged_retirement.template_depth);
        match self.run.until_cutoff("CreateImageUsageReport", self.ec2.create_image_usage_report(image_id, depth)).await
        {
            Ok(report_id) => {
                step.record.report_id = Some(report_id);
                step.record.report_permissions = step.judged.clone();
                step.changed = true;
            }
            Err(err) => {
                warnings.push(format!("{}: no usage report of {image_id} could be asked for: {err}", self.region))
            }
        }
    }

    /// Records `next` as intended, takes it, records it done.
    async fn advance(&self, step: &mut Step, next: Stage, warnings: &mut Vec<String>) {
        let now = self.now();
        if self.run.deadline_is_near() || self.run.ledger_failure().is_some() {
            step.entry.waiting_for = Some("left for the next run (deadline near, or the ledger failed)".into());
            return;
        }
        if next == Stage::Disabled {
            // EC2 removes every launch permission on DisableImage: what to put back is these, read
            // now, and never more than the decision was judged against.
            let image_id = step.entry.image_id.clone();
            let now_read =
                self.run.until_cutoff("DescribeImageAttribute", self.ec2.launch_permissions(&image_id)).await;
            let why = match (now_read, step.judged.as_ref()) {
                (Ok(read), Some(judged)) if read.within(judged) => {
                    step.record.permissions = Some(read);
                    None
                }
                (Ok(_), _) => Some("its sharing changed since it was judged: judged again next run".to_string()),
                (Err(err), _) => {
                    Some(format!("its launch permissions could not be read before disabling: {}", err.code))
                }
            };
            if let Some(why) = why {
                warnings.push(format!("{}: {image_id} not disabled: {why}", self.region));
                step.entry.waiting_for = Some(why);
                return;
            }
        }
        self.consume_report(step, warnings).await;
        step.record.intended = Some((next, now));
        if !self.save(step, warnings).await {
            return;
        }
        let image_id = step.entry.image_id.as_str();
        let taken = match next {
            Stage::Deprecated => {
                self.run.until_cutoff("EnableImageDeprecation", self.ec2.enable_image_deprecation(image_id, now)).await
            }
            Stage::Disabled => self.run.until_cutoff("DisableImage", self.ec2.disable_image(image_id)).await,
            // Deregistration goes through `retire_one`; an image the sweep's listing lacks waits.
            _ => Err(AwsError::new("DeregisterImage", "NotListed", "not in this run's image listing: the next run's")),
        };
        match taken {
            Ok(()) => self.took(step, next),
            Err(err) => {
                warnings.push(format!("{}: {image_id} not {}: {err}", self.region, next.name()));
                step.entry.waiting_for = Some(format!("{} failed: {}", next.name(), err.code));
            }
        }
    }

    fn took(&self, step: &mut Step, next: Stage) {
        let now = self.now();
        step.record.stage = next;
        step.record.stage_at = Some(now);
        step.record.began_at = step.record.began_at.or(Some(now));
        step.record.deprecated_by_amiguard |= next == Stage::Deprecated;
        step.record.intended = None;
        step.changed = true;
        step.entry.stage = next;
        step.entry.since = Some(now);
        step.entry.change = StageChange::Advanced;
        step.entry.next_stage = self.policy.stages.after(next);
        step.entry.next_at = step.entry.next_stage.map(|_| now + self.policy.dwell);
        step.entry.waiting_for = None;
    }

    /// The last stage, by today's path: recorded as intended before (the caller's `retire_one`
    /// journaled it), then done.
    async fn finish_deregistration(
        &self,
        step: &mut Step,
        outcome: RetireOutcome,
        error: Option<AwsError>,
        warnings: &mut Vec<String>,
    ) {
        match outcome {
            RetireOutcome::DryRun => {
                step.entry.change = StageChange::WouldAdvance;
                step.entry.next_stage = Some(Stage::Deregistered);
            }
            RetireOutcome::Deregistered | RetireOutcome::AlreadyGone => {
                self.took(step, Stage::Deregistered);
                self.save(step, warnings).await;
            }
            _ => {
                let why = error.map_or_else(
                    || "left for the next run".to_string(),
                    |e| format!("deregistration failed: {}", e.code),
                );
                step.entry.waiting_for = Some(why);
            }
        }
    }

    /// Use seen in amiguard's stage: the stage removed (and the recorded sharing put back), then
    /// recorded; a call that fails leaves the record as it was, so the next run tries again.
    async fn undo(&self, step: &mut Step, why: &str, warnings: &mut Vec<String>) {
        let image_id = step.entry.image_id.clone();
        let undone = match step.entry.stage {
            Stage::Deprecated => {
                self.run.until_cutoff("DisableImageDeprecation", self.ec2.disable_image_deprecation(&image_id)).await
            }
            Stage::Disabled => match self.run.until_cutoff("EnableImage", self.ec2.enable_image(&image_id)).await {
                Ok(()) => match self.restore_sharing(step, &image_id).await {
                    Ok(()) => self.remove_own_deprecation(step, &image_id).await,
                    Err(err) => Err(err),
                },
                Err(err) => Err(err),
            },
            _ => Ok(()),
        };
        match undone {
            Ok(()) => {
                self.consume_report(step, warnings).await;
                step.stopped(StageChange::Undone, why.to_string(), self.now());
            }
            Err(err) => warnings.push(format!(
                "{}: {image_id}: use seen ({why}) but its stage could not be undone: {err}",
                self.region
            )),
        }
    }

    async fn ended_by_person(&self, step: &mut Step, why: &str, warnings: &mut Vec<String>) {
        let image_id = step.entry.image_id.clone();
        if step.state_now != "available" {
            // Someone else left it in another state: amiguard stops and touches nothing; what it
            // left is said, for a person to finish.
            let left = format!(
                "{why} (amiguard's deprecation: {}; recorded sharing: {:?})",
                if step.deprecated_now && step.record.deprecation_is_amiguards() { "left on it" } else { "none" },
                step.record.permissions
            );
            warnings.push(format!("{}: {image_id}: {left}", self.region));
            self.consume_report(step, warnings).await;
            step.stopped(StageChange::EndedByPerson, left, self.now());
            return;
        }
        let restored = match self.restore_sharing(step, &image_id).await {
            Ok(()) => self.remove_own_deprecation(step, &image_id).await,
            Err(err) => Err(err),
        };
        match restored {
            Ok(()) => {
                self.consume_report(step, warnings).await;
                step.stopped(StageChange::EndedByPerson, why.to_string(), self.now());
            }
            Err(err) => {
                warnings.push(format!("{}: {image_id}: its recorded sharing could not be put back: {err}", self.region))
            }
        }
    }

    /// Removes the deprecation amiguard set (never a person's: the ledger says whose it is), once
    /// the retirement ends in a later stage.
    async fn remove_own_deprecation(&self, step: &Step, image_id: &str) -> Result<(), AwsError> {
        if !(step.deprecated_now && step.record.deprecation_is_amiguards()) {
            return Ok(());
        }
        self.run.until_cutoff("DisableImageDeprecation", self.ec2.disable_image_deprecation(image_id)).await
    }

    /// Puts back the launch permissions recorded before amiguard disabled the image, when EC2
    /// shows that stage taken (a DisableImage that failed removed nothing: nothing is re-added).
    /// Disabled with none recorded: an error (the sharing is unknown), never a silent success.
    async fn restore_sharing(&self, step: &Step, image_id: &str) -> Result<(), AwsError> {
        if step.entry.stage < Stage::Disabled {
            return Ok(());
        }
        match &step.record.permissions {
            Some(permissions) => {
                self.run
                    .until_cutoff("ModifyImageAttribute", self.ec2.add_launch_permissions(image_id, permissions))
                    .await
            }
            None => Err(AwsError::new(
                "ModifyImageAttribute",
                "SharingUnknown",
                "amiguard disabled it with no launch permissions recorded: its sharing must be put back by hand",
            )),
        }
    }

    /// Writes the step's record; `false` (a warning, the ledger marked failed) when it could not.
    async fn save(&self, step: &mut Step, warnings: &mut Vec<String>) -> bool {
        // No writable ledger: only a dry run (which takes nothing) goes on.
        let Some(store) = self.run.writable_store() else { return self.run.dry_run };
        let run_id = &self.run.invocation.request_id;
        let write =
            store.record_retirement(self.region, &step.entry.image_id, &step.record, run_id, &step.evidence_words);
        match self.run.until_cutoff("PutItem", write).await {
            Ok(()) => {
                step.changed = false;
                step.record.version += 1;
                true
            }
            Err(err) => {
                self.run.ledger_broke(&err);
                warnings.push(format!(
                    "{}: the retirement record of {} could not be written: {err}",
                    self.region, step.entry.image_id
                ));
                false
            }
        }
    }
}
