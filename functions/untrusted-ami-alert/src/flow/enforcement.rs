//! Enforcement: the plan for an untrusted instance carried out (the tag, the stop), or in a dry
//! run said (`would`), or withheld (a `medium` verdict, not proven untrusted) with the reason.
//! Applied on every untrusted event: both calls are idempotent.

use amiguard::error::AwsError;
use amiguard::tags::{self, Tag};

use super::context::Context;
use crate::core::enforce::{self, EnforcementPlan, EnforcementTaken, Outcomes, StopOutcome, StopStep};
use crate::error::{FailedStep, InstanceFailure};
use crate::ports::Ec2;
use crate::report::{InstanceReport, WouldDo};

/// What went wrong carrying out the plan, for the alert to say.
pub struct Enforced {
    pub tag_error: Option<AwsError>,
    pub stop_error: Option<AwsError>,
}

/// Carries out `plan` on the instance: the report gets the enforcement taken (none in a dry run,
/// which says what it would do), a tag that could not be written as a warning; a failed stop is a
/// failure.
pub async fn enforce<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    instance_id: &str,
    image_id: &str,
    plan: &EnforcementPlan,
    report: &mut InstanceReport,
    failures: &mut Vec<InstanceFailure>,
) -> Enforced {
    let tag_error = tag(ctx, instance_id, image_id, plan, report).await;
    let (stop, stop_error) = stop(ctx, instance_id, plan, report).await;
    let outcomes = Outcomes { tag_failed: tag_error.is_some(), stop: stop.as_ref(), stop_failed: stop_error.is_some() };
    report.enforcement = match enforce::taken(ctx.config.enforcement, plan, outcomes) {
        // Nothing was or would be tagged or stopped: said as a real run says it.
        EnforcementTaken::InstanceGone => EnforcementTaken::InstanceGone,
        EnforcementTaken::Withheld => {
            report.why_not_enforced = Some(enforce::withheld_because(ctx.config.enforcement));
            EnforcementTaken::Withheld
        }
        // Nothing was tagged or stopped: `would` says what would be.
        _ if ctx.config.dry_run => EnforcementTaken::None,
        taken => taken,
    };
    if let Some(error) = &stop_error {
        failures.push(InstanceFailure {
            instance_id: instance_id.to_string(),
            step: FailedStep::Enforcement,
            error: error.clone(),
        });
    }
    Enforced { tag_error, stop_error }
}

/// Tags the instance `amiguard:untrusted-ami=<image id>` when the plan says so; answers the error
/// of a tag that could not be written (said in the report's warnings).
async fn tag<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    instance_id: &str,
    image_id: &str,
    plan: &EnforcementPlan,
    report: &mut InstanceReport,
) -> Option<AwsError> {
    if !plan.tag {
        return None;
    }
    if ctx.config.dry_run {
        report.would.push(WouldDo::Tag);
        return None;
    }
    let tag = Tag::new(tags::UNTRUSTED_AMI, image_id);
    let error = ctx.ports.ec2.tag_instance(instance_id, &tag).await.err()?;
    report.warnings.push(format!("the tag {} could not be written on {instance_id}: {error}", tags::UNTRUSTED_AMI));
    Some(error)
}

/// Stops the instance when the plan says now; answers how StopInstances answered, or its error.
async fn stop<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    instance_id: &str,
    plan: &EnforcementPlan,
    report: &mut InstanceReport,
) -> (Option<StopOutcome>, Option<AwsError>) {
    match plan.stop {
        StopStep::Now if ctx.config.dry_run => report.would.push(WouldDo::Stop),
        StopStep::WhenRunning if ctx.config.dry_run => report.would.push(WouldDo::StopWhenRunning),
        StopStep::Now => {
            return match ctx.ports.ec2.stop_instance(instance_id).await {
                Ok(outcome) => (Some(outcome), None),
                Err(error) => (None, Some(error)),
            }
        }
        _ => {}
    }
    (None, None)
}
