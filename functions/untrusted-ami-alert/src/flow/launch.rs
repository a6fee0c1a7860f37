//! A launch: the instances an event names, judged as EC2 describes them now; one EC2 no longer
//! lists is judged by the image EC2 recorded at its launch.

use std::collections::{HashMap, HashSet};

use amiguard::alert::AlertPublisher;
use amiguard::error::AwsError;
use chrono::{DateTime, Utc};

use super::context::{best_effort, Context};
use super::findings;
use super::guard::guard;
use super::Failure;
use crate::core::enforce::{InstanceState, LaunchedInstance, Occasion};
use crate::error::Error;
use crate::event::Launched;
use crate::ports::{Ec2, LaunchMetadata, Records};
use crate::report::{InstanceReport, Report};

/// EC2 keeps listing a terminated instance for about an hour.
const LISTED_AFTER_TERMINATION: chrono::Duration = chrono::Duration::hours(1);

/// The instances named by the event, judged as EC2 describes them now. One EC2 no longer lists
/// (a short-lived instance, terminated before this ran) is still judged, by the image EC2's launch
/// metadata recorded (or, for an event over an hour old, the one the launch's record names):
/// alerted once, with nothing to enforce.
pub async fn launch<E: Ec2, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    launched: Vec<Launched>,
    occasion: Occasion,
    event_time: Option<DateTime<Utc>>,
) -> Result<Vec<InstanceReport>, Failure> {
    let instance_ids: Vec<String> = launched.iter().map(|l| l.instance_id.clone()).collect();
    let mut instances = ctx.ports.ec2.instances(&instance_ids).await?;
    let known: HashSet<String> = instances.iter().map(|i| i.instance_id.clone()).collect();
    let unlisted: Vec<&Launched> = launched.iter().filter(|l| !known.contains(&l.instance_id)).collect();
    let (gone, missing, notes) = judge_unlisted(ctx, &unlisted, event_time).await?;
    instances.extend(gone);
    // In the event's order; the ones EC2 knows are guarded even when others are missing.
    let mut ordered: Vec<LaunchedInstance> = Vec::with_capacity(instances.len());
    for id in &instance_ids {
        ordered.extend(instances.iter().filter(|i| &i.instance_id == id).take(1).cloned());
    }
    let mut guarded = guard(ctx, &ordered, &occasion).await?;
    // After the alerts: a finding never costs one.
    let findings_warnings = findings::import_untrusted(ctx, &mut guarded, &[]).await;
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for mut g in guarded {
        if g.untrusted.is_some() {
            g.report.warnings.extend(findings_warnings.iter().cloned());
        }
        failures.extend(g.failures);
        let id = g.report.instance_id.as_deref();
        g.report.warnings.extend(notes.iter().filter(|(i, _)| Some(i.as_str()) == id).map(|(_, n)| n.clone()));
        reports.push(g.report);
    }
    if !failures.is_empty() || !missing.is_empty() {
        let error = if failures.is_empty() { Error::InstancesNotFound(missing) } else { Error::NotGuarded(failures) };
        return Err(Failure { error, done: Some(Box::new(Report::launch(reports))) });
    }
    Ok(reports)
}

/// The instances EC2 does not list, as far as they can be judged. EC2 keeps listing a
/// terminated instance for about an hour, so one it does not list is gone when its launch
/// metadata says so, or when the event is older than that; anything else may be EC2 lagging
/// right after a launch (the retry judges and enforces it). Answers those judged (`Unlisted`),
/// the ids left for the retry, and notes for the reports.
async fn judge_unlisted<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    unlisted: &[&Launched],
    event_time: Option<DateTime<Utc>>,
) -> Result<UnlistedJudged, AwsError> {
    let ask: Vec<String> = unlisted.iter().map(|l| l.instance_id.clone()).collect();
    let metadata: HashMap<String, LaunchMetadata> = if ask.is_empty() {
        HashMap::new()
    } else {
        let found =
            best_effort(ctx.ports.ec2.launch_image_metadata(&ask).await, "launch metadata of unlisted instances")?;
        found.into_iter().map(|m| (m.instance_id.clone(), m)).collect()
    };
    let old_event = event_time.is_some_and(|t| ctx.invocation.now - t > LISTED_AFTER_TERMINATION);
    let (mut gone, mut missing, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for launched in unlisted {
        match gone_instance(launched, metadata.get(&launched.instance_id), old_event, &mut notes) {
            Some(instance) => gone.push(instance),
            None => missing.push(launched.instance_id.clone()),
        }
    }
    Ok((gone, missing, notes))
}

/// The unlisted instances judged gone, the ids left for the retry, and notes by instance id.
type UnlistedJudged = (Vec<LaunchedInstance>, Vec<String>, Vec<(String, String)>);

/// An instance EC2 does not list, when it is gone (by its launch metadata's state, or by the
/// event's age when EC2 does not say): with the image EC2's launch metadata names, the record's
/// `imageId` (which a direct invoker can write) only when EC2 has none to give.
fn gone_instance(
    launched: &Launched,
    recorded: Option<&LaunchMetadata>,
    old_event: bool,
    notes: &mut Vec<(String, String)>,
) -> Option<LaunchedInstance> {
    let id = &launched.instance_id;
    let is_gone = match recorded.and_then(|m| m.instance_state.as_ref()) {
        Some(state) => state.is_gone() || *state == InstanceState::ShuttingDown,
        None => old_event,
    };
    let image_id = match (recorded, &launched.image_id) {
        (Some(m), Some(named)) if &m.image.image_id != named => {
            notes.push((
                id.clone(),
                format!("the event names image {named}, EC2's launch metadata {}: EC2's is judged", m.image.image_id),
            ));
            Some(m.image.image_id.clone())
        }
        (Some(m), _) => Some(m.image.image_id.clone()),
        (None, named) => named.clone(),
    };
    match image_id {
        Some(image_id) if is_gone => {
            Some(LaunchedInstance { instance_id: id.clone(), image_id: Some(image_id), state: InstanceState::Unlisted })
        }
        _ => None,
    }
}
