//! snapshot-on-stop: when an instance reaches `stopped`, image it (an image of a stopped instance
//! is consistent), keep a launch template that relaunches it with the same configuration, and
//! retire its older images with their snapshots. Each image is followed to `available` (its
//! `EC2 AMI State Change`, and every later stop): only then does the template's default launch it
//! and retention count it; an image that fails is alerted once.
//!
//! The decisions are `amiguard::snapshot_on_stop` (`core`, `launch_data`, `failed_alert`, and
//! `records`: what the ledger remembers of the images it made); its EC2 port is
//! `amiguard::snapshot_on_stop::ec2`, the ledger `amiguard::ledger`, the alert publisher
//! `amiguard::trust::sns`. Here: the handler, its configuration and report, the image steps
//! (`image`), retention (`retention`), what follows an image's settling (`follow`, `ami_event`,
//! `alerts`), one delivery's hold on the ledger (`session`) and its EMF line (`metrics`).

pub mod adapters;
mod alerts;
mod ami_event;
pub mod core;
mod follow;
mod image;
pub mod metrics;
pub mod ports;
mod retention;
mod session;

use amiguard::alert::sns::SnsAlerts;
use amiguard::alert::AlertPublisher;
use amiguard::config::{self, ConfigError, VarSource};
use amiguard::events::{self, AmiStateChangeDetail, EventError, AMI_STATE_CHANGE};
use amiguard::invocation::Invocation;
use amiguard::recycle_bin::RecycleBin;
use amiguard::tags::{self, Tag};
use amiguard::AwsError;
use serde::{Deserialize, Serialize};

use crate::core::{naming, selection, LaunchTemplateRef, SkipReason, StoppedInstance};
use crate::follow::{Delivery, Plan};
use crate::image::Made;
use crate::session::Session;

pub use crate::adapters::ec2::Ec2Client;
pub use crate::adapters::ledger as records;
pub use crate::core::{MadeImage, SnapshotScope};
pub use crate::ports::{CreateImageOutcome, Ec2, Records};

pub const FUNCTION: &str = "snapshot-on-stop";
const STATE_CHANGE: &str = "EC2 Instance State-change Notification";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub scope: SnapshotScope,
    pub keep_last: usize,
    pub dry_run: bool,
    /// `PROTECT_TAG` (default `amiguard:keep`): an image carrying it, or one of whose snapshots
    /// does (any letter case, any value), is never retired and not counted in `KEEP_LAST`.
    pub protect_tag: String,
    /// `KEEP_AFTER_TERMINATION` (`all` by default): what retention keeps of a terminated
    /// instance's images.
    pub keep_after_termination: KeepAfterTermination,
    /// `ALERT_TOPIC_ARN` (optional; the stack's alert topic): where an image that failed is
    /// alerted, once.
    pub alert_topic_arn: Option<String>,
    /// `PROTECT_NEWEST` (default false): the newest available image of each instance gets EC2's
    /// own deregistration protection, taken off again when a newer one is available.
    pub protect_newest: bool,
    /// `RECYCLE_BIN_RETENTION_DAYS` (default 0): what retention retires is tagged for the stack's
    /// Recycle Bin rules first, and restorable for that long.
    pub recycle_bin: RecycleBin,
}

/// What happens to a terminated instance's images (no stop of it will ever run retention again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepAfterTermination {
    /// Every image stays (and is billed) until a person deregisters it.
    All,
    /// The newest N available, unprotected images stay; the rest are retired as on a stop.
    Newest(usize),
}

impl KeepAfterTermination {
    fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        const EXPECTED: &str = "all, or a number from 1 to 1000";
        match config::optional(source, "KEEP_AFTER_TERMINATION") {
            None => Ok(Self::All),
            Some(value) if value.eq_ignore_ascii_case("all") => Ok(Self::All),
            Some(value) => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(Self::Newest(n)),
                _ => Err(ConfigError::new("KEEP_AFTER_TERMINATION", value, EXPECTED)),
            },
        }
    }
}

