//! An instance's state change: a stop is imaged under the stop time EC2 states (the image, its
//! snapshots' tags, its launch-template version), after adopting what the ledger missed, then what
//! EC2 says of every image of the instance is followed (the template's default, retention, the
//! alerts of failed images); a termination runs retention by `KEEP_AFTER_TERMINATION`; a dry run
//! decides and reports, and changes nothing.

use amiguard::alert::AlertPublisher;
use amiguard::events::EventError;
use amiguard::tags::{self, Tag};
use amiguard::AwsError;
use chrono::{DateTime, Utc};

use super::follow::{self, Settlement};
use super::image::{self, Made, Template};
use super::retention;
use super::session::Session;
use super::Delivery;
use crate::config::{Config, KeepAfterTermination};
use crate::core::selection::select;
use crate::core::stop_time::{self, StopTime};
use crate::core::{naming, InstanceRecords, LaunchTemplateRef, MadeImage, SkipReason, StoppedInstance};
use crate::error::Error;
use crate::ports::{Ec2, Ports, Records};
use crate::report::{Outcome, Report};

/// An `EC2 Instance State-change Notification` for `instance_id`, which the event says reached
/// `state` at `time`.
pub async fn instance_state_changed<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    instance_id: &str,
    state: &str,
    time: Option<DateTime<Utc>>,
) -> Result<Report, Error> {
    if state == "terminated" {
        return after_termination(delivery, instance_id).await;
    }
    if state != "stopped" {
        return Ok(Report::skipped(instance_id, SkipReason::EventStateNotStopped(state.to_string())));
    }
    // The event's time is checked against EC2's stop time (and stands for it when EC2 states
    // none): an event without one cannot be.
    let event_time = time.ok_or_else(|| EventError::Malformed("missing field `time`".into()))?;
    stopped(delivery, instance_id, event_time).await
}

/// A stop: imaged when EC2 still says the instance is stopped and it is selected, under the stop
/// time EC2 states (the event's only where EC2 states none, and never one in the future or
/// before the instance's last recorded stop). A time that is not believed changes nothing.
async fn stopped<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    instance_id: &str,
    event_time: DateTime<Utc>,
) -> Result<Report, Error> {
    let (ports, config, invocation) = (delivery.ports, delivery.config, delivery.invocation);
    let ec2 = &ports.ec2;
    let Some(instance) = ec2.describe_instance(instance_id).await? else {
        return Ok(Report::skipped(instance_id, SkipReason::InstanceGone));
    };
    let skipped = |reason: &dyn std::fmt::Display| Report {
        stop_reason: instance.state_reason.clone(),
        ..Report::skipped(instance_id, reason)
    };
    if let Err(reason) = select(&instance, config.scope) {
        return Ok(skipped(&reason));
    }
    let stated = instance.state_transition_reason.as_deref().and_then(stop_time::stated_by_ec2);
    let stop = match stop_time::decide(stated, event_time, invocation.now) {
        Ok(stop) => stop,
        Err(refused) => return Ok(skipped(&refused)),
    };
    // The event's time alone: held to the ledger's last recorded stop, read first, so that a
    // refusal writes nothing (not even a lease). A ledger that cannot be read retires nothing.
    if let (StopTime::EventOnly(_), Some(store)) = (stop, ports.ledger.as_ref()) {
        if let Ok(known) = store.read_records(&ports.region, instance_id).await {
            if let Err(refused) = stop_time::not_before_last_recorded(stop, known.last_stop()) {
                return Ok(skipped(&refused));
            }
        }
    }
    if config.dry_run {
        let report = dry_run(ports, config, instance_id, stop.time()).await?;
        return Ok(Report { stop_reason: instance.state_reason.clone(), ..report });
    }

    let mut session = Session::open(ports.ledger.as_ref(), &ports.region, instance_id, invocation).await?;
    // Again under the lease: a stop recorded since counts.
    if let Err(refused) = stop_time::not_before_last_recorded(stop, session.records.last_stop()) {
        let warnings = session.close().await;
        return Ok(Report { warnings, ..skipped(&refused) });
    }
    let result = image_and_retire(delivery, &mut session, &instance, stop.time()).await;
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
    stopped_at: DateTime<Utc>,
) -> Result<Report, Error> {
    let (ec2, config, invocation) = (&delivery.ports.ec2, delivery.config, delivery.invocation);
    let instance_id = instance.instance_id.as_str();
    let ownership =
        [Tag::new(tags::SOURCE_INSTANCE, instance_id), Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP)];
    let adopted = session.adopt(ec2, &ownership, stopped_at, invocation).await;
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
    // the default once EC2 says the image is available (the template is made then if there is
    // none). Only in amiguard's own template: one the records name.
    match image::find_template(ec2, &session.records, instance_id).await? {
        Template::Ours(template_id) => {
            let versions = ec2.list_launch_template_versions(&template_id).await?;
            let version = image::version_for(ec2, &template_id, &versions, instance_id, &image_id, stopped_at).await?;
            record.launch_template = Some(LaunchTemplateRef { id: template_id, version });
        }
        Template::NotOurs(template_id) => {
            report.warn(Template::warning(instance_id, &template_id, session.is_healthy()));
        }
        Template::None => {}
    }
    session.record(&record).await;
    if session.is_healthy() {
        let settlement =
            Settlement { instance_id, current_image: &image_id, keep: Some(config.keep_last), instance_live: true };
        follow::settle(delivery, session, &settlement, &mut report).await?;
        if session.records.for_stop(stopped_at).is_some_and(|r| r.launch_template.is_none()) {
            version_for_this_stop(ec2, session, instance_id, &image_id, stopped_at, record, &mut report).await;
        }
    } else {
        launch_if_available(ec2, &session.records, instance_id, &image_id, stopped_at, &mut report).await?;
    }
    Ok(report)
}

