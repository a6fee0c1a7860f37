//! untrusted-ami-alert: judges every launch by who owns its AMI, alerts once per instance and
//! image, and optionally tags or stops the instance.
//!
//! Three triggers: an `EC2 Instance State-change Notification` (`pending`/`running`), a CloudTrail
//! `RunInstances` (one report per launched instance), and a `Scheduled Event` that audits every
//! instance that is not terminated (alerts and tags, never stops). The decisions live in `core`
//! (alert-once is `amiguard::alert::once`, a record in `amiguard::ledger`); this handler gathers
//! the facts through the `ports`, calls them and acts; `metrics` is its EMF line.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::core::enforce::{
    self, Enforcement, EnforcementTaken, InstanceState, LaunchedInstance, Occasion, Outcomes, StopStep,
};
use crate::core::fold;
use crate::core::message::{self as alert, AlertDetails, OwnerSource};
use crate::core::policy::{self, TrustPolicy};
use crate::core::provenance::{self, Ancestor, Lineage};
use crate::core::verdict::{self, LaunchImage, Problem, Reason, Verdict};
use crate::event::{Event, Launched};
pub use crate::ports::Ports;
use crate::ports::{CallerIdentity, Ec2, Folded, LaunchMetadata, Records, Slot};
use amiguard::alert::once::{self as sent, AlertClaim, AlertKey, Turn};
use amiguard::alert::AlertPublisher;
use amiguard::alert::Severity;
use amiguard::config::{self, ConfigError, VarSource};
use amiguard::error::AwsError;
use amiguard::events::EventError;
use amiguard::invocation::Invocation;
use amiguard::tags::{self, Tag};

use chrono::{DateTime, Utc};
use serde::Serialize;

pub mod adapters;
pub mod core;
pub mod event;
pub mod metrics;
pub mod ports;

pub use adapters::ec2::Ec2Client;
pub use adapters::sts::StsIdentity;

pub const FUNCTION: &str = "untrusted-ami-alert";

pub const TRUSTED_IMAGE_PROVIDERS: &str = "TRUSTED_IMAGE_PROVIDERS";
pub const ALLOWED_IMAGES_CRITERIA: &str = "ALLOWED_IMAGES_CRITERIA";
pub const TRUST_POLICY_SOURCE: &str = "TRUST_POLICY_SOURCE";
pub const ALERT_TOPIC_ARN: &str = "ALERT_TOPIC_ARN";
pub const ENFORCEMENT: &str = "ENFORCEMENT";
pub const DRY_RUN: &str = "DRY_RUN";

/// The function's configuration, validated whole at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub policy: TrustPolicy,
    pub alert_topic_arn: String,
    pub enforcement: Enforcement,
    /// `CHECK_PROVENANCE` (default true): an image whose owner is trusted is judged again by the
    /// owners of the images it was copied or built from.
    pub check_provenance: bool,
    /// `TRUST_POLICY_SOURCE=account`: `policy` is to be read from the account's own EC2 Allowed
    /// AMIs settings at init ([`Config::with_account_policy`]); `env` (the default) reads it from
    /// the two variables.
    pub policy_from_account: bool,
    /// `FOLD_LAUNCH_ALERTS` (default false: only the audit's digest names folded instances, so
    /// folding is on only where an audit is known to run; the stack sets it so).
    pub fold_launch_alerts: bool,
    /// `DRY_RUN` (default false): judge and report everything, with what a real run would do;
    /// publish nothing, tag nothing, stop nothing, write nothing to the ledger (it is read: a
    /// sent alert is reported as not repeated).
    pub dry_run: bool,
    /// Said in every report: why the policy is not the one configured (the account's settings
    /// could not be used, so the default judges).
    pub policy_note: Option<String>,
}

impl Config {
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        let providers = config::optional(source, TRUSTED_IMAGE_PROVIDERS);
        let criteria = config::optional(source, ALLOWED_IMAGES_CRITERIA);
        let policy_from_account =
            config::choice_var(source, TRUST_POLICY_SOURCE, false, &[("env", false), ("account", true)])?;
        if policy_from_account {
            // The account's settings are the whole policy: a second one would leave the reader
            // guessing which rules.
            if let Some((variable, value)) =
                [(TRUSTED_IMAGE_PROVIDERS, &providers), (ALLOWED_IMAGES_CRITERIA, &criteria)]
                    .into_iter()
                    .find_map(|(variable, value)| value.clone().map(|v| (variable, v)))
            {
                return Err(ConfigError::new(
                    variable,
                    value,
                    format!("to be unset when {TRUST_POLICY_SOURCE}=account"),
                ));
            }
        }
        let policy = match (providers, criteria) {
            // Two policies would leave the reader guessing which one rules: refuse both.
            (Some(_), Some(criteria)) => {
                return Err(ConfigError::new(
                    ALLOWED_IMAGES_CRITERIA,
                    criteria,
                    format!("to be unset when {TRUSTED_IMAGE_PROVIDERS} is set: set one of the two"),
                ))
            }
            (Some(list), None) => TrustPolicy::from_provider_list(&list).map_err(|problem| {
                ConfigError::new(
                    TRUSTED_IMAGE_PROVIDERS,
                    list.clone(),
                    format!(
                        "a comma list of amazon, aws-marketplace, aws-backup-vault, self and 12-digit account ids ({problem})"
                    ),
                )
            })?,
            (None, Some(json)) => TrustPolicy::from_criteria_json(&json).map_err(|problem| {
                ConfigError::new(
                    ALLOWED_IMAGES_CRITERIA,
                    json.clone(),
                    format!("a JSON list of EC2 Allowed AMIs criteria ({problem})"),
                )
            })?,
            (None, None) => TrustPolicy::default(),
        };
        let alert_topic_arn = config::optional(source, ALERT_TOPIC_ARN)
            .ok_or_else(|| ConfigError::new(ALERT_TOPIC_ARN, "", "the ARN of the SNS topic for alerts (required)"))?;
        if !amiguard::aws_words::is_sns_topic_arn(&alert_topic_arn) {
            return Err(ConfigError::new(
                ALERT_TOPIC_ARN,
                alert_topic_arn,
                "an SNS topic ARN: arn:<partition>:sns:<region>:<12-digit account>:<topic name>",
            ));
        }
        let enforcement = config::choice_var(source, ENFORCEMENT, Enforcement::Alert, &Enforcement::CHOICES)?;
        let check_provenance = config::bool_var(source, "CHECK_PROVENANCE", true)?;
        let fold_launch_alerts = config::bool_var(source, "FOLD_LAUNCH_ALERTS", false)?;
        let dry_run = config::bool_var(source, DRY_RUN, false)?;
        Ok(Self {
            policy,
            alert_topic_arn,
            enforcement,
            check_provenance,
            policy_from_account,
            fold_launch_alerts,
            dry_run,
            policy_note: None,
        })
    }

    /// `TRUST_POLICY_SOURCE=account`: the policy is the account's own Allowed AMIs settings
    /// (`state`, `criteria` as `GetAllowedImagesSettings` answered). A setting that is no policy
    /// (`disabled`) or that amiguard cannot evaluate is an init error naming the variable: never
    /// "trust all".
    pub fn with_account_policy(self, state: &str, criteria: serde_json::Value) -> Result<Self, ConfigError> {
        let policy = TrustPolicy::from_account_settings(state, criteria)
            .map_err(|problem| ConfigError::new(TRUST_POLICY_SOURCE, "account", problem))?;
        Ok(Self { policy, ..self })
    }

    /// The account's settings could not be used (`why`): the default policy (`amazon,self`, never
    /// "trust all") judges instead, and every report says so. Alerting goes on: anyone able to
    /// disable the account's Allowed AMIs must not silence amiguard with it.
    pub fn with_default_policy_because(self, why: &str) -> Self {
        Self {
            policy: TrustPolicy::default(),
            policy_note: Some(format!(
                "{TRUST_POLICY_SOURCE}=account: the account's Allowed AMIs settings could not be used ({why}): judged by the default policy ({}) until the function restarts",
                policy::DEFAULT_TRUSTED_PROVIDERS
            )),
            ..self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Trusted,
    Untrusted,
    Skipped,
    Audit,
}

/// What a dry run would have done about an untrusted instance (a real run's reports name none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WouldDo {
    /// Send its alert now (a launch).
    Alert,
    /// Send the follow-up saying that further launches of its image this hour are folded.
    AlertFollowUp,
    /// Fold its alert (its image had its alerts this hour): the next audit's digest would list it.
    FoldAlert,
    /// List it in the audit's digest.
    AlertInDigest,
    /// Tag it `amiguard:untrusted-ami=<image id>`.
    Tag,
    /// Stop it.
    Stop,
    /// Stop it on its `running` event (EC2 cannot stop a `pending` instance).
    StopWhenRunning,
}

/// The verdict on one instance and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceReport {
    pub outcome: Outcome,
    /// `DRY_RUN`: nothing was published, tagged, stopped or written; `would` says what would be.
    pub dry_run: bool,
    pub instance_id: Option<String>,
    pub image_id: Option<String>,
    pub owner_id: Option<String>,
    /// Why untrusted; for `skipped`, why skipped.
    pub reasons: Vec<String>,
    /// For `untrusted`: how loud its alert is (`high`, `medium`), whether or not this invocation
    /// sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The SNS message id of the alert sent by this invocation.
    pub alert_message_id: Option<String>,
    pub enforcement: EnforcementTaken,
    /// The ledger holds the alert for this instance and image: no second alert was sent.
    pub already_alerted: bool,
    /// More than three launches of this image this hour: this one's alert is folded (counted,
    /// listed in the next audit's digest); its enforcement was not.
    pub alert_folded: bool,
    /// What did not work and did not fail the invocation: a tag that could not be written, a
    /// ledger that could not be used (the alert may then repeat).
    pub warnings: Vec<String>,
    /// A dry run's: what a real run would do now (nothing here when it would do nothing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would: Vec<WouldDo>,
}

impl InstanceReport {
    fn skipped(dry_run: bool, instance_id: Option<String>, reason: String) -> Self {
        Self {
            outcome: Outcome::Skipped,
            dry_run,
            instance_id,
            image_id: None,
            owner_id: None,
            reasons: vec![reason],
            severity: None,
            alert_message_id: None,
            enforcement: EnforcementTaken::None,
            already_alerted: false,
            alert_folded: false,
            warnings: Vec::new(),
            would: Vec::new(),
        }
    }
}

/// One untrusted instance found by the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditFinding {
    pub instance_id: String,
    pub image_id: Option<String>,
    pub owner_id: Option<String>,
    pub reasons: Vec<String>,
    /// How loud its alert is (`high`, `medium`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub alert_message_id: Option<String>,
    pub enforcement: EnforcementTaken,
    /// A dry run's: what a real run would do now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would: Vec<WouldDo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Always `audit`.
    pub outcome: Outcome,
    /// `DRY_RUN`: no digest was sent, nothing tagged or written.
    pub dry_run: bool,
    /// Instances judged (every instance that is not terminated).
    pub audited: usize,
    pub untrusted: Vec<AuditFinding>,
    /// Alerts sent by this run (the others were sent before: the ledger holds them).
    pub alerts_sent: usize,
    /// A dry run's: the alerts a real run's digest would send now (the findings whose `would`
    /// says `alert-in-digest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts_would_send: Option<usize>,
    pub warnings: Vec<String>,
}

/// The answer of an invocation: one instance (state change), `instances` (CloudTrail
/// RunInstances: one report per launched instance) or an audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Report {
    Instance(InstanceReport),
    Launch { instances: Vec<InstanceReport> },
    Audit(AuditReport),
}

/// The step of guarding an instance that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedStep {
    /// SNS Publish failed: the claim was given back, so a retry alerts.
    Alert,
    /// Another delivery claimed the alert and has not confirmed it: a retry finds it sent, or
    /// the claim expired and sends it.
    AlertInProgress,
    /// The stop failed.
    Enforcement,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFailure {
    pub instance_id: String,
    pub step: FailedStep,
    pub error: AwsError,
}

impl fmt::Display for InstanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.step {
            FailedStep::Alert => "alert not sent",
            FailedStep::AlertInProgress => "another delivery is sending the alert",
            FailedStep::Enforcement => "enforcement failed",
        };
        write!(f, "{}: {step}: {}", self.instance_id, self.error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// EC2 does not list the instance (yet): right after a launch its APIs can lag, so the
    /// invocation fails and Lambda retries it.
    #[error("instance not found: {}: EC2 may not list a new instance yet; failing so that Lambda retries", .0.join(", "))]
    InstancesNotFound(Vec<String>),
    /// Some instances could not be fully guarded; the others were. A retry is safe: the ledger
    /// keeps alerts single and enforcement is idempotent.
    #[error("{} instance(s) not fully guarded: {}", .0.len(), describe_failures(.0))]
    NotGuarded(Vec<InstanceFailure>),
}

fn describe_failures(failures: &[InstanceFailure]) -> String {
    let shown: Vec<String> = failures.iter().take(5).map(ToString::to_string).collect();
    let more = failures.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{}; and {more} more", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        let error_type = match &err {
            Error::Event(event) => return event.clone().into(),
            Error::Aws(aws) => format!("AwsError.{}", aws.code),
            Error::InstancesNotFound(_) => "InstanceNotFound".to_string(),
            Error::NotGuarded(failures) => match failures.first().map(|f| f.step) {
                Some(FailedStep::Alert) => "AlertNotSent".to_string(),
                Some(FailedStep::AlertInProgress) => "AlertInProgress".to_string(),
                _ => "EnforcementFailed".to_string(),
            },
        };
        lambda_runtime::Diagnostic { error_type, error_message: err.to_string() }
    }
}