impl Default for Config {
    /// What an unset environment gives.
    fn default() -> Self {
        Self {
            scope: SnapshotScope::Tagged,
            keep_last: 3,
            dry_run: false,
            protect_tag: tags::KEEP.to_string(),
            keep_after_termination: KeepAfterTermination::All,
            alert_topic_arn: None,
            protect_newest: false,
            recycle_bin: RecycleBin::default(),
        }
    }
}

impl Config {
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        Ok(Self {
            scope: config::choice_var(
                source,
                "SNAPSHOT_SCOPE",
                SnapshotScope::Tagged,
                &[("tagged", SnapshotScope::Tagged), ("all", SnapshotScope::All)],
            )?,
            keep_last: config::number_var(source, "KEEP_LAST", 3usize, 1, 1000)?,
            dry_run: config::bool_var(source, "DRY_RUN", false)?,
            protect_tag: config::protect_tag_var(source)?,
            keep_after_termination: KeepAfterTermination::from_env(source)?,
            alert_topic_arn: config::optional_topic_arn_var(source, "ALERT_TOPIC_ARN")?,
            protect_newest: config::bool_var(source, "PROTECT_NEWEST", false)?,
            recycle_bin: RecycleBin::from_env(source)?,
        })
    }
}

/// The ports the handler acts through, built once per container.
pub struct Clients<E, L, P = SnsAlerts> {
    pub ec2: E,
    /// `None` without `LEDGER_TABLE`: images are made, nothing is retired or followed.
    pub ledger: Option<L>,
    /// `None` without `ALERT_TOPIC_ARN`: a failed image is reported, not alerted.
    pub alerts: Option<P>,
    /// The region of the clients (part of the ledger's keys).
    pub region: String,
}

/// The `detail` of an EC2 state-change notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateChange {
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    pub state: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    AlreadyCreated,
    Skipped,
    DryRun,
    /// The instance was terminated: retention ran with `KEEP_AFTER_TERMINATION`.
    Terminated,
    /// An AMI event: EC2 says the image is available; the template and retention followed.
    ImageAvailable,
    /// An AMI event: EC2 says the image failed; everything is kept, the alert sent once.
    ImageFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    /// Empty for an AMI event of an image the ledger does not hold.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    pub image_id: Option<String>,
    pub image_name: Option<String>,
    /// Why the instance was skipped; for an AMI event, what was kept.
    pub reason: Option<String>,
    /// For an AMI event: what EC2 says of the image now (what is acted on, not the event's word).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_state: Option<String>,
    /// EC2's `StateReason.Code` of the stop (`Client.UserInitiatedShutdown`, or `Server.*` for a
    /// stop AWS made, such as a Spot interruption).
    pub stop_reason: Option<String>,
    /// The launch template and its default version after this delivery: it launches the newest
    /// available image (a stop's own image only once EC2 says it is available).
    pub launch_template: Option<LaunchTemplateRef>,
    /// Images deregistered by retention (in a dry run: those that would be).
    pub retired_images: Vec<String>,
    pub deleted_snapshots: Vec<String>,
    /// Until when `retired_images` and `deleted_snapshots` can be restored from the Recycle Bin
    /// (`null`: nothing retired, or no retention rule: `RECYCLE_BIN_RETENTION_DAYS` 0). Each
    /// one's own time is in the journal.
    pub restorable_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Snapshots of retired images that EC2 refused to delete (`InvalidSnapshot.InUse`: another
    /// image uses them); they are kept.
    pub kept_snapshots: Vec<KeptSnapshot>,
    /// Images made before the ledger existed that this delivery adopted into it.
    pub adopted_images: Vec<String>,
    /// This instance's recorded images that EC2 does not say are `available` (pending, failed,
    /// disabled): retention neither counts nor retires them; a failed or disabled one stays until
    /// a person deregisters it.
    pub images_not_available: Vec<String>,
    /// Failed images this delivery alerted (once each: the ledger remembers).
    pub alerted_images: Vec<String>,
    /// `PROTECT_NEWEST`: the image whose deregistration protection this delivery turned on, and
    /// those it turned off (amiguard's own protection of images no longer the newest).
    pub protection_enabled: Vec<String>,
    pub protection_removed: Vec<String>,
    /// Cleanup that did not happen and loses nothing (a launch-template version left behind), and
    /// a ledger that could not be used (nothing is retired then).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptSnapshot {
    pub snapshot_id: String,
    pub code: String,
}