/// The template was made just now, for an older available image: this stop's configuration gets
/// its version too, for when its image is available. A failure loses nothing: the image's AMI
/// event (or the next stop) makes its version.
async fn version_for_this_stop<E: Ec2, L: Records>(
    ec2: &E,
    session: &mut Session<'_, L>,
    instance_id: &str,
    image_id: &str,
    stopped_at: DateTime<Utc>,
    record: MadeImage,
    report: &mut Report,
) {
    if let Some(template) = report.launch_template.clone() {
        let made = async {
            let versions = ec2.list_launch_template_versions(&template.id).await?;
            image::version_for(ec2, &template.id, &versions, instance_id, image_id, stopped_at).await
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

/// Without a usable ledger no other image is known: the template's default moves to this stop's
/// image only when EC2 already says it is available (it stays where it was otherwise), and only in
/// a template the records read in this delivery name. None is made: the ledger could not record
/// it, and a template it does not record is never amiguard's; a later stop makes it.
async fn launch_if_available<E: Ec2>(
    ec2: &E,
    records: &InstanceRecords,
    instance_id: &str,
    image_id: &str,
    stopped_at: DateTime<Utc>,
    report: &mut Report,
) -> Result<(), Error> {
    let image = ec2.describe_image(image_id).await?;
    if image.and_then(|i| i.state).as_deref() != Some("available") {
        report.warnings.push(format!("{image_id} is not available yet: the launch template's default stays"));
        return Ok(());
    }
    let template_id = match image::find_template(ec2, records, instance_id).await? {
        Template::Ours(template_id) => template_id,
        Template::NotOurs(template_id) => {
            report.warn(Template::warning(instance_id, &template_id, false));
            return Ok(());
        }
        Template::None => {
            report.warn(format!(
                "no launch template is made for {instance_id} without the ledger (it could not record it): a later stop makes it"
            ));
            return Ok(());
        }
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
    let (ports, config, invocation) = (delivery.ports, delivery.config, delivery.invocation);
    let KeepAfterTermination::Newest(keep_newest) = config.keep_after_termination else {
        return Ok(Report::skipped(instance_id, "terminated: its images are kept (KEEP_AFTER_TERMINATION=all)"));
    };
    let keep = retention::Keep::newest(keep_newest, config);
    let ec2 = &ports.ec2;
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
        match ports.ledger.as_ref().map(|store| store.read_records(&ports.region, instance_id)) {
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
    let mut session = Session::open(ports.ledger.as_ref(), &ports.region, instance_id, invocation).await?;
    let mut report = Report::new(Outcome::Terminated, instance_id);
    let result = if session.is_healthy() {
        let settlement = Settlement { instance_id, current_image: "", keep: Some(keep_newest), instance_live: false };
        follow::settle(delivery, &mut session, &settlement, &mut report).await
    } else {
        Ok(())
    };
    let healthy = session.is_healthy();
    report.warnings.extend(session.close().await);
    result?;
    if ports.ledger.is_some() && !healthy {
        // No stop will come to try again: the invocation fails, and Lambda's retries (then the
        // dead-letter queue and its alarm) do.
        return Err(Error::Aws(AwsError::new("Ledger", "LedgerUnavailable", report.warnings.join("; "))));
    }
    Ok(report)
}

/// Decides and reports (the name it would use and the AMIs it would retire), changes nothing:
/// the ledger is only read.
async fn dry_run<E: Ec2, L: Records, P>(
    ports: &Ports<E, L, P>,
    config: &Config,
    instance_id: &str,
    stopped_at: DateTime<Utc>,
) -> Result<Report, Error> {
    let ec2 = &ports.ec2;
    let name = naming::image_name(instance_id, stopped_at);
    let mut report = Report::new(Outcome::DryRun, instance_id);
    let existing = ec2.find_own_image_by_name(&name).await?;
    report.image_name = Some(name);
    report.image_id = existing.map(|i| i.image_id);
    let Some(store) = ports.ledger.as_ref() else {
        report.warnings.push("no ledger is configured (LEDGER_TABLE): nothing would be retired".into());
        return Ok(report);
    };
    match store.read_records(&ports.region, instance_id).await {
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