/// Handles one event. The invocation's clock dates the age conditions of the policy and the
/// ledger's claims.
pub async fn handle<E, P, I, L>(
    config: &Config,
    clients: &Ports<E, P, I, L>,
    payload: &serde_json::Value,
    invocation: &Invocation,
) -> Result<Report, Error>
where
    E: Ec2,
    P: AlertPublisher,
    I: CallerIdentity,
    L: Records,
{
    let event = crate::event::parse(payload)?;
    if let Some(region) = event.origin().region.as_deref().filter(|r| *r != clients.region) {
        return Err(EventError::Unexpected(format!(
            "event from region {region}: this function watches {} (deploy it in each region)",
            clients.region
        ))
        .into());
    }
    let skipped = |instance_id: Option<String>, reason: String| {
        Ok(Report::Instance(InstanceReport::skipped(config.dry_run, instance_id, reason)))
    };
    let result = match event {
        Event::StateChange { instance_id, state, .. } if state != "pending" && state != "running" => skipped(
            Some(instance_id),
            format!("instance state {state}: only pending and running (launches) are judged"),
        ),
        Event::RunInstancesFailed { error_code, .. } if error_code.ends_with("DryRunOperation") => {
            skipped(None, format!("a DryRun RunInstances call ({error_code}): no instance was launched"))
        }
        Event::RunInstancesFailed { error_code, .. } => {
            skipped(None, format!("RunInstances failed ({error_code}): no instance was launched"))
        }
        Event::RunInstancesUnrecorded { .. } => skipped(
            None,
            "CloudTrail recorded no response for this RunInstances (responseElements null): the instances' \
             state-change events judge them"
                .into(),
        ),
        Event::OtherApiCall { event_name, .. } => {
            skipped(None, format!("CloudTrail event for {event_name}: only RunInstances is judged"))
        }
        Event::StateChange { instance_id, state, origin } => {
            let account = this_account(origin.account, clients).await?;
            let ctx = Context::new(config, clients, &account, invocation);
            let launched = vec![Launched { instance_id, image_id: None }];
            ctx.launch(launched, Occasion::StateChange(state), origin.time).await.map(|mut reports| {
                let only = reports.pop();
                only.map(Report::Instance).unwrap_or(Report::Launch { instances: vec![] })
            })
        }
        Event::RunInstances { instances, origin } => {
            let account = this_account(origin.account, clients).await?;
            let ctx = Context::new(config, clients, &account, invocation);
            ctx.launch(instances, Occasion::RunInstances, origin.time)
                .await
                .map(|instances| Report::Launch { instances })
        }
        Event::Audit { origin } => {
            let account = this_account(origin.account, clients).await?;
            let ctx = Context::new(config, clients, &account, invocation);
            ctx.audit().await
        }
    };
    let mut result = result;
    if let Ok(report) = &mut result {
        let mut warnings = config.policy.warnings();
        warnings.extend(config.policy_note.clone());
        report.add_warnings(&warnings);
        log(report, invocation);
    }
    result
}

/// Logs the report as one line, then its EMF lines: also when the invocation fails after some
/// alerts went out (those were sent, and count).
fn log(report: &Report, invocation: &Invocation) {
    amiguard::report::log(FUNCTION, report);
    for line in metrics::emf_lines(report, invocation.clock()) {
        println!("{line}");
    }
}

impl Report {
    /// Warnings about the whole invocation (the policy's), on each instance's report.
    fn add_warnings(&mut self, warnings: &[String]) {
        match self {
            Self::Instance(one) => one.warnings.extend_from_slice(warnings),
            Self::Launch { instances } => instances.iter_mut().for_each(|i| i.warnings.extend_from_slice(warnings)),
            Self::Audit(audit) => audit.warnings.extend_from_slice(warnings),
        }
    }
}

/// What a best-effort lookup found, or nothing (logged): it only loses detail, never the verdict.
fn or_logged<T>(result: Result<Vec<T>, AwsError>, what: &str) -> Vec<T> {
    result.unwrap_or_else(|err| {
        tracing::warn!(function = FUNCTION, error = %err, "{what} could not be read");
        Vec::new()
    })
}

/// `self`: the event's account; STS only when the event does not say.
async fn this_account<E, P, I: CallerIdentity, L>(
    account: Option<String>,
    clients: &Ports<E, P, I, L>,
) -> Result<String, Error> {
    match account {
        Some(account) => Ok(account),
        None => Ok(clients.identity.account_id().await?),
    }
}

struct Context<'a, E, P, I, L> {
    config: &'a Config,
    clients: &'a Ports<E, P, I, L>,
    account: &'a str,
    invocation: &'a Invocation,
    /// A dry run's launch alerts per image so far in this invocation: they take no slot in the
    /// ledger, so the next launch of the same image counts them to say whether it would fold.
    previewed_alerts: std::sync::Mutex<HashMap<String, u32>>,
}

impl<'a, E, P, I, L> Context<'a, E, P, I, L> {
    fn new(config: &'a Config, clients: &'a Ports<E, P, I, L>, account: &'a str, invocation: &'a Invocation) -> Self {
        Self { config, clients, account, invocation, previewed_alerts: Default::default() }
    }
}

/// What one instance's guarding produced.
struct Guarded {
    report: InstanceReport,
    failures: Vec<InstanceFailure>,
    /// The audit's: an alert claimed for the digest, not sent yet.
    pending: Option<PendingAlert>,
}

/// An alert the audit claimed in the ledger and sends in its digest.
struct PendingAlert {
    claim: Option<AlertClaim>,
    details: AlertDetails,
}

/// What becomes of a folded launch alert at an audit.
enum FoldedFate {
    /// Its instance is in this audit's digest already.
    InDigest,
    /// Claimed from its record: it goes in the digest.
    Claimed(Box<PendingAlert>),
    /// The ledger says it was sent: only its record is forgotten.
    SentBefore,
}

/// An alert for the digest, with the index of the instance report it belongs to (none for a
/// folded alert of an instance this audit did not judge).
type DigestEntry = (Option<usize>, PendingAlert);