impl Report {
    pub(crate) fn new(outcome: Outcome, instance_id: &str) -> Self {
        Self {
            outcome,
            instance_id: instance_id.to_string(),
            image_id: None,
            image_name: None,
            reason: None,
            image_state: None,
            stop_reason: None,
            launch_template: None,
            retired_images: Vec::new(),
            deleted_snapshots: Vec::new(),
            restorable_until: None,
            kept_snapshots: Vec::new(),
            adopted_images: Vec::new(),
            images_not_available: Vec::new(),
            alerted_images: Vec::new(),
            protection_enabled: Vec::new(),
            protection_removed: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn skipped(instance_id: &str, reason: impl ToString) -> Self {
        Self { reason: Some(reason.to_string()), ..Self::new(Outcome::Skipped, instance_id) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("image {0} was created but is not visible to DescribeImages")]
    ImageVanished(String),
    /// Another delivery for the same instance holds its lease: this one fails so that Lambda
    /// retries it once the other is done (it then finds the image made).
    #[error("another delivery for {0} is in progress: retry later")]
    Busy(String),
    /// An image with the stop's name is still pending: until EC2 lists its snapshots, it cannot
    /// say who made it. Lambda's retry comes back when it can.
    #[error("image {0} carries this stop's name but lists no snapshots yet: retry later")]
    NotYetVerifiable(String),
    /// An AMI event came before EC2 says the image settled: the retry looks again.
    #[error("image {image_id} is {state} by EC2's word, not settled yet: retry later")]
    NotYetSettled { image_id: String, state: String },
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        let error_type = match &err {
            Error::Event(e) => return e.clone().into(),
            Error::Aws(e) => return e.clone().into(),
            Error::ImageVanished(_) => "ImageVanished",
            Error::Busy(_) => "InstanceBusy",
            Error::NotYetVerifiable(_) => "ImageNotYetVerifiable",
            Error::NotYetSettled { .. } => "ImageNotYetSettled",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: err.to_string() }
    }
}

/// Handles one EventBridge delivery. Idempotent: a redelivery finds the image in the ledger (or
/// by its deterministic name) and completes what an earlier delivery left undone; deliveries for
/// one instance take turns (the ledger's lease).
pub async fn handle<E: Ec2, L: Records, P: AlertPublisher>(
    clients: &Clients<E, L, P>,
    config: &Config,
    payload: serde_json::Value,
    invocation: &Invocation,
) -> Result<Report, Error> {
    let detail_type = payload.get("detail-type").and_then(serde_json::Value::as_str);
    let source = payload.get("source").and_then(serde_json::Value::as_str);
    if detail_type == Some(AMI_STATE_CHANGE) && source == Some("aws.ec2") {
        let event = events::parse_envelope::<AmiStateChangeDetail>(&payload)?;
        let delivery = Delivery { clients, config, invocation, account: event.account.as_deref() };
        return ami_event::image_state_changed(&delivery, event.detail, event.region.as_deref()).await;
    }
    let event = events::parse_envelope::<StateChange>(&payload)?;
    if event.detail_type != STATE_CHANGE || event.source != "aws.ec2" {
        return Err(EventError::Unexpected(format!(
            "expected `{STATE_CHANGE}` or `{AMI_STATE_CHANGE}` from aws.ec2, got `{}` from {}",
            event.detail_type, event.source
        ))
        .into());
    }
    let delivery = Delivery { clients, config, invocation, account: event.account.as_deref() };
    let instance_id = event.detail.instance_id.as_str();
    if !instance_id.starts_with("i-") {
        return Err(
            EventError::Malformed(format!("`detail.instance-id` is not an instance id: {instance_id:?}")).into()
        );
    }
    if event.detail.state == "terminated" {
        return after_termination(&delivery, instance_id).await;
    }
    if event.detail.state != "stopped" {
        return Ok(Report::skipped(instance_id, SkipReason::EventStateNotStopped(event.detail.state.clone())));
    }
    // The event time names the image, so a redelivery finds it again: without it there is no
    // safe name, and an image per delivery would follow.
    let stopped_at = event.time.ok_or_else(|| EventError::Malformed("missing field `time`".into()))?;

    let ec2 = &clients.ec2;
    let Some(instance) = ec2.describe_instance(instance_id).await? else {
        return Ok(Report::skipped(instance_id, SkipReason::InstanceGone));
    };
    if let Err(reason) = selection::select(&instance, config.scope) {
        return Ok(Report { stop_reason: instance.state_reason.clone(), ..Report::skipped(instance_id, reason) });
    }
    if config.dry_run {
        let report = dry_run(clients, config, instance_id, stopped_at).await?;
        return Ok(Report { stop_reason: instance.state_reason.clone(), ..report });
    }

    let mut session = Session::open(clients.ledger.as_ref(), &clients.region, instance_id, invocation).await?;
    let result = image_and_retire(&delivery, &mut session, &instance, stopped_at).await;
    let warnings = session.close().await;
    result.map(|mut report| {
        report.warnings.extend(warnings);
        report
    })
}

/// The stop's image, its snapshots' tags, its template version, then what EC2 says of every
/// image: the template's default, retention and the alerts of failed images.
async fn image_and_retire<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    session: &mut Session<'_, L>,
    instance: &StoppedInstance,
    stopped_at: chrono::DateTime<chrono::Utc>,
) -> Result<Report, Error> {
    let (ec2, config, invocation) = (&delivery.clients.ec2, delivery.config, delivery.invocation);
    let instance_id = instance.instance_id.as_str();
    let ownership =
        [Tag::new(tags::SOURCE_INSTANCE, instance_id), Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP)];
    let adopted = session.adopt(ec2, &ownership, invocation).await;
    let (outcome, image_id, mut record) =
        match image::find_or_create(ec2, session, instance, stopped_at, invocation.now, &config.protect_tag).await? {
            Made::Image { outcome, image_id, record } => (outcome, image_id, record),
            Made::Skipped(reason) => {
                return Ok(Report { adopted_images: adopted, ..Report::skipped(instance_id, reason) })
            }
        };
    let mut report = Report::new(outcome, instance_id);
    report.stop_reason = instance.state_reason.clone();
    report.image_name = Some(record.name.clone());
    report.image_id = Some(image_id.clone());
    report.adopted_images = adopted;

    match image::tag_snapshots(ec2, instance_id, stopped_at, &image_id).await? {
        Ok(snapshot_ids) => record.snapshot_ids = snapshot_ids,
        Err(warning) => report.warnings.push(warning),
    }
    // The instance's configuration at this stop, kept now in a version of its own: it becomes
    // the default once EC2 says the image is available (the template is made then if there is none).
    if let Some(template_id) = image::find_template(ec2, instance_id).await? {
        let versions = ec2.list_launch_template_versions(&template_id).await?;
        let version = image::version_for(ec2, &template_id, &versions, instance_id, &image_id, stopped_at).await?;
        record.launch_template = Some(LaunchTemplateRef { id: template_id, version });
    }
    session.record(&record).await;
    if session.is_healthy() {
        let plan = Plan { instance_id, current_image: &image_id, keep: Some(config.keep_last), instance_live: true };
        follow::settle(delivery, session, &plan, &mut report).await?;
        if session.records.for_stop(stopped_at).is_some_and(|r| r.launch_template.is_none()) {
            // The template was made just now, for an older available image: this stop's
            // configuration gets its version too, for when its image is available.
            // A failure loses nothing: the image's AMI event (or the next stop) makes its version.
            if let Some(template) = report.launch_template.clone() {
                let made = async {
                    let versions = ec2.list_launch_template_versions(&template.id).await?;
                    image::version_for(ec2, &template.id, &versions, instance_id, &image_id, stopped_at).await
                };
                match made.await {
                    Ok(version) => {
                        let mut recorded = session.records.for_stop(stopped_at).cloned().unwrap_or(record);
                        recorded.launch_template = Some(LaunchTemplateRef { id: template.id, version });
                        session.record(&recorded).await;
                    }
                    Err(err) => report.warnings.push(format!("no template version for {image_id} yet: {err}")),
                }
            }
        }
    } else {
        launch_if_available(ec2, instance_id, &image_id, stopped_at, &mut report).await?;
    }
    Ok(report)
}