/// The digest's parts: at most [`alert::DIGEST_FINDINGS_PER_MESSAGE`] findings and about
/// [`alert::DIGEST_PART_BYTES`] of their JSON each (a finding alone always makes a part).
/// `(n, part, number of parts)`.
fn digest_parts(pending: &[DigestEntry]) -> Vec<(usize, &[DigestEntry], usize)> {
    let mut bounds = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, alert)) in pending.iter().enumerate() {
        let size = serde_json::to_string(&alert.details).map(|j| j.len()).unwrap_or(0) + 500;
        if i > start && (i - start >= alert::DIGEST_FINDINGS_PER_MESSAGE || bytes + size > alert::DIGEST_PART_BYTES) {
            bounds.push((start, i));
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < pending.len() {
        bounds.push((start, pending.len()));
    }
    let count = bounds.len();
    bounds.into_iter().enumerate().map(|(n, (a, b))| (n, &pending[a..b], count)).collect()
}

impl<E: Ec2, P: AlertPublisher, I: CallerIdentity, L: Records> Context<'_, E, P, I, L> {
    /// A launch: the instances named by the event, judged as EC2 describes them now. One EC2
    /// no longer lists (a short-lived instance, terminated before this ran) is still judged, by
    /// the image EC2's launch metadata recorded (or, for an event over an hour old, the one the
    /// launch's record names): alerted once, with nothing to enforce.
    async fn launch(
        &self,
        launched: Vec<Launched>,
        occasion: Occasion,
        event_time: Option<DateTime<Utc>>,
    ) -> Result<Vec<InstanceReport>, Error> {
        let instance_ids: Vec<String> = launched.iter().map(|l| l.instance_id.clone()).collect();
        let mut instances = self.clients.ec2.instances(&instance_ids).await?;
        let known: HashSet<String> = instances.iter().map(|i| i.instance_id.clone()).collect();
        let unlisted: Vec<&Launched> = launched.iter().filter(|l| !known.contains(&l.instance_id)).collect();
        let (gone, missing, notes) = self.unlisted(&unlisted, event_time).await;
        instances.extend(gone);
        // In the event's order; the ones EC2 knows are guarded even when others are missing.
        let mut ordered: Vec<LaunchedInstance> = Vec::with_capacity(instances.len());
        for id in &instance_ids {
            ordered.extend(instances.iter().filter(|i| &i.instance_id == id).take(1).cloned());
        }
        let guarded = self.guard(&ordered, &occasion).await?;
        let mut failures = Vec::new();
        let mut reports = Vec::new();
        for mut g in guarded {
            failures.extend(g.failures);
            let id = g.report.instance_id.as_deref();
            g.report.warnings.extend(notes.iter().filter(|(i, _)| Some(i.as_str()) == id).map(|(_, n)| n.clone()));
            reports.push(g.report);
        }
        if !failures.is_empty() || !missing.is_empty() {
            log(&Report::Launch { instances: reports }, self.invocation);
            return Err(if failures.is_empty() {
                Error::InstancesNotFound(missing)
            } else {
                Error::NotGuarded(failures)
            });
        }
        Ok(reports)
    }

    /// The instances EC2 does not list, as far as they can be judged. EC2 keeps listing a
    /// terminated instance for about an hour, so one it does not list is gone when its launch
    /// metadata says so, or when the event is older than that; anything else may be EC2 lagging
    /// right after a launch (the retry judges and enforces it). The image is EC2's launch
    /// metadata's; the record's `imageId` (which a direct invoker can write) only when EC2 has
    /// none to give. Answers those judged (`Unlisted`), the ids left for the retry, and notes
    /// for the reports.
    async fn unlisted(
        &self,
        unlisted: &[&Launched],
        event_time: Option<DateTime<Utc>>,
    ) -> (Vec<LaunchedInstance>, Vec<String>, Vec<(String, String)>) {
        const LISTED_AFTER_TERMINATION: chrono::Duration = chrono::Duration::hours(1);
        let ask: Vec<String> = unlisted.iter().map(|l| l.instance_id.clone()).collect();
        let metadata: HashMap<String, LaunchMetadata> = if ask.is_empty() {
            HashMap::new()
        } else {
            let found =
                or_logged(self.clients.ec2.launch_image_metadata(&ask).await, "launch metadata of unlisted instances");
            found.into_iter().map(|m| (m.instance_id.clone(), m)).collect()
        };
        let old_event = event_time.is_some_and(|t| self.invocation.now - t > LISTED_AFTER_TERMINATION);
        let (mut gone, mut missing, mut notes) = (Vec::new(), Vec::new(), Vec::new());
        for launched in unlisted {
            let id = &launched.instance_id;
            let recorded = metadata.get(id);
            let state = recorded.and_then(|m| m.instance_state.as_ref());
            let is_gone = match state {
                Some(state) => state.is_gone() || *state == InstanceState::ShuttingDown,
                None => old_event,
            };
            let image_id = match (recorded, &launched.image_id) {
                (Some(m), Some(named)) if &m.image.image_id != named => {
                    notes.push((
                        id.clone(),
                        format!(
                            "the event names image {named}, EC2's launch metadata {}: EC2's is judged",
                            m.image.image_id
                        ),
                    ));
                    Some(m.image.image_id.clone())
                }
                (Some(m), _) => Some(m.image.image_id.clone()),
                (None, named) => named.clone(),
            };
            match image_id {
                Some(image_id) if is_gone => gone.push(LaunchedInstance {
                    instance_id: id.clone(),
                    image_id: Some(image_id),
                    state: InstanceState::Unlisted,
                }),
                _ => missing.push(id.clone()),
            }
        }
        (gone, missing, notes)
    }

    /// The audit: every instance that is not terminated. It alerts and tags, never stops.
    async fn audit(&self) -> Result<Report, Error> {
        let instances = self.clients.ec2.live_instances().await?;
        let mut guarded = self.guard(&instances, &Occasion::Audit).await?;
        let mut failures = Vec::new();
        let mut untrusted = Vec::new();
        let mut warnings = Vec::new();
        let folded = self.folded_for_digest(&guarded, &mut warnings).await;
        let gone = self.send_digest(&mut guarded, folded, &mut failures, &mut warnings).await;
        let mut alerts_sent = gone.iter().filter(|f| f.alert_message_id.is_some()).count();
        // Folded launch alerts of instances gone since, sent by this digest: findings too.
        untrusted.extend(gone);
        for Guarded { report, failures: f, .. } in guarded {
            failures.extend(f);
            warnings.extend(report.warnings.iter().cloned());
            alerts_sent += usize::from(report.alert_message_id.is_some());
            if report.outcome == Outcome::Untrusted {
                untrusted.push(AuditFinding {
                    instance_id: report.instance_id.unwrap_or_default(),
                    image_id: report.image_id,
                    owner_id: report.owner_id,
                    reasons: report.reasons,
                    severity: report.severity,
                    alert_message_id: report.alert_message_id,
                    enforcement: report.enforcement,
                    would: report.would,
                });
            }
        }
        let alerts_would_send =
            self.config.dry_run.then(|| untrusted.iter().filter(|f| f.would.contains(&WouldDo::AlertInDigest)).count());
        let report = Report::Audit(AuditReport {
            outcome: Outcome::Audit,
            dry_run: self.config.dry_run,
            audited: instances.len(),
            untrusted,
            alerts_sent,
            alerts_would_send,
            warnings,
        });
        if !failures.is_empty() {
            log(&report, self.invocation);
            return Err(Error::NotGuarded(failures));
        }
        Ok(report)
    }

    /// The folded launch alerts the ledger keeps, for the digest. One whose instance this audit
    /// claimed goes out with it; one the ledger says was sent (a claim answered sent, or the
    /// audit found it alerted) is forgotten; any other (gone since, judged otherwise now, or
    /// claimed by nobody yet) is claimed from its record and sent from it: a folded alert is
    /// forgotten only once it is known to be sent.
    async fn folded_for_digest(&self, guarded: &[Guarded], warnings: &mut Vec<String>) -> Vec<(FoldedFate, Folded)> {
        let Some(store) = &self.clients.ledger else { return Vec::new() };
        let (records, unreadable) = match store.folded(&self.clients.region).await {
            Ok(read) => read,
            Err(err) => {
                warnings.push(format!("the folded launch alerts could not be read ({err}): the next audit sends them"));
                return Vec::new();
            }
        };
        if unreadable > 0 {
            warnings
                .push(format!("{unreadable} folded launch alert record(s) could not be read: they stay in the ledger"));
        }
        let mut out = Vec::new();
        for record in records {
            let (instance, image) = (record.details.instance_id.as_str(), record.details.image_id.as_str());
            let judged = guarded.iter().find(|g| {
                g.report.instance_id.as_deref() == Some(instance) && g.report.image_id.as_deref() == Some(image)
            });
            match judged {
                Some(g) if g.pending.is_some() => {
                    out.push((FoldedFate::InDigest, record));
                    continue;
                }
                Some(g) if g.report.already_alerted => {
                    out.push((FoldedFate::SentBefore, record));
                    continue;
                }
                _ => {}
            }
            let key = AlertKey::untrusted(&self.clients.region, instance, image);
            match self.alert_turn(Some(store), &key).await {
                Turn::Send(claim, _) => {
                    let alert = PendingAlert { claim, details: record.details.clone() };
                    out.push((FoldedFate::Claimed(Box::new(alert)), record))
                }
                Turn::AlreadySent => out.push((FoldedFate::SentBefore, record)),
                // Another delivery holds it: the record waits for the next digest.
                Turn::InProgress => {}
            }
        }
        out
    }

    /// The audit's digest of every instance it claimed an alert for, and of the folded launch
    /// alerts (nothing claimed: nothing sent), in parts of at most
    /// [`alert::DIGEST_FINDINGS_PER_MESSAGE`] findings and about
    /// [`alert::DIGEST_PART_BYTES`]. Each part sent confirms its claims with its message id; a
    /// part SNS refuses gives its claims back and fails the invocation, so that the retry sends it
    /// (the parts sent stay sent). Folded records are forgotten once known sent. Answers the
    /// folded alerts of instances this audit did not judge that it sent (they are findings too).
    async fn send_digest(
        &self,
        guarded: &mut [Guarded],
        folded: Vec<(FoldedFate, Folded)>,
        failures: &mut Vec<InstanceFailure>,
        warnings: &mut Vec<String>,
    ) -> Vec<AuditFinding> {
        // (the report it belongs to, the alert); folded alerts of gone instances have no report.
        let mut pending: Vec<DigestEntry> = Vec::new();
        for (i, g) in guarded.iter_mut().enumerate() {
            if let Some(p) = g.pending.take() {
                pending.push((Some(i), p));
            }
        }
        let mut records: Vec<(Folded, bool)> = Vec::new();
        for (fate, record) in folded {
            let sent_before = matches!(fate, FoldedFate::SentBefore);
            if let FoldedFate::Claimed(alert) = fate {
                pending.push((None, *alert));
            }
            records.push((record, sent_before));
        }
        if self.config.dry_run {
            // Nothing published, confirmed or forgotten: each alert is one a real digest would
            // send (a folded one of an instance gone since is a finding of its own).
            let mut from_records = Vec::new();
            for (index, PendingAlert { details, .. }) in pending {
                match index {
                    Some(i) => guarded[i].report.would.push(WouldDo::AlertInDigest),
                    None => from_records.push(AuditFinding {
                        instance_id: details.instance_id,
                        image_id: Some(details.image_id),
                        owner_id: details.owner_id,
                        reasons: details.reasons,
                        severity: Some(details.severity),
                        alert_message_id: None,
                        enforcement: details.enforcement,
                        would: vec![WouldDo::AlertInDigest],
                    }),
                }
            }
            return from_records;
        }
        let mut sent_ids: Vec<(String, String)> = Vec::new();
        let mut from_records = Vec::new();
        for (n, part, count) in digest_parts(&pending) {
            let findings: Vec<AlertDetails> = part.iter().map(|(_, p)| p.details.clone()).collect();
            let numbered = (count > 1).then_some((n + 1, count));
            let digest = alert::compose_digest(&findings, self.account, &self.clients.region, numbered);
            let published = self.clients.alerts.publish(&digest).await;
            for (index, PendingAlert { claim, details }) in part {
                match (&published, claim, &self.clients.ledger) {
                    (Ok(message_id), Some(claim), Some(store)) => {
                        if let Err(err) =
                            sent::confirm(store, claim, &details.image_id, message_id, self.invocation.clock()).await
                        {
                            warnings.push(format!(
                                "the ledger could not record the alert of {} as sent ({err}): it may repeat",
                                details.instance_id
                            ));
                        }
                    }
                    (Err(_), Some(claim), Some(store)) => {
                        let _ = sent::release(store, claim).await;
                    }
                    _ => {}
                }
                match &published {
                    Ok(message_id) => {
                        sent_ids.push((details.instance_id.clone(), details.image_id.clone()));
                        match index {
                            Some(i) => guarded[*i].report.alert_message_id = Some(message_id.clone()),
                            None => from_records.push(AuditFinding {
                                instance_id: details.instance_id.clone(),
                                image_id: Some(details.image_id.clone()),
                                owner_id: details.owner_id.clone(),
                                reasons: details.reasons.clone(),
                                severity: Some(details.severity),
                                alert_message_id: Some(message_id.clone()),
                                enforcement: details.enforcement,
                                would: Vec::new(),
                            }),
                        }
                    }
                    Err(error) => failures.push(InstanceFailure {
                        instance_id: details.instance_id.clone(),
                        step: FailedStep::Alert,
                        error: error.clone(),
                    }),
                }
            }
        }
        if let Some(store) = &self.clients.ledger {
            for (record, sent_before) in &records {
                let ids = (record.details.instance_id.clone(), record.details.image_id.clone());
                if *sent_before || sent_ids.contains(&ids) {
                    if let Err(err) = store.forget_folded(&self.clients.region, record).await {
                        warnings
                            .push(format!("a folded alert's record stays ({err}): the next digest may list it again"));
                    }
                }
            }
        }
        from_records
    }

    /// Reads the images of `instances` once, then guards each instance.
    async fn guard(&self, instances: &[LaunchedInstance], occasion: &Occasion) -> Result<Vec<Guarded>, Error> {
        let mut image_ids: Vec<String> = instances.iter().filter_map(|i| i.image_id.clone()).collect();
        image_ids.sort();
        image_ids.dedup();
        let images: HashMap<String, LaunchImage> = if image_ids.is_empty() {
            HashMap::new()
        } else {
            self.clients.ec2.visible_images(&image_ids).await?.into_iter().map(|i| (i.image_id.clone(), i)).collect()
        };
        let hidden: Vec<String> = instances
            .iter()
            .filter(|i| i.image_id.as_ref().is_some_and(|id| !images.contains_key(id)))
            .map(|i| i.instance_id.clone())
            .collect();
        let launch_metadata = self.launch_metadata(&hidden).await;
        let provenance = if self.config.check_provenance { self.provenance(&images).await } else { HashMap::new() };
        let mut guarded = Vec::with_capacity(instances.len());
        for instance in instances {
            let image = instance.image_id.as_ref().and_then(|id| images.get(id));
            let made_from = instance.image_id.as_ref().and_then(|id| provenance.get(id));
            let metadata = launch_metadata.get(&instance.instance_id);
            guarded.push(self.guard_one(instance, image, metadata, made_from, occasion).await);
        }
        Ok(guarded)
    }

    /// The verdict on the image's owner: the policy's, except where the policy is the account's
    /// own Allowed AMIs settings and EC2 says whether it allows the image (`ImageAllowed`): then
    /// EC2's word decides, so amiguard and EC2 agree by construction. Provenance comes after.
    fn owner_verdict(&self, image: Option<&LaunchImage>) -> Verdict {
        let verdict = verdict::verdict(&self.config.policy, image, self.account, self.invocation.now);
        match (self.config.policy.defers_to_ec2(), image.and_then(|i| i.image_allowed), verdict) {
            (true, Some(false), Verdict::Untrusted { mut reasons, .. }) => {
                reasons.insert(0, Reason { criterion: None, problem: Problem::NotAllowedByEc2 });
                Verdict::Untrusted { reasons, severity: Severity::High }
            }
            (true, Some(false), Verdict::Trusted) => Verdict::Untrusted {
                reasons: vec![Reason { criterion: None, problem: Problem::NotAllowedByEc2 }],
                severity: Severity::High,
            },
            (true, Some(true), _) => Verdict::Trusted,
            (_, _, verdict) => verdict,
        }
    }

    /// Provenance of the images whose owner the policy trusts by id (`self`, an account id):
    /// who made each of their ancestors. Images trusted by alias (`amazon`, `aws-marketplace`,
    /// `aws-backup-vault`) are AWS's or verified publishers' and are not traced. Answers the
    /// problem of each image whose lineage is not trusted.
    async fn provenance(&self, images: &HashMap<String, LaunchImage>) -> HashMap<String, Problem> {
        let traced: Vec<&LaunchImage> = images
            .values()
            .filter(|i| i.owner_alias.is_none())
            .filter(|i| self.owner_verdict(Some(i)).is_trusted())
            .collect();
        let mut lineages: Vec<(&LaunchImage, Lineage)> = Vec::with_capacity(traced.len());
        for image in traced {
            let lineage = match self.clients.ec2.image_ancestry(&image.image_id).await {
                Ok(ancestors) => Lineage::Ancestors(ancestors),
                // A copy still names its source on DescribeImages: that one step can be judged.
                Err(_) if image.source_image_id.is_some() => Lineage::Ancestors(vec![Ancestor {
                    image_id: image.source_image_id.clone().unwrap_or_default(),
                    region: image.source_image_region.clone(),
                    ..Ancestor::default()
                }]),
                Err(err) => Lineage::Unreadable(err.to_string()),
            };
            lineages.push((image, lineage));
        }
        // Owner ids of the ancestors in this region (GetImageAncestry gives only aliases); one in
        // another region, or not visible, stays unknown: unverifiable unless its alias is trusted.
        let mut ask: Vec<String> = lineages
            .iter()
            .filter_map(|(_, l)| match l {
                Lineage::Ancestors(a) => Some(a),
                Lineage::Unreadable(_) => None,
            })
            .flatten()
            .filter(|a| a.region.as_deref().is_none_or(|r| r == self.clients.region))
            .map(|a| a.image_id.clone())
            .collect();
        ask.sort();
        ask.dedup();
        // A lookup that fails leaves those owners unknown (provenance unverifiable): it never
        // keeps the invocation from alerting on what it knows.
        let owners: HashMap<String, LaunchImage> = if ask.is_empty() {
            HashMap::new()
        } else {
            let found = or_logged(self.clients.ec2.visible_images(&ask).await, "the owners of ancestor images");
            found.into_iter().map(|i| (i.image_id.clone(), i)).collect()
        };
        let mut problems = HashMap::new();
        for (image, mut lineage) in lineages {
            if let Lineage::Ancestors(ancestors) = &mut lineage {
                for ancestor in ancestors.iter_mut() {
                    if let Some(seen) = owners.get(&ancestor.image_id) {
                        ancestor.owner_id = Some(seen.owner_id.clone()).filter(|o| !o.is_empty());
                        ancestor.owner_alias = ancestor.owner_alias.clone().or_else(|| seen.owner_alias.clone());
                    }
                }
            }
            if let Some(problem) = provenance::judge(&self.config.policy, &image.image_id, &lineage, self.account) {
                problems.insert(image.image_id.clone(), problem);
            }
        }
        problems
    }

    /// The owners of images that are no longer visible, as EC2 recorded them at launch. Only
    /// detail for the alert (the verdict stays "not visible"), so a failure is logged, not fatal.
    async fn launch_metadata(&self, instance_ids: &[String]) -> HashMap<String, LaunchImage> {
        if instance_ids.is_empty() {
            return HashMap::new();
        }
        let found = or_logged(
            self.clients.ec2.launch_image_metadata(instance_ids).await,
            "launch metadata (the owners of invisible images)",
        );
        found.into_iter().map(|m| (m.instance_id, m.image)).collect()
    }

    async fn guard_one(
        &self,
        instance: &LaunchedInstance,
        image: Option<&LaunchImage>,
        launch_metadata: Option<&LaunchImage>,
        made_from: Option<&Problem>,
        occasion: &Occasion,
    ) -> Guarded {
        let instance_id = instance.instance_id.clone();
        let Some(image_id) = instance.image_id.clone() else {
            let report = InstanceReport::skipped(
                self.config.dry_run,
                Some(instance_id),
                "EC2 reports no image id for the instance".into(),
            );
            return Guarded { report, failures: vec![], pending: None };
        };
        // Who owns it (as the policy, or EC2's own Allowed AMIs verdict, says), then who made it:
        // an image whose owner is trusted but whose lineage is not is untrusted (high), or
        // cannot be verified (medium).
        let verdict = match (self.owner_verdict(image), made_from) {
            (Verdict::Trusted, Some(problem)) => {
                let severity = match problem {
                    Problem::ProvenanceUnverifiable { .. } => Severity::Medium,
                    _ => Severity::High,
                };
                Verdict::Untrusted { reasons: vec![Reason { criterion: None, problem: problem.clone() }], severity }
            }
            (verdict, _) => verdict,
        };
        let (owner, owner_source) = match (image, launch_metadata) {
            (Some(image), _) => (Some(image), OwnerSource::Image),
            (None, Some(recorded)) => (Some(recorded), OwnerSource::LaunchMetadata),
            (None, None) => (None, OwnerSource::Unknown),
        };
        let owner_id = owner.map(|o| o.owner_id.clone()).filter(|id| !id.is_empty());
        let Verdict::Untrusted { reasons, severity } = verdict else {
            let report = InstanceReport {
                outcome: Outcome::Trusted,
                dry_run: self.config.dry_run,
                instance_id: Some(instance_id),
                image_id: Some(image_id),
                owner_id,
                reasons: vec![],
                severity: None,
                alert_message_id: None,
                enforcement: EnforcementTaken::None,
                already_alerted: false,
                alert_folded: false,
                warnings: vec![],
                would: vec![],
            };
            return Guarded { report, failures: vec![], pending: None };
        };
        let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        let plan = enforce::plan(self.config.enforcement, occasion, &instance.state);
        let dry_run = self.config.dry_run;
        let mut failures = Vec::new();
        let mut warnings = Vec::new();
        let mut would = Vec::new();

        // Enforce first, so that the alert says what was done. A tag that cannot be written is
        // said in the alert and the report; only a failed stop fails the invocation (its retry
        // stops the instance and does not alert again).
        let mut tag_error = None;
        if plan.tag && dry_run {
            would.push(WouldDo::Tag);
        } else if plan.tag {
            let tag = Tag::new(tags::UNTRUSTED_AMI, &image_id);
            if let Err(error) = self.clients.ec2.tag_instance(&instance_id, &tag).await {
                warnings
                    .push(format!("the tag {} could not be written on {instance_id}: {error}", tags::UNTRUSTED_AMI));
                tag_error = Some(error);
            }
        }
        let (mut stop, mut stop_error) = (None, None);
        match plan.stop {
            StopStep::Now if dry_run => would.push(WouldDo::Stop),
            StopStep::WhenRunning if dry_run => would.push(WouldDo::StopWhenRunning),
            StopStep::Now => match self.clients.ec2.stop_instance(&instance_id).await {
                Ok(outcome) => stop = Some(outcome),
                Err(error) => stop_error = Some(error),
            },
            _ => {}
        }
        let outcomes =
            Outcomes { tag_failed: tag_error.is_some(), stop: stop.as_ref(), stop_failed: stop_error.is_some() };
        let enforcement = match enforce::taken(self.config.enforcement, &plan, outcomes) {
            // Nothing was tagged or stopped: `would` says what would be.
            EnforcementTaken::InstanceGone => EnforcementTaken::InstanceGone,
            _ if dry_run => EnforcementTaken::None,
            taken => taken,
        };
        if let Some(error) = &stop_error {
            failures.push(InstanceFailure {
                instance_id: instance_id.clone(),
                step: FailedStep::Enforcement,
                error: error.clone(),
            });
        }

        let mut alert_message_id = None;
        let mut already_alerted = false;
        let mut alert_folded = false;
        let mut pending = None;
        let key = AlertKey::untrusted(&self.clients.region, &instance_id, &image_id);
        match self.alert_turn(self.clients.ledger.as_ref(), &key).await {
            Turn::AlreadySent => already_alerted = true,
            Turn::InProgress if dry_run => warnings.push(
                "another delivery holds this alert's claim and has not sent it yet: a real run would wait for it"
                    .into(),
            ),
            Turn::InProgress => failures.push(InstanceFailure {
                instance_id: instance_id.clone(),
                step: FailedStep::AlertInProgress,
                error: AwsError::new(
                    "Publish",
                    "AlertInProgress",
                    "another delivery claimed this alert and has not sent it yet",
                ),
            }),
            Turn::Send(claim, ledger_warning) => {
                warnings.extend(ledger_warning.clone());
                let details = AlertDetails {
                    instance_id: instance_id.clone(),
                    instance_state: instance.state.to_string(),
                    image_id: image_id.clone(),
                    owner_id: owner_id.clone(),
                    owner_alias: owner.and_then(|o| o.owner_alias.clone()),
                    owner_source,
                    image_name: owner.and_then(|o| o.name.clone()),
                    reasons: reasons.clone(),
                    severity,
                    region: self.clients.region.clone(),
                    account: self.account.to_string(),
                    seen_on: occasion.to_string(),
                    enforcement_mode: self.config.enforcement,
                    enforcement,
                    enforcement_error: stop_error.as_ref().map(ToString::to_string),
                    tag_error: tag_error.as_ref().map(ToString::to_string),
                    policy: self.config.policy.to_string(),
                    ledger_warning,
                };
                // The audit sends one digest for all it found; a launch alerts now, unless its
                // image has had its three alerts (and the follow-up) this hour.
                if dry_run {
                    let next = if occasion.is_audit() {
                        pending = Some(PendingAlert { claim: None, details });
                        None
                    } else {
                        Some(self.previewed_launch_alert(&details.image_id, &mut warnings).await)
                    };
                    would.extend(next);
                    let report = InstanceReport {
                        outcome: Outcome::Untrusted,
                        dry_run,
                        instance_id: Some(instance_id),
                        image_id: Some(image_id),
                        owner_id,
                        reasons,
                        severity: Some(severity),
                        alert_message_id: None,
                        enforcement,
                        already_alerted,
                        alert_folded,
                        warnings,
                        would,
                    };
                    return Guarded { report, failures, pending };
                }
                let slot =
                    if occasion.is_audit() { None } else { Some(self.launch_slot(&details, &mut warnings).await) };
                let message = match slot {
                    None => {
                        pending = Some(PendingAlert { claim, details });
                        None
                    }
                    Some(Slot::Folded) => {
                        // Unsent (the folded record, kept by `launch_slot`, waits for the digest).
                        if let (Some(claim), Some(store)) = (&claim, &self.clients.ledger) {
                            let _ = sent::release(store, claim).await;
                        }
                        alert_folded = true;
                        warnings.push(format!(
                            "more than {} launches of {image_id} this hour: this alert is folded (the next audit's digest lists it)",
                            fold::ALERTS_PER_HOUR
                        ));
                        None
                    }
                    Some(Slot::FollowUp(taken)) => {
                        Some((alert::compose_follow_up(&details, occasion, taken.n), claim, Some(taken)))
                    }
                    Some(Slot::Alert(taken)) => Some((alert::compose(&details, occasion), claim, Some(taken))),
                    Some(Slot::Uncounted) => Some((alert::compose(&details, occasion), claim, None)),
                };
                if let Some((message, claim, taken)) = message {
                    match self.clients.alerts.publish(&message).await {
                        Ok(message_id) => {
                            if let (Some(claim), Some(store)) = (&claim, &self.clients.ledger) {
                                if let Err(err) =
                                    sent::confirm(store, claim, &image_id, &message_id, self.invocation.now).await
                                {
                                    warnings.push(format!(
                                        "the ledger could not record the alert as sent ({err}): it may repeat"
                                    ));
                                }
                            }
                            alert_message_id = Some(message_id);
                        }
                        Err(error) => {
                            // Give the claim back so that the retry alerts at once (else it
                            // expires), and the slot: an alert not sent does not count.
                            if let (Some(claim), Some(store)) = (&claim, &self.clients.ledger) {
                                let _ = sent::release(store, claim).await;
                            }
                            if let (Some(taken), Some(store)) = (&taken, &self.clients.ledger) {
                                let _ = store.release_slot(taken).await;
                            }
                            failures.insert(
                                0,
                                InstanceFailure { instance_id: instance_id.clone(), step: FailedStep::Alert, error },
                            );
                        }
                    }
                }
            }
        }
        let report = InstanceReport {
            outcome: Outcome::Untrusted,
            dry_run,
            instance_id: Some(instance_id),
            image_id: Some(image_id),
            owner_id,
            reasons,
            severity: Some(severity),
            alert_message_id,
            enforcement,
            already_alerted,
            alert_folded,
            warnings,
            would,
        };
        Guarded { report, failures, pending }
    }

    /// Whether this delivery sends the alert `key`: the ledger's claim (a write), or in a dry run
    /// what the ledger says now (read only).
    async fn alert_turn(&self, store: Option<&L>, key: &AlertKey) -> Turn {
        if self.config.dry_run {
            sent::preview(store, key, self.invocation.clock()).await
        } else {
            sent::turn(store, key, self.invocation).await
        }
    }

    /// A dry run's [`Self::launch_slot`]: the slots of the image this hour are counted, with this
    /// invocation's own previewed alerts, and none is taken.
    async fn previewed_launch_alert(&self, image_id: &str, warnings: &mut Vec<String>) -> WouldDo {
        let Some(store) = self.clients.ledger.as_ref().filter(|_| self.config.fold_launch_alerts) else {
            return WouldDo::Alert;
        };
        let taken = match store.slots_taken(&self.clients.region, image_id, self.invocation.clock()).await {
            Ok(taken) => taken,
            Err(err) => {
                warnings.push(format!("the launch-alert count of {image_id} could not be read ({err}): not folded"));
                return WouldDo::Alert;
            }
        };
        let before = {
            let mut previewed = self.previewed_alerts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = previewed.entry(image_id.to_string()).or_default();
            *count += 1;
            *count - 1
        };
        match taken.saturating_add(before) {
            n if n < fold::ALERTS_PER_HOUR => WouldDo::Alert,
            n if n == fold::ALERTS_PER_HOUR => WouldDo::AlertFollowUp,
            _ => WouldDo::FoldAlert,
        }
    }

    /// The launch-alert slot of the image this hour. A folded alert is kept in the ledger for
    /// the next digest first; no folding (`FOLD_LAUNCH_ALERTS=false`: no audit to send the
    /// digest), no ledger, or a ledger that fails: alert, with a warning (a duplicate beats
    /// silence).
    async fn launch_slot(&self, details: &AlertDetails, warnings: &mut Vec<String>) -> Slot {
        let Some(store) = self.clients.ledger.as_ref().filter(|_| self.config.fold_launch_alerts) else {
            return Slot::Uncounted;
        };
        let image_id = &details.image_id;
        let (region, now) = (&self.clients.region, self.invocation.clock());
        match store.claim_slot(region, image_id, now).await {
            Ok(Slot::Folded) => match store.keep_folded(region, details, now).await {
                Ok(()) => Slot::Folded,
                Err(err) => {
                    warnings.push(format!("the folded alert could not be kept for the digest ({err}): sent instead"));
                    Slot::Uncounted
                }
            },
            Ok(slot) => slot,
            Err(err) => {
                warnings.push(format!("the launch-alert count of {image_id} could not be kept ({err}): not folded"));
                Slot::Uncounted
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::core::enforce::StopOutcome;
    use amiguard::alert::Alert;
    use amiguard::ledger::memory::MemoryLedger;
    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::json;
    use std::sync::Mutex;

    const ACCOUNT: &str = "123456789012";
    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:amiguard-alerts";
    const INSTANCE: &str = "i-0123456789abcdef0";
    const VENDOR_AMI: &str = "ami-0aaaaaaaaaaaaaaaa";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    // ---- configuration ----

    #[test]
    fn config_defaults() {
        let config = Config::from_env(&env(&[(ALERT_TOPIC_ARN, TOPIC)])).unwrap();
        assert_eq!(config.policy, TrustPolicy::default());
        assert_eq!(config.enforcement, Enforcement::Alert);
        assert_eq!(config.alert_topic_arn, TOPIC);
        assert!(config.check_provenance, "provenance is checked unless turned off");
        assert!(!config.fold_launch_alerts, "no folding unless an audit is known to send the digest");
        assert!(!config.dry_run, "a deployed function acts unless told to only report");
        // Blank means unset (an empty template parameter).
        let blank = Config::from_env(&env(&[
            (ALERT_TOPIC_ARN, TOPIC),
            (TRUSTED_IMAGE_PROVIDERS, " "),
            (ALLOWED_IMAGES_CRITERIA, ""),
        ]));
        assert_eq!(blank.unwrap().policy, TrustPolicy::default());
    }

    #[test]
    fn config_reads_each_variable() {
        let config = Config::from_env(&env(&[
            (ALERT_TOPIC_ARN, "arn:aws-us-gov:sns:us-gov-west-1:123456789012:alerts.fifo"),
            (TRUSTED_IMAGE_PROVIDERS, "aws-marketplace,111122223333"),
            (ENFORCEMENT, "stop"),
            ("CHECK_PROVENANCE", "false"),
            ("FOLD_LAUNCH_ALERTS", "true"),
            (DRY_RUN, "TRUE"),
        ]))
        .unwrap();
        assert!(config.fold_launch_alerts);
        assert!(config.dry_run);
        assert_eq!(config.policy.to_string(), "trusted image providers: aws-marketplace, 111122223333");
        assert_eq!(config.enforcement, Enforcement::Stop);
        assert!(!config.check_provenance);
        let criteria = Config::from_env(&env(&[
            (ALERT_TOPIC_ARN, TOPIC),
            (ALLOWED_IMAGES_CRITERIA, r#"[{"ImageProviders": ["amazon"], "ImageNames": ["al2023-*"]}]"#),
            (ENFORCEMENT, "tag"),
        ]))
        .unwrap();
        assert_eq!(criteria.policy.criteria().len(), 1);
        assert_eq!(criteria.enforcement, Enforcement::Tag);
    }

    #[test]
    fn config_errors_name_the_variable() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 11] = [
            (&[], ALERT_TOPIC_ARN, "required"),
            (&[(ALERT_TOPIC_ARN, TOPIC), (DRY_RUN, "yes")], DRY_RUN, "true or false"),
            (&[(ALERT_TOPIC_ARN, TOPIC), (TRUST_POLICY_SOURCE, "ssm")], TRUST_POLICY_SOURCE, "one of env, account"),
            (
                &[(ALERT_TOPIC_ARN, TOPIC), (TRUST_POLICY_SOURCE, "account"), (TRUSTED_IMAGE_PROVIDERS, "self")],
                TRUSTED_IMAGE_PROVIDERS,
                "unset when TRUST_POLICY_SOURCE=account",
            ),
            (&[(ALERT_TOPIC_ARN, TOPIC), ("CHECK_PROVENANCE", "maybe")], "CHECK_PROVENANCE", "true or false"),
            (&[(ALERT_TOPIC_ARN, "my-topic")], ALERT_TOPIC_ARN, "an SNS topic ARN"),
            (&[(ALERT_TOPIC_ARN, "arn:aws:sqs:us-east-1:123456789012:q")], ALERT_TOPIC_ARN, "an SNS topic ARN"),
            (&[(ALERT_TOPIC_ARN, TOPIC), (ENFORCEMENT, "terminate")], ENFORCEMENT, "one of alert, tag, stop"),
            (
                &[(ALERT_TOPIC_ARN, TOPIC), (TRUSTED_IMAGE_PROVIDERS, "amazon,redhat")],
                TRUSTED_IMAGE_PROVIDERS,
                "\"redhat\" is not a provider",
            ),
            (&[(ALERT_TOPIC_ARN, TOPIC), (ALLOWED_IMAGES_CRITERIA, "[{}]")], ALLOWED_IMAGES_CRITERIA, "no condition"),
            (
                &[
                    (ALERT_TOPIC_ARN, TOPIC),
                    (TRUSTED_IMAGE_PROVIDERS, "amazon,self"),
                    (ALLOWED_IMAGES_CRITERIA, "[{\"ImageProviders\": [\"amazon\"]}]"),
                ],
                ALLOWED_IMAGES_CRITERIA,
                "unset when TRUSTED_IMAGE_PROVIDERS is set",
            ),
        ];
        for (vars, variable, expected) in cases {
            let err = Config::from_env(&env(vars)).unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
        // Both set is an error whatever the values, even identical policies.
        let same = Config::from_env(&env(&[
            (ALERT_TOPIC_ARN, TOPIC),
            (TRUSTED_IMAGE_PROVIDERS, "amazon"),
            (ALLOWED_IMAGES_CRITERIA, "not even json"),
        ]));
        assert_eq!(same.unwrap_err().variable, ALLOWED_IMAGES_CRITERIA);
    }

    // ---- the handler against fakes (what moto cannot show: pending instances, failures) ----

    #[derive(Default)]
    struct FakeEc2 {
        instances: Mutex<Vec<LaunchedInstance>>,
        images: Vec<LaunchImage>,
        metadata: Vec<(String, LaunchImage)>,
        /// What the launch metadata says of each instance's state (`None`: it does not say).
        metadata_state: Option<InstanceState>,
        /// GetImageAncestry's answers: an image's ancestors, or the error code.
        ancestry: HashMap<String, Result<Vec<Ancestor>, &'static str>>,
        fail_tag: Option<&'static str>,
        fail_stop: Option<&'static str>,
        stop_refused: bool,
        calls: Mutex<Vec<String>>,
    }

    impl FakeEc2 {
        fn with(instance: LaunchedInstance) -> Self {
            Self { instances: Mutex::new(vec![instance]), ..Self::default() }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn log(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl Ec2 for FakeEc2 {
        async fn instances(&self, ids: &[String]) -> Result<Vec<LaunchedInstance>, AwsError> {
            self.log("DescribeInstances".into());
            Ok(self.instances.lock().unwrap().iter().filter(|i| ids.contains(&i.instance_id)).cloned().collect())
        }

        async fn live_instances(&self) -> Result<Vec<LaunchedInstance>, AwsError> {
            self.log("DescribeInstances".into());
            Ok(self
                .instances
                .lock()
                .unwrap()
                .iter()
                .filter(|i| i.state != InstanceState::Terminated)
                .cloned()
                .collect())
        }

        async fn visible_images(&self, ids: &[String]) -> Result<Vec<LaunchImage>, AwsError> {
            self.log("DescribeImages".into());
            Ok(self.images.iter().filter(|i| ids.contains(&i.image_id)).cloned().collect())
        }

        async fn launch_image_metadata(&self, ids: &[String]) -> Result<Vec<LaunchMetadata>, AwsError> {
            self.log("DescribeInstanceImageMetadata".into());
            if self.metadata.is_empty() {
                return Err(AwsError::new("DescribeInstanceImageMetadata", "UnauthorizedOperation", "no"));
            }
            Ok(self
                .metadata
                .iter()
                .filter(|(id, _)| ids.contains(id))
                .map(|(id, image)| LaunchMetadata {
                    instance_id: id.clone(),
                    image: image.clone(),
                    instance_state: self.metadata_state.clone(),
                })
                .collect())
        }

        async fn image_ancestry(&self, image_id: &str) -> Result<Vec<Ancestor>, AwsError> {
            self.log(format!("GetImageAncestry {image_id}"));
            match self.ancestry.get(image_id) {
                Some(Ok(ancestors)) => Ok(ancestors.clone()),
                Some(Err(code)) => Err(AwsError::new("GetImageAncestry", *code, "mocked")),
                None => Ok(Vec::new()),
            }
        }

        async fn tag_instance(&self, instance_id: &str, tag: &Tag) -> Result<(), AwsError> {
            self.log(format!("CreateTags {instance_id} {}={}", tag.key, tag.value));
            match self.fail_tag {
                Some(code) => Err(AwsError::new("CreateTags", code, "mocked")),
                None => Ok(()),
            }
        }

        async fn stop_instance(&self, instance_id: &str) -> Result<StopOutcome, AwsError> {
            self.log(format!("StopInstances {instance_id}"));
            if let Some(code) = self.fail_stop {
                return Err(AwsError::new("StopInstances", code, "mocked"));
            }
            if self.stop_refused {
                return Ok(StopOutcome::NotStoppable);
            }
            for instance in self.instances.lock().unwrap().iter_mut().filter(|i| i.instance_id == instance_id) {
                instance.state = InstanceState::Stopping;
            }
            Ok(StopOutcome::Stopping)
        }
    }

    #[derive(Default)]
    struct FakeSns {
        sent: Mutex<Vec<Alert>>,
        fail: bool,
    }

    impl AlertPublisher for FakeSns {
        async fn publish(&self, alert: &Alert) -> Result<String, AwsError> {
            if self.fail {
                return Err(AwsError::new("Publish", "NotFound", "Topic does not exist"));
            }
            let mut sent = self.sent.lock().unwrap();
            sent.push(alert.clone());
            Ok(format!("msg-{}", sent.len()))
        }
    }

    struct FakeSts {
        calls: Mutex<usize>,
    }

    impl CallerIdentity for FakeSts {
        async fn account_id(&self) -> Result<String, AwsError> {
            *self.calls.lock().unwrap() += 1;
            Ok(ACCOUNT.to_string())
        }
    }

    fn clients(ec2: FakeEc2) -> Ports<FakeEc2, FakeSns, FakeSts, MemoryLedger> {
        Ports {
            ec2,
            alerts: FakeSns::default(),
            identity: FakeSts { calls: Mutex::new(0) },
            ledger: Some(MemoryLedger::new()),
            region: "us-east-1".into(),
        }
    }

    fn config(enforcement: Enforcement) -> Config {
        Config {
            policy: TrustPolicy::default(),
            alert_topic_arn: TOPIC.into(),
            enforcement,
            check_provenance: true,
            policy_from_account: false,
            fold_launch_alerts: true,
            dry_run: false,
            policy_note: None,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap()
    }

    /// One delivery (a fresh request id) at the tests' clock.
    fn at() -> Invocation {
        Invocation::at(now())
    }

    fn instance(id: &str, image: &str, state: InstanceState) -> LaunchedInstance {
        LaunchedInstance { instance_id: id.into(), image_id: Some(image.into()), state }
    }

    fn vendor_image() -> LaunchImage {
        LaunchImage {
            image_id: VENDOR_AMI.into(),
            owner_id: "111122223333".into(),
            name: Some("vendor".into()),
            creation_date: Some("2025-01-01T00:00:00.000Z".into()),
            ..LaunchImage::default()
        }
    }

    fn state_change(state: &str) -> serde_json::Value {
        json!({
            "version": "0", "id": "1", "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
            "account": ACCOUNT, "time": "2026-01-31T12:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"instance-id": INSTANCE, "state": state}
        })
    }

    fn instance_report(report: Report) -> InstanceReport {
        match report {
            Report::Instance(one) => one,
            other => panic!("not an instance report: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_pending_instance_is_tagged_now_and_stopped_on_its_running_event() {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Pending));
        ec2.images = vec![vendor_image()];
        let clients = clients(ec2);
        let config = config(Enforcement::Stop);
        let pending = instance_report(handle(&config, &clients, &state_change("pending"), &at()).await.unwrap());
        assert_eq!(pending.outcome, Outcome::Untrusted);
        assert_eq!(pending.enforcement, EnforcementTaken::TaggedStopDeferred);
        assert_eq!(pending.alert_message_id.as_deref(), Some("msg-1"));
        assert!(
            !clients.ec2.calls().iter().any(|c| c.starts_with("StopInstances")),
            "EC2 cannot stop a pending instance"
        );
        assert!(clients.alerts.sent.lock().unwrap()[0].body.contains("it is stopped on its running event"));

        clients.ec2.instances.lock().unwrap()[0].state = InstanceState::Running;
        let running = instance_report(handle(&config, &clients, &state_change("running"), &at()).await.unwrap());
        assert_eq!(running.enforcement, EnforcementTaken::TaggedAndStopped);
        assert_eq!(running.alert_message_id, None);
        assert!(running.already_alerted);
        assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1, "alerted once");
        let calls = clients.ec2.calls();
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("CreateTags")).count(),
            2,
            "the untrusted tag on each event, nothing else: {calls:?}"
        );
        assert!(calls.contains(&format!("StopInstances {INSTANCE}")));
    }

    #[tokio::test]
    async fn a_stop_refused_because_the_state_changed_is_no_error() {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
        ec2.images = vec![vendor_image()];
        ec2.stop_refused = true;
        let clients = clients(ec2);
        let report = instance_report(
            handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.enforcement, EnforcementTaken::TaggedNotRunning);
    }

    #[tokio::test]
    async fn a_failed_publish_gives_the_claim_back_and_fails_the_invocation_so_the_retry_alerts() {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
        ec2.images = vec![vendor_image()];
        let mut clients = clients(ec2);
        clients.alerts.fail = true;
        let err = handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap_err();
        assert!(
            matches!(&err, Error::NotGuarded(f) if f[0].step == FailedStep::Alert && f[0].error.code == "NotFound"),
            "{err}"
        );
        assert!(clients.ledger.as_ref().unwrap().items().is_empty(), "the claim was given back");
        let diagnostic = lambda_runtime::Diagnostic::from(err);
        assert_eq!(diagnostic.error_type, "AlertNotSent");
        assert!(diagnostic.error_message.contains("Publish failed: NotFound"), "{}", diagnostic.error_message);
        clients.alerts.fail = false;
        let retry = instance_report(
            handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(retry.alert_message_id.as_deref(), Some("msg-1"), "the retry alerts");
    }

    #[tokio::test]
    async fn a_tag_that_cannot_be_written_is_said_and_fails_nothing() {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
        ec2.images = vec![vendor_image()];
        ec2.fail_tag = Some("TagLimitExceeded");
        let clients = clients(ec2);
        for _ in 0..3 {
            let report = instance_report(
                handle(&config(Enforcement::Tag), &clients, &state_change("running"), &at()).await.unwrap(),
            );
            assert_eq!(report.enforcement, EnforcementTaken::TagFailed);
            assert!(
                report.warnings[0].contains("amiguard:untrusted-ami could not be written"),
                "{:?}",
                report.warnings
            );
            assert!(report.warnings[0].contains("TagLimitExceeded"));
        }
        let sent = clients.alerts.sent.lock().unwrap();
        assert_eq!(sent.len(), 1, "alerted once, however often the tag fails");
        assert!(
            sent[0].body.contains(
                "NOT TAGGED: the tag amiguard:untrusted-ami could not be written: CreateTags failed: TagLimitExceeded"
            ),
            "{}",
            sent[0].body
        );
    }

    #[tokio::test]
    async fn without_a_working_ledger_every_event_alerts_and_says_it_may_repeat() {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
        ec2.images = vec![vendor_image()];
        let clients = clients(ec2);
        clients.ledger.as_ref().unwrap().fail_everything();
        for _ in 0..2 {
            let report = instance_report(
                handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap(),
            );
            assert!(report.alert_message_id.is_some() && !report.already_alerted);
            assert!(
                report.warnings.iter().any(|w| w.contains("the ledger could not be used")),
                "{:?}",
                report.warnings
            );
        }
        let sent = clients.alerts.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "a duplicate rather than silence");
        assert!(sent[1].body.contains("This one may be a repeat: the ledger could not be used"), "{}", sent[1].body);

        let mut unconfigured = self::clients(FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running)));
        unconfigured.ec2.images = vec![vendor_image()];
        unconfigured.ledger = None;
        let report = instance_report(
            handle(&config(Enforcement::Alert), &unconfigured, &state_change("running"), &at()).await.unwrap(),
        );
        assert!(report.alert_message_id.is_some());
        assert!(report.warnings[0].contains("LEDGER_TABLE"), "{:?}", report.warnings);
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_held_by_another_delivery_is_waited_for_then_fails_retryably() {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
        ec2.images = vec![vendor_image()];
        let clients = clients(ec2);
        let store = clients.ledger.as_ref().unwrap();
        let sent::Claim::Claimed(_held) =
            sent::claim(store, &AlertKey::untrusted("us-east-1", INSTANCE, VENDOR_AMI), "other", now()).await.unwrap()
        else {
            panic!("not claimed")
        };
        let err = handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap_err();
        assert!(matches!(&err, Error::NotGuarded(f) if f[0].step == FailedStep::AlertInProgress), "{err}");
        assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "AlertInProgress");
        assert!(clients.alerts.sent.lock().unwrap().is_empty(), "the holder sends it, not this delivery");
        // Once the holder's claim expires (it died), the next delivery alerts.
        let later = Invocation::at(now() + sent::CLAIM_DURATION + chrono::Duration::seconds(1));
        let report = instance_report(
            handle(&config(Enforcement::Alert), &clients, &state_change("running"), &later).await.unwrap(),
        );
        assert!(report.alert_message_id.is_some());
    }

    #[tokio::test]
    async fn a_failed_stop_is_alerted_once_and_fails_the_invocation_for_a_retry() {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
        ec2.images = vec![vendor_image()];
        ec2.fail_stop = Some("UnsupportedOperation");
        let mut clients = clients(ec2);
        let err = handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap_err();
        assert!(matches!(&err, Error::NotGuarded(f) if f.len() == 1 && f[0].step == FailedStep::Enforcement), "{err}");
        let sent = clients.alerts.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].body.contains("Enforcement: FAILED (stop): StopInstances failed: UnsupportedOperation"),
            "{}",
            sent[0].body
        );
        assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "EnforcementFailed");
        // The retry stops the instance and does not alert again.
        clients.ec2.fail_stop = None;
        let retry = instance_report(
            handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(retry.enforcement, EnforcementTaken::TaggedAndStopped);
        assert!(retry.already_alerted);
        assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_account_comes_from_sts_only_when_the_event_has_none() {
        let own = LaunchImage {
            image_id: "ami-0bbbbbbbbbbbbbbbb".into(),
            owner_id: ACCOUNT.into(),
            ..LaunchImage::default()
        };
        let mut ec2 = FakeEc2::with(instance(INSTANCE, &own.image_id, InstanceState::Running));
        ec2.images = vec![own];
        let clients = clients(ec2);
        let with_account = instance_report(
            handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(with_account.outcome, Outcome::Trusted);
        assert_eq!(*clients.identity.calls.lock().unwrap(), 0);
        let mut event = state_change("running");
        event.as_object_mut().unwrap().remove("account");
        let without = instance_report(handle(&config(Enforcement::Alert), &clients, &event, &at()).await.unwrap());
        assert_eq!(without.outcome, Outcome::Trusted, "self resolved through STS");
        assert_eq!(*clients.identity.calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn an_invisible_image_is_untrusted_and_its_recorded_owner_is_reported() {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, "ami-0ccccccccccccccc0", InstanceState::Running));
        ec2.metadata = vec![(
            INSTANCE.to_string(),
            LaunchImage {
                image_id: "ami-0ccccccccccccccc0".into(),
                owner_id: ACCOUNT.into(),
                name: Some("golden-old".into()),
                ..LaunchImage::default()
            },
        )];
        let clients = clients(ec2);
        let report = instance_report(
            handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.outcome, Outcome::Untrusted, "a recorded owner does not make an invisible image trusted");
        assert_eq!(report.owner_id.as_deref(), Some(ACCOUNT));
        assert!(report.reasons[0].starts_with("image not visible"));
        let body = clients.alerts.sent.lock().unwrap()[0].body.clone();
        assert!(body.contains("as recorded at launch; the image itself is not visible"), "{body}");
    }

    #[tokio::test]
    async fn unavailable_launch_metadata_still_alerts_with_an_unknown_owner() {
        let clients = clients(FakeEc2::with(instance(INSTANCE, "ami-0ccccccccccccccc0", InstanceState::Running)));
        let report = instance_report(
            handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.outcome, Outcome::Untrusted);
        assert_eq!(report.owner_id, None);
        assert!(clients.alerts.sent.lock().unwrap()[0].body.contains("Owner:       unknown"));
    }

    #[tokio::test]
    async fn states_other_than_pending_and_running_are_skipped_without_a_call() {
        let clients = clients(FakeEc2::default());
        for state in ["stopping", "stopped", "shutting-down", "terminated"] {
            let report = instance_report(
                handle(&config(Enforcement::Stop), &clients, &state_change(state), &at()).await.unwrap(),
            );
            assert_eq!(report.outcome, Outcome::Skipped);
            assert_eq!(report.instance_id.as_deref(), Some(INSTANCE));
            assert!(report.reasons[0].contains(state));
        }
        assert!(clients.ec2.calls().is_empty());
    }

    #[tokio::test]
    async fn an_unknown_instance_fails_so_that_lambda_retries() {
        let clients = clients(FakeEc2::default());
        let err = handle(&config(Enforcement::Alert), &clients, &state_change("pending"), &at()).await.unwrap_err();
        assert!(matches!(&err, Error::InstancesNotFound(ids) if ids == &[INSTANCE.to_string()]), "{err}");
        assert!(clients.alerts.sent.lock().unwrap().is_empty());
    }

    /// An image this account owns (trusted by `self`), running on the instance.
    fn own_image() -> LaunchImage {
        LaunchImage { image_id: "ami-0c0c0c0c0c0c0c0c0".into(), owner_id: ACCOUNT.into(), ..vendor_image() }
    }

    fn copied_in(ancestry: Result<Vec<Ancestor>, &'static str>, source: Option<&str>) -> FakeEc2 {
        let own = LaunchImage { source_image_id: source.map(str::to_string), ..own_image() };
        FakeEc2 {
            images: vec![own.clone(), vendor_image()],
            ancestry: [(own.image_id.clone(), ancestry)].into(),
            ..FakeEc2::with(instance(INSTANCE, &own.image_id, InstanceState::Running))
        }
    }

    fn vendor_ancestor() -> Ancestor {
        Ancestor { image_id: VENDOR_AMI.into(), region: Some("us-east-1".into()), ..Ancestor::default() }
    }

    #[tokio::test]
    async fn an_own_image_copied_from_an_untrusted_one_is_untrusted_with_its_chain() {
        let clients = clients(copied_in(Ok(vec![vendor_ancestor()]), None));
        let report = instance_report(
            handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.outcome, Outcome::Untrusted);
        assert!(report.reasons[0].contains("ami-0c0c0c0c0c0c0c0c0 <- ami-0aaaaaaaaaaaaaaaa"), "{:?}", report.reasons);
        assert!(report.reasons[0].contains("111122223333"), "{:?}", report.reasons);
        let sent = clients.alerts.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].severity, Severity::High);
    }

    #[tokio::test]
    async fn unreadable_provenance_is_medium_and_a_copys_source_is_judged_when_the_lineage_is_not() {
        let unreadable = clients(copied_in(Err("UnauthorizedOperation"), None));
        let report = instance_report(
            handle(&config(Enforcement::Alert), &unreadable, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.outcome, Outcome::Untrusted);
        assert!(report.reasons[0].contains("provenance cannot be verified"), "{:?}", report.reasons);
        assert_eq!(unreadable.alerts.sent.lock().unwrap()[0].severity, Severity::Medium);
        // The lineage cannot be read, but DescribeImages names the copy's source: that decides.
        let sourced = clients(copied_in(Err("UnauthorizedOperation"), Some(VENDOR_AMI)));
        let report = instance_report(
            handle(&config(Enforcement::Alert), &sourced, &state_change("running"), &at()).await.unwrap(),
        );
        assert!(report.reasons[0].contains("is not trusted"), "{:?}", report.reasons);
        assert_eq!(sourced.alerts.sent.lock().unwrap()[0].severity, Severity::High);
    }

    #[tokio::test]
    async fn trusted_lineage_alias_trusted_images_and_check_provenance_false_stay_trusted() {
        let amazon_base = Ancestor { owner_alias: Some("amazon".into()), ..vendor_ancestor() };
        let lineage = clients(copied_in(Ok(vec![amazon_base]), None));
        let report = instance_report(
            handle(&config(Enforcement::Alert), &lineage, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.outcome, Outcome::Trusted, "{:?}", report.reasons);
        let off = clients(copied_in(Ok(vec![vendor_ancestor()]), None));
        let unchecked = Config { check_provenance: false, ..config(Enforcement::Alert) };
        let report = instance_report(handle(&unchecked, &off, &state_change("running"), &at()).await.unwrap());
        assert_eq!(report.outcome, Outcome::Trusted);
        assert!(off.ec2.calls().iter().all(|c| !c.starts_with("GetImageAncestry")), "{:?}", off.ec2.calls());
        // An image trusted by its alias (Amazon's) is not traced.
        let amazon =
            LaunchImage { owner_alias: Some("amazon".into()), owner_id: "137112412989".into(), ..vendor_image() };
        let aliased = clients(FakeEc2 {
            images: vec![amazon],
            ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
        });
        let report = instance_report(
            handle(&config(Enforcement::Alert), &aliased, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.outcome, Outcome::Trusted);
        assert!(aliased.ec2.calls().iter().all(|c| !c.starts_with("GetImageAncestry")));
    }

    #[test]
    fn the_accounts_settings_become_the_policy_or_a_clear_init_error() {
        let config = Config::from_env(&env(&[(ALERT_TOPIC_ARN, TOPIC), (TRUST_POLICY_SOURCE, "account")])).unwrap();
        assert!(config.policy_from_account);
        let criteria = json!([{"ImageProviders": ["amazon"]}]);
        let read = config.clone().with_account_policy("enabled", criteria.clone()).unwrap();
        assert!(read.policy.defers_to_ec2());
        let err = config.clone().with_account_policy("disabled", criteria).unwrap_err();
        assert_eq!(err.variable, TRUST_POLICY_SOURCE);
        assert!(err.to_string().contains("disabled"), "{err}");
        // The handler then judges by the default policy, and says so in every report.
        let fallback = config.with_default_policy_because(&err.to_string());
        assert_eq!(fallback.policy, TrustPolicy::default());
        assert!(fallback.policy_note.as_deref().unwrap().contains("amazon,self"));
    }

    #[tokio::test]
    async fn with_the_accounts_settings_ec2s_image_allowed_decides() {
        let account_policy =
            TrustPolicy::from_account_settings("enabled", json!([{"ImageProviders": ["111122223333"]}])).unwrap();
        let config = Config { policy: account_policy, ..config(Enforcement::Alert) };
        let judged = |allowed: Option<bool>, owner: &str| {
            let image = LaunchImage { image_allowed: allowed, owner_id: owner.into(), ..vendor_image() };
            clients(FakeEc2 {
                images: vec![image],
                ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
            })
        };
        async fn verdict(config: &Config, clients: Ports<FakeEc2, FakeSns, FakeSts, MemoryLedger>) -> InstanceReport {
            instance_report(handle(config, &clients, &state_change("running"), &at()).await.unwrap())
        }
        // The criteria trust the owner, EC2 says not allowed (a condition amiguard cannot see).
        let refused = verdict(&config, judged(Some(false), "111122223333")).await;
        assert_eq!(refused.outcome, Outcome::Untrusted);
        assert!(refused.reasons[0].contains("Allowed AMIs settings do not allow it"), "{:?}", refused.reasons);
        // EC2 says allowed: trusted, whatever amiguard's reading of the criteria.
        assert_eq!(verdict(&config, judged(Some(true), "999988887777")).await.outcome, Outcome::Trusted);
        // EC2 does not say: the criteria decide.
        assert_eq!(verdict(&config, judged(None, "999988887777")).await.outcome, Outcome::Untrusted);
        assert_eq!(verdict(&config, judged(None, "111122223333")).await.outcome, Outcome::Trusted);
    }

    #[tokio::test]
    async fn with_the_accounts_settings_an_allowed_own_copy_is_still_traced_to_its_maker() {
        // EC2 allows every image the account owns; the copy's maker is an untrusted vendor.
        let policy = TrustPolicy::from_account_settings("enabled", json!([{"ImageProviders": ["amazon"]}])).unwrap();
        let config = Config { policy, ..config(Enforcement::Alert) };
        let mut ec2 = copied_in(Ok(vec![vendor_ancestor()]), None);
        ec2.images[0].image_allowed = Some(true);
        let clients = clients(ec2);
        let report = instance_report(handle(&config, &clients, &state_change("running"), &at()).await.unwrap());
        assert_eq!(report.outcome, Outcome::Untrusted);
        assert!(report.reasons[0].contains("<- ami-0aaaaaaaaaaaaaaaa"), "{:?}", report.reasons);
    }

    fn audit_event() -> serde_json::Value {
        json!({"detail-type": "Scheduled Event", "source": "aws.events", "account": ACCOUNT, "region": "us-east-1", "detail": {}})
    }

    #[tokio::test]
    async fn a_large_audit_sends_its_digest_in_parts_and_a_refused_part_is_sent_by_the_retry() {
        let instances: Vec<LaunchedInstance> =
            (0..120).map(|n| instance(&format!("i-0{n:016x}"), VENDOR_AMI, InstanceState::Running)).collect();
        let ec2 = FakeEc2 { instances: Mutex::new(instances), images: vec![vendor_image()], ..FakeEc2::default() };
        let mut clients = clients(ec2);
        clients.alerts.fail = true;
        let err = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap_err();
        assert!(matches!(err, Error::NotGuarded(ref f) if f.len() == 120), "{err}");
        clients.alerts.fail = false;
        let Report::Audit(audit) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
        else {
            panic!("not an audit")
        };
        assert_eq!(audit.alerts_sent, 120);
        let sent = clients.alerts.sent.lock().unwrap().clone();
        let sizes: Vec<&str> = sent.iter().map(|a| a.subject.as_str()).collect();
        assert_eq!(sent.len(), 3, "{sizes:?}");
        assert!(sent[0].subject.contains("on 50 instances") && sent[0].subject.contains("part 1 of 3"), "{sizes:?}");
        assert!(sent[2].subject.contains("on 20 instances") && sent[2].subject.contains("part 3 of 3"), "{sizes:?}");
        assert!(sent.iter().all(|a| a.body.len() < 200_000));
        // Sent means sent: the next audit finds nothing new.
        let Report::Audit(again) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
        else {
            panic!("not an audit")
        };
        assert_eq!(again.alerts_sent, 0);
        assert_eq!(clients.alerts.sent.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn launch_alerts_fold_after_three_an_hour_unless_folding_is_off() {
        let ids: Vec<String> = (1..=5).map(|n| format!("i-0{n:016x}")).collect();
        let launches = |fold: bool| {
            let ids = ids.clone();
            async move {
                let instances = ids.iter().map(|id| instance(id, VENDOR_AMI, InstanceState::Running)).collect();
                let clients = clients(FakeEc2 {
                    instances: Mutex::new(instances),
                    images: vec![vendor_image()],
                    ..FakeEc2::default()
                });
                let config = Config { fold_launch_alerts: fold, ..config(Enforcement::Alert) };
                let mut folded = 0;
                for id in &ids {
                    let mut event = state_change("running");
                    event["detail"]["instance-id"] = json!(id);
                    folded += usize::from(
                        instance_report(handle(&config, &clients, &event, &at()).await.unwrap()).alert_folded,
                    );
                }
                let sent = clients.alerts.sent.lock().unwrap().len();
                (sent, folded)
            }
        };
        assert_eq!(launches(true).await, (4, 1), "three alerts, the follow-up, one folded");
        assert_eq!(launches(false).await, (5, 0), "no audit to name the folded: every launch alerts");
    }

    /// A folded launch alert as the ledger keeps it, for `instance` running the vendor image.
    fn folded_alert(instance: &str) -> AlertDetails {
        AlertDetails {
            instance_id: instance.into(),
            instance_state: "running".into(),
            image_id: VENDOR_AMI.into(),
            owner_id: Some("111122223333".into()),
            owner_alias: None,
            owner_source: OwnerSource::Image,
            image_name: Some("vendor".into()),
            reasons: vec!["owner 111122223333 is not trusted".into()],
            severity: Severity::High,
            region: "us-east-1".into(),
            account: ACCOUNT.into(),
            seen_on: "launch".into(),
            enforcement_mode: Enforcement::Alert,
            enforcement: EnforcementTaken::None,
            enforcement_error: None,
            tag_error: None,
            policy: "trusted image providers: amazon, self".into(),
            ledger_warning: None,
        }
    }

    #[tokio::test]
    async fn a_folded_alert_is_sent_by_the_digest_from_its_record_whatever_became_of_its_instance() {
        // One instance gone (EC2 lists nothing), one still running but trusted now (its image is
        // the account's own): neither is alerted by this audit's judging, both by their records.
        let own = own_image();
        let ec2 = FakeEc2 {
            images: vec![own.clone()],
            ..FakeEc2::with(instance("i-0000000000000000b", &own.image_id, InstanceState::Running))
        };
        let clients = clients(ec2);
        let store = clients.ledger.as_ref().unwrap();
        for instance in ["i-0000000000000000a", "i-0000000000000000b"] {
            store.keep_folded("us-east-1", &folded_alert(instance), now()).await.unwrap();
        }
        let Report::Audit(audit) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
        else {
            panic!("not an audit")
        };
        assert_eq!(audit.alerts_sent, 2);
        let sent = clients.alerts.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "one digest");
        assert!(sent[0].body.contains("i-0000000000000000a") && sent[0].body.contains("i-0000000000000000b"));
        assert!(audit.untrusted.iter().any(|f| f.instance_id == "i-0000000000000000a"), "the gone one is a finding");
        assert!(store.folded("us-east-1").await.unwrap().0.is_empty(), "sent: forgotten");
        // Nothing new: the next audit sends nothing.
        let Report::Audit(again) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
        else {
            panic!("not an audit")
        };
        assert_eq!(again.alerts_sent, 0);
        assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_digest_keeps_the_folded_records_for_the_retry() {
        let clients = clients(FakeEc2::default());
        let store = clients.ledger.as_ref().unwrap();
        store.keep_folded("us-east-1", &folded_alert("i-0000000000000000a"), now()).await.unwrap();
        let mut clients = clients;
        clients.alerts.fail = true;
        assert!(handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.is_err());
        let store = clients.ledger.as_ref().unwrap();
        assert_eq!(store.folded("us-east-1").await.unwrap().0.len(), 1, "kept");
        clients.alerts.fail = false;
        let Report::Audit(audit) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
        else {
            panic!("not an audit")
        };
        assert_eq!(audit.alerts_sent, 1);
    }

    #[tokio::test]
    async fn a_criterion_without_image_providers_is_warned_about_in_every_report() {
        let clients = clients(FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running)));
        let policy = TrustPolicy::from_criteria_json(r#"[{"ImageNames": ["vendor"]}]"#).unwrap();
        let config = Config { policy, ..config(Enforcement::Alert) };
        let report = instance_report(handle(&config, &clients, &state_change("running"), &at()).await.unwrap());
        assert!(report.warnings.iter().any(|w| w.contains("no ImageProviders")), "{:?}", report.warnings);
    }

    #[tokio::test]
    async fn a_terminated_instance_is_alerted_once_with_nothing_enforced() {
        let ec2 = FakeEc2 {
            images: vec![vendor_image()],
            ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Terminated))
        };
        let clients = clients(ec2);
        let first = instance_report(
            handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!((first.outcome, first.enforcement), (Outcome::Untrusted, EnforcementTaken::InstanceGone));
        let second = instance_report(
            handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert!(second.already_alerted);
        let sent = clients.alerts.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "alerted once");
        assert!(sent[0].body.contains("none: the instance is terminated (nothing to tag or stop)"), "{}", sent[0].body);
        assert!(clients.ec2.calls().iter().all(|c| !c.starts_with("CreateTags") && !c.starts_with("StopInstances")));
    }

    /// A RunInstances record two hours old (EC2 has forgotten an instance terminated since).
    fn cloudtrail(response: serde_json::Value) -> serde_json::Value {
        json!({
            "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2", "account": ACCOUNT, "region": "us-east-1",
            "time": "2026-01-31T10:00:00Z",
            "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "responseElements": response}
        })
    }

    #[tokio::test]
    async fn an_instance_ec2_no_longer_lists_is_judged_by_the_image_its_launch_record_names() {
        let clients = clients(FakeEc2 { images: vec![vendor_image()], ..FakeEc2::default() });
        let event = cloudtrail(json!({"instancesSet": {"items": [
            {"instanceId": INSTANCE, "imageId": VENDOR_AMI, "launchTime": 1769860800000u64}
        ]}}));
        let Report::Launch { instances } = handle(&config(Enforcement::Stop), &clients, &event, &at()).await.unwrap()
        else {
            panic!("not a launch report")
        };
        assert_eq!(instances.len(), 1);
        assert_eq!(
            (instances[0].outcome, instances[0].enforcement),
            (Outcome::Untrusted, EnforcementTaken::InstanceGone)
        );
        assert_eq!(instances[0].image_id.as_deref(), Some(VENDOR_AMI));
        assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_unlisted_instance_is_judged_by_ec2s_launch_metadata_only_when_ec2_says_it_is_gone() {
        let metadata = |state: Option<InstanceState>| FakeEc2 {
            metadata: vec![(INSTANCE.into(), vendor_image())],
            metadata_state: state,
            ..FakeEc2::default()
        };
        let judged = clients(metadata(Some(InstanceState::Terminated)));
        let report = instance_report(
            handle(&config(Enforcement::Stop), &judged, &state_change("pending"), &at()).await.unwrap(),
        );
        assert_eq!((report.outcome, report.enforcement), (Outcome::Untrusted, EnforcementTaken::InstanceGone));
        assert_eq!(report.image_id.as_deref(), Some(VENDOR_AMI));
        // Live by EC2's word, or EC2 does not say (and the event is fresh): EC2 may lag right
        // after the launch, so the retry looks again (and then enforces).
        for state in [Some(InstanceState::Running), None] {
            let lagging = clients(metadata(state.clone()));
            let err = handle(&config(Enforcement::Stop), &lagging, &state_change("pending"), &at()).await.unwrap_err();
            assert!(matches!(err, Error::InstancesNotFound(_)), "{state:?}: {err}");
            assert!(lagging.alerts.sent.lock().unwrap().is_empty(), "{state:?}");
        }
        let unknown = clients(FakeEc2::default());
        let err = handle(&config(Enforcement::Alert), &unknown, &state_change("pending"), &at()).await.unwrap_err();
        assert!(matches!(err, Error::InstancesNotFound(_)), "{err}");
    }

    #[tokio::test]
    async fn ec2s_image_is_judged_when_the_record_names_another() {
        let ec2 = FakeEc2 {
            metadata: vec![(INSTANCE.into(), vendor_image())],
            metadata_state: Some(InstanceState::Terminated),
            ..FakeEc2::default()
        };
        let clients = clients(ec2);
        // A forged record naming a trusted image for an untrusted instance.
        let event = cloudtrail(
            json!({"instancesSet": {"items": [{"instanceId": INSTANCE, "imageId": "ami-0bbbbbbbbbbbbbbbb"}]}}),
        );
        let Report::Launch { instances } = handle(&config(Enforcement::Alert), &clients, &event, &at()).await.unwrap()
        else {
            panic!("not a launch report")
        };
        assert_eq!(instances[0].image_id.as_deref(), Some(VENDOR_AMI));
        assert_eq!(instances[0].outcome, Outcome::Untrusted);
        assert!(instances[0].warnings.iter().any(|w| w.contains("EC2's is judged")), "{:?}", instances[0].warnings);
    }

    #[tokio::test]
    async fn run_instances_records_without_a_response_or_from_a_dry_run_are_answered() {
        let clients = clients(FakeEc2::default());
        let unrecorded = instance_report(
            handle(&config(Enforcement::Alert), &clients, &cloudtrail(json!(null)), &at()).await.unwrap(),
        );
        assert_eq!(unrecorded.outcome, Outcome::Skipped);
        assert!(unrecorded.reasons[0].contains("responseElements null"), "{:?}", unrecorded.reasons);
        let mut dry_run = cloudtrail(json!(null));
        dry_run["detail"]["errorCode"] = json!("Client.DryRunOperation");
        let dry = instance_report(handle(&config(Enforcement::Alert), &clients, &dry_run, &at()).await.unwrap());
        assert!(dry.reasons[0].contains("DryRun"), "{:?}", dry.reasons);
        assert!(clients.ec2.calls().is_empty(), "{:?}", clients.ec2.calls());
    }

    #[tokio::test]
    async fn bad_input_changes_nothing() {
        let clients = clients(FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running)));
        for payload in [
            json!(null),
            json!({}),
            json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {"state": "running"}}),
        ] {
            let err = handle(&config(Enforcement::Stop), &clients, &payload, &at()).await.unwrap_err();
            assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "MalformedEvent");
        }
        let mut elsewhere = state_change("running");
        elsewhere["region"] = json!("eu-west-1");
        let err = handle(&config(Enforcement::Stop), &clients, &elsewhere, &at()).await.unwrap_err();
        assert!(err.to_string().contains("eu-west-1"), "{err}");
        assert!(clients.ec2.calls().is_empty());
        assert!(clients.alerts.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn cloudtrail_without_instances_is_skipped() {
        let clients = clients(FakeEc2::default());
        let failed = json!({
            "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2", "account": ACCOUNT, "region": "us-east-1",
            "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "errorCode": "Client.UnauthorizedOperation", "responseElements": null}
        });
        let report = instance_report(handle(&config(Enforcement::Alert), &clients, &failed, &at()).await.unwrap());
        assert_eq!(report.outcome, Outcome::Skipped);
        assert!(report.reasons[0].contains("Client.UnauthorizedOperation"));
        assert!(clients.ec2.calls().is_empty());
    }

    // ---- DRY_RUN: judge and report, change nothing ----

    fn dry(enforcement: Enforcement) -> Config {
        Config { dry_run: true, ..config(enforcement) }
    }

    /// What a dry run must never do: no publish, no tag, no stop, no ledger write (reads only).
    fn assert_changed_nothing(clients: &Ports<FakeEc2, FakeSns, FakeSts, MemoryLedger>) {
        assert!(clients.alerts.sent.lock().unwrap().is_empty(), "published");
        let calls = clients.ec2.calls();
        assert!(
            calls.iter().all(|c| !c.starts_with("CreateTags") && !c.starts_with("StopInstances")),
            "changed EC2: {calls:?}"
        );
        let ledger = clients.ledger.as_ref().unwrap();
        assert_eq!(ledger.writes(), 0, "wrote the ledger: {:?}", ledger.calls());
        assert!(ledger.calls().iter().all(|c| *c == "Query"), "{:?}", ledger.calls());
    }

    #[tokio::test]
    async fn a_dry_run_launch_says_what_it_would_do_and_changes_nothing() {
        for (state, event, expected) in [
            (InstanceState::Running, "running", vec![WouldDo::Tag, WouldDo::Stop, WouldDo::Alert]),
            (InstanceState::Pending, "pending", vec![WouldDo::Tag, WouldDo::StopWhenRunning, WouldDo::Alert]),
        ] {
            let clients = clients(FakeEc2 {
                images: vec![vendor_image()],
                ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, state))
            });
            let report =
                instance_report(handle(&dry(Enforcement::Stop), &clients, &state_change(event), &at()).await.unwrap());
            assert_eq!((report.outcome, report.dry_run), (Outcome::Untrusted, true));
            assert_eq!(report.would, expected, "{event}");
            assert_eq!((report.enforcement, report.alert_message_id.as_deref()), (EnforcementTaken::None, None));
            assert!(report.reasons[0].contains("111122223333"), "the finding is named: {:?}", report.reasons);
            assert_changed_nothing(&clients);
            let json = serde_json::to_value(Report::Instance(report)).unwrap();
            assert_eq!((&json["dry_run"], &json["would"][0]), (&json!(true), &json!("tag")));
        }
        // A trusted launch: nothing would be done.
        let own = own_image();
        let clients = clients(FakeEc2 {
            images: vec![own.clone()],
            ..FakeEc2::with(instance(INSTANCE, &own.image_id, InstanceState::Running))
        });
        let trusted =
            instance_report(handle(&dry(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap());
        assert_eq!((trusted.outcome, trusted.dry_run, trusted.would.len()), (Outcome::Trusted, true, 0));
    }

    #[tokio::test]
    async fn a_dry_run_reads_the_sent_alerts_and_says_an_alert_sent_before_would_not_repeat() {
        let ec2 = FakeEc2 {
            images: vec![vendor_image()],
            ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
        };
        let clients = clients(ec2);
        handle(&config(Enforcement::Tag), &clients, &state_change("running"), &at()).await.unwrap();
        let (writes, sent, calls) =
            (clients.ledger.as_ref().unwrap().writes(), clients.alerts.sent.lock().unwrap().len(), clients.ec2.calls());
        let report =
            instance_report(handle(&dry(Enforcement::Tag), &clients, &state_change("running"), &at()).await.unwrap());
        assert!(report.already_alerted && report.dry_run);
        assert_eq!(report.would, [WouldDo::Tag], "tagged again (idempotent), not alerted again");
        assert_eq!(clients.ledger.as_ref().unwrap().writes(), writes);
        assert_eq!(clients.alerts.sent.lock().unwrap().len(), sent);
        assert_eq!(clients.ec2.calls().iter().filter(|c| c.starts_with("CreateTags")).count(), 1, "{calls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dry_run_neither_waits_for_nor_fails_on_a_claim_another_delivery_holds() {
        let ec2 = FakeEc2 {
            images: vec![vendor_image()],
            ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
        };
        let clients = clients(ec2);
        let store = clients.ledger.as_ref().unwrap();
        let key = AlertKey::untrusted("us-east-1", INSTANCE, VENDOR_AMI);
        let sent::Claim::Claimed(_held) = sent::claim(store, &key, "other", now()).await.unwrap() else {
            panic!("not claimed")
        };
        let writes = store.writes();
        let started = tokio::time::Instant::now();
        let report =
            instance_report(handle(&dry(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap());
        assert_eq!(started.elapsed(), std::time::Duration::ZERO, "a dry run does not wait");
        assert!(report.would.is_empty() && !report.already_alerted);
        assert!(report.warnings.iter().any(|w| w.contains("another delivery holds")), "{:?}", report.warnings);
        assert_eq!(store.writes(), writes);
    }

    #[tokio::test]
    async fn a_dry_run_of_many_launches_says_which_alerts_would_fold_and_takes_no_slot() {
        let ids: Vec<String> = (1..=5).map(|n| format!("i-0{n:016x}")).collect();
        let instances = ids.iter().map(|id| instance(id, VENDOR_AMI, InstanceState::Running)).collect();
        let clients =
            clients(FakeEc2 { instances: Mutex::new(instances), images: vec![vendor_image()], ..FakeEc2::default() });
        let items: Vec<serde_json::Value> =
            ids.iter().map(|id| json!({"instanceId": id, "imageId": VENDOR_AMI})).collect();
        let event = cloudtrail(json!({"instancesSet": {"items": items}}));
        let Report::Launch { instances } = handle(&dry(Enforcement::Alert), &clients, &event, &at()).await.unwrap()
        else {
            panic!("not a launch report")
        };
        let would: Vec<Vec<WouldDo>> = instances.iter().map(|i| i.would.clone()).collect();
        use WouldDo::{Alert, AlertFollowUp, FoldAlert};
        assert_eq!(would, [vec![Alert], vec![Alert], vec![Alert], vec![AlertFollowUp], vec![FoldAlert]]);
        assert!(instances.iter().all(|i| i.dry_run && !i.alert_folded));
        assert_changed_nothing(&clients);
        // Slots real alerts took this hour count too.
        let store = clients.ledger.as_ref().unwrap();
        for _ in 0..3 {
            store.claim_slot("us-east-1", VENDOR_AMI, now()).await.unwrap();
        }
        let mut one = state_change("running");
        one["detail"]["instance-id"] = json!(ids[0]);
        let next = instance_report(handle(&dry(Enforcement::Alert), &clients, &one, &at()).await.unwrap());
        assert_eq!(next.would, [AlertFollowUp]);
    }

    #[tokio::test]
    async fn a_dry_run_audit_counts_its_digest_sends_none_tags_none_and_keeps_the_folded_records() {
        let instances = vec![
            instance("i-0000000000000000b", VENDOR_AMI, InstanceState::Running),
            instance("i-0000000000000000c", VENDOR_AMI, InstanceState::Stopped),
        ];
        let clients =
            clients(FakeEc2 { instances: Mutex::new(instances), images: vec![vendor_image()], ..FakeEc2::default() });
        let store = clients.ledger.as_ref().unwrap();
        // A folded launch alert of an instance gone since: a real digest would name it.
        store.keep_folded("us-east-1", &folded_alert("i-0000000000000000a"), now()).await.unwrap();
        let before = store.items();
        let writes = store.writes();
        let Report::Audit(audit) = handle(&dry(Enforcement::Stop), &clients, &audit_event(), &at()).await.unwrap()
        else {
            panic!("not an audit")
        };
        assert!(audit.dry_run);
        assert_eq!((audit.audited, audit.alerts_sent, audit.alerts_would_send), (2, 0, Some(3)));
        let mut found: Vec<(&str, &[WouldDo])> =
            audit.untrusted.iter().map(|f| (f.instance_id.as_str(), f.would.as_slice())).collect();
        found.sort();
        use WouldDo::{AlertInDigest, Tag};
        assert_eq!(
            found,
            [
                ("i-0000000000000000a", &[AlertInDigest][..]),
                ("i-0000000000000000b", &[Tag, AlertInDigest][..]),
                ("i-0000000000000000c", &[Tag, AlertInDigest][..]),
            ],
            "the audit tags, never stops"
        );
        assert!(clients.alerts.sent.lock().unwrap().is_empty());
        assert!(clients.ec2.calls().iter().all(|c| !c.starts_with("CreateTags") && !c.starts_with("StopInstances")));
        assert_eq!((store.writes(), store.items()), (writes, before), "the ledger is as it was");
        // The real audit after it still finds everything to send.
        let Report::Audit(real) = handle(&config(Enforcement::Tag), &clients, &audit_event(), &at()).await.unwrap()
        else {
            panic!("not an audit")
        };
        assert_eq!((real.alerts_sent, real.alerts_would_send, real.dry_run), (3, None, false));
    }

    #[test]
    fn report_shapes() {
        let one = InstanceReport::skipped(false, Some(INSTANCE.into()), "why".into());
        assert_eq!(
            serde_json::to_value(Report::Instance(one.clone())).unwrap(),
            json!({"outcome": "skipped", "dry_run": false, "instance_id": INSTANCE, "image_id": null, "owner_id": null, "reasons": ["why"],
                   "alert_message_id": null, "enforcement": "none", "already_alerted": false, "alert_folded": false, "warnings": []})
        );
        assert_eq!(
            serde_json::to_value(Report::Launch { instances: vec![one] }).unwrap()["instances"][0]["outcome"],
            "skipped"
        );
        let audit = Report::Audit(AuditReport {
            outcome: Outcome::Audit,
            dry_run: false,
            audited: 3,
            untrusted: vec![],
            alerts_sent: 0,
            alerts_would_send: None,
            warnings: vec![],
        });
        assert_eq!(
            serde_json::to_value(audit).unwrap(),
            json!({"outcome": "audit", "dry_run": false, "audited": 3, "untrusted": [], "alerts_sent": 0, "warnings": []})
        );
    }

    // ---- metrics: what the EMF lines count ----

    /// `AlertsSent` of each severity in the invocation's EMF lines, and whether they say dry run.
    fn alerts_sent(report: &Report) -> (i64, i64, bool) {
        let lines = metrics::emf_lines(report, now());
        let of = |severity: &str| {
            let line = lines.iter().find(|l| l["Severity"] == severity).unwrap();
            line["AlertsSent"].as_i64().unwrap()
        };
        let dry = lines.iter().all(|l| l["DryRun"] == json!(true));
        assert!(dry || lines.iter().all(|l| l["DryRun"] == json!(false)));
        (of("high"), of("medium"), dry)
    }

    #[tokio::test]
    async fn an_alert_sent_counts_once_by_its_severity_and_a_dry_run_counts_none() {
        let ec2 = || FakeEc2 {
            images: vec![vendor_image()],
            ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
        };
        let real = clients(ec2());
        let sent = handle(&config(Enforcement::Alert), &real, &state_change("running"), &at()).await.unwrap();
        assert_eq!(instance_report(sent.clone()).severity, Some(Severity::High));
        assert_eq!(alerts_sent(&sent), (1, 0, false));
        // The redelivery finds it sent: no second alert, nothing counted.
        let again = handle(&config(Enforcement::Alert), &real, &state_change("running"), &at()).await.unwrap();
        assert!(instance_report(again.clone()).already_alerted);
        assert_eq!(alerts_sent(&again), (0, 0, false));
        // A dry run would alert, and sends nothing: 0, said to be a dry run.
        let dry_clients = clients(ec2());
        let would = handle(&dry(Enforcement::Alert), &dry_clients, &state_change("running"), &at()).await.unwrap();
        assert_eq!(instance_report(would.clone()).would, [WouldDo::Alert]);
        assert_eq!(alerts_sent(&would), (0, 0, true));
    }

    #[tokio::test]
    async fn an_audit_counts_each_instance_its_digest_alerts() {
        let instances = vec![
            instance("i-0000000000000000b", VENDOR_AMI, InstanceState::Running),
            instance("i-0000000000000000c", VENDOR_AMI, InstanceState::Stopped),
        ];
        let clients =
            clients(FakeEc2 { instances: Mutex::new(instances), images: vec![vendor_image()], ..FakeEc2::default() });
        let audit = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap();
        let Report::Audit(found) = &audit else { panic!("not an audit") };
        assert_eq!(found.alerts_sent, 2);
        assert_eq!(alerts_sent(&audit), (2, 0, false));
        let again = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap();
        assert_eq!(alerts_sent(&again), (0, 0, false));
    }
}