/// Without a usable ledger no other image is known: the template's default moves to this stop's
/// image only when EC2 already says it is available (it stays where it was otherwise).
async fn launch_if_available<E: Ec2>(
    ec2: &E,
    instance_id: &str,
    image_id: &str,
    stopped_at: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) -> Result<(), Error> {
    let image = ec2.describe_image(image_id).await?;
    if image.and_then(|i| i.state).as_deref() != Some("available") {
        report.warnings.push(format!("{image_id} is not available yet: the launch template's default stays"));
        return Ok(());
    }
    let Some(template_id) = image::find_template(ec2, instance_id).await? else {
        report.launch_template = Some(image::create_template(ec2, instance_id, image_id, stopped_at).await?);
        return Ok(());
    };
    let versions = ec2.list_launch_template_versions(&template_id).await?;
    let version = image::version_for(ec2, &template_id, &versions, instance_id, image_id, stopped_at).await?;
    if !versions.iter().any(|v| v.version == version && v.is_default) {
        ec2.set_default_launch_template_version(&template_id, version).await?;
    }
    report.launch_template = Some(LaunchTemplateRef { id: template_id, version });
    Ok(())
}

/// A terminated instance: no stop of it will run retention again, so `KEEP_AFTER_TERMINATION`
/// decides now what stays of its images (the ledger's records only, as on a stop). The launch
/// template stays with the newest kept image's version; the versions of retired images go.
async fn after_termination<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    instance_id: &str,
) -> Result<Report, Error> {
    let (clients, config, invocation) = (delivery.clients, delivery.config, delivery.invocation);
    let KeepAfterTermination::Newest(keep_newest) = config.keep_after_termination else {
        return Ok(Report::skipped(instance_id, "terminated: its images are kept (KEEP_AFTER_TERMINATION=all)"));
    };
    let keep = retention::Keep::newest(keep_newest, config);
    let ec2 = &clients.ec2;
    // The event's word is not enough to cut an instance's images down: EC2 must agree that the
    // instance is gone (or no longer know it), and an opt-out tag still on it keeps them.
    if let Some(instance) = ec2.describe_instance(instance_id).await? {
        if !matches!(instance.state.as_str(), "terminated" | "shutting-down") {
            let reason = format!("the event says terminated, but EC2 says the instance is {}", instance.state);
            return Ok(Report::skipped(instance_id, reason));
        }
        let opt_in = tags::value(&instance.tags, tags::SNAPSHOT_ON_STOP).map(|v| v.trim().to_ascii_lowercase());
        if opt_in.as_deref() == Some("false") {
            return Ok(Report::skipped(instance_id, SkipReason::OptedOut));
        }
    }
    if config.dry_run {
        let mut report = Report::new(Outcome::DryRun, instance_id);
        match clients.ledger.as_ref().map(|store| store.read_records(&clients.region, instance_id)) {
            Some(read) => match read.await {
                Ok(known) => report.retired_images = retention::preview(ec2, &known, &keep, None).await?,
                Err(err) => {
                    report.warnings.push(format!("the ledger could not be read ({err}): nothing would be retired"))
                }
            },
            None => report.warnings.push("no ledger is configured (LEDGER_TABLE): nothing would be retired".into()),
        }
        return Ok(report);
    }
    let mut session = Session::open(clients.ledger.as_ref(), &clients.region, instance_id, invocation).await?;
    let mut report = Report::new(Outcome::Terminated, instance_id);
    let result = if session.is_healthy() {
        let plan = Plan { instance_id, current_image: "", keep: Some(keep_newest), instance_live: false };
        follow::settle(delivery, &mut session, &plan, &mut report).await
    } else {
        Ok(())
    };
    let healthy = session.is_healthy();
    report.warnings.extend(session.close().await);
    result?;
    if clients.ledger.is_some() && !healthy {
        // No stop will come to try again: the invocation fails, and Lambda's retries (then the
        // dead-letter queue and its alarm) do.
        return Err(Error::Aws(AwsError::new("Ledger", "LedgerUnavailable", report.warnings.join("; "))));
    }
    Ok(report)
}

/// Decides and reports (the name it would use and the AMIs it would retire), changes nothing:
/// the ledger is only read.
async fn dry_run<E: Ec2, L: Records, P>(
    clients: &Clients<E, L, P>,
    config: &Config,
    instance_id: &str,
    stopped_at: chrono::DateTime<chrono::Utc>,
) -> Result<Report, Error> {
    let ec2 = &clients.ec2;
    let name = naming::image_name(instance_id, stopped_at);
    let mut report = Report::new(Outcome::DryRun, instance_id);
    let existing = ec2.find_own_image_by_name(&name).await?;
    report.image_name = Some(name);
    report.image_id = existing.map(|i| i.image_id);
    let Some(store) = clients.ledger.as_ref() else {
        report.warnings.push("no ledger is configured (LEDGER_TABLE): nothing would be retired".into());
        return Ok(report);
    };
    match store.read_records(&clients.region, instance_id).await {
        Ok(known) => {
            // Only an image the ledger holds counts as this stop's own.
            let current = report.image_id.as_deref().filter(|id| known.holds_image(id));
            let keep = retention::Keep::newest(config.keep_last, config);
            report.retired_images = retention::preview(ec2, &known, &keep, current).await?;
        }
        Err(err) => report.warnings.push(format!("the ledger could not be read ({err}): nothing would be retired")),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    type Env = &'static [(&'static str, &'static str)];

    fn from(pairs: Env) -> Result<Config, ConfigError> {
        Config::from_env(&|name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn defaults_are_tagged_keep_three_and_act() {
        assert_eq!(from(&[]).unwrap(), Config::default());
        assert_eq!(Config::default().protect_tag, "amiguard:keep");
    }

    #[test]
    fn reads_every_setting() {
        let env = &[
            ("SNAPSHOT_SCOPE", "all"),
            ("KEEP_LAST", "7"),
            ("DRY_RUN", "true"),
            ("PROTECT_TAG", "legal-hold"),
            ("KEEP_AFTER_TERMINATION", "2"),
            ("ALERT_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:amiguard-alerts"),
            ("PROTECT_NEWEST", "true"),
            ("RECYCLE_BIN_RETENTION_DAYS", "7"),
        ];
        let expected = Config {
            scope: SnapshotScope::All,
            keep_last: 7,
            dry_run: true,
            protect_tag: "legal-hold".into(),
            keep_after_termination: KeepAfterTermination::Newest(2),
            alert_topic_arn: Some("arn:aws:sns:us-east-1:123456789012:amiguard-alerts".into()),
            protect_newest: true,
            recycle_bin: RecycleBin::retaining_for(7),
        };
        assert_eq!(from(env).unwrap(), expected);
        let all = from(&[("KEEP_AFTER_TERMINATION", "ALL")]).unwrap();
        assert_eq!(all.keep_after_termination, KeepAfterTermination::All);
    }

    #[test]
    fn invalid_values_name_the_variable_and_what_it_accepts() {
        let cases: [(Env, &str, &str); 8] = [
            (&[("SNAPSHOT_SCOPE", "some")], "SNAPSHOT_SCOPE", "one of tagged, all"),
            (&[("KEEP_LAST", "0")], "KEEP_LAST", "a number from 1 to 1000"),
            (&[("KEEP_LAST", "three")], "KEEP_LAST", "a number from 1 to 1000"),
            (&[("DRY_RUN", "maybe")], "DRY_RUN", "true or false"),
            (&[("PROTECT_TAG", "aws:keep")], "PROTECT_TAG", "a tag key of 1 to 128 characters, not starting with aws:"),
            (&[("KEEP_AFTER_TERMINATION", "0")], "KEEP_AFTER_TERMINATION", "all, or a number from 1 to 1000"),
            (&[("KEEP_AFTER_TERMINATION", "some")], "KEEP_AFTER_TERMINATION", "all, or a number from 1 to 1000"),
            (
                &[("ALERT_TOPIC_ARN", "amiguard-alerts")],
                "ALERT_TOPIC_ARN",
                "an SNS topic ARN such as arn:aws:sns:us-east-1:123456789012:alerts",
            ),
        ];
        for (env, variable, expected) in cases {
            let err = from(env).unwrap_err();
            assert_eq!((err.variable, err.expected.as_str()), (variable, expected));
            assert!(err.to_string().contains(variable));
        }
    }
}
