//! Guarding instances: each one judged by who owns and who made its image, then, when untrusted,
//! enforced and alerted once.

use amiguard::alert::{AlertPublisher, Severity};

use super::alert::{alert_once, PendingAlert};
use super::context::Context;
use super::enforcement::{enforce, Enforced};
use super::facts::{self, Facts};
use crate::core::enforce::{self, LaunchedInstance, Occasion};
use crate::core::judge;
use crate::core::message::{AlertDetails, OwnerSource};
use crate::core::verdict::{LaunchImage, Verdict};
use crate::error::{Error, InstanceFailure};
use crate::ports::{Ec2, Records};
use crate::report::InstanceReport;

/// What one instance's guarding produced.
pub struct Guarded {
    pub report: InstanceReport,
    pub failures: Vec<InstanceFailure>,
    /// The audit's: an alert claimed for the digest, not sent yet.
    pub pending: Option<PendingAlert>,
    /// An untrusted instance's: what its alert states, for its Security Hub finding.
    pub untrusted: Option<AlertDetails>,
}

impl Guarded {
    /// Nothing to do about it (skipped, or trusted).
    fn settled(report: InstanceReport) -> Self {
        Self { report, failures: vec![], pending: None, untrusted: None }
    }
}

/// Reads the images of `instances` once, then guards each instance.
pub async fn guard<E: Ec2, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    instances: &[LaunchedInstance],
    occasion: &Occasion,
) -> Result<Vec<Guarded>, Error> {
    let facts = facts::gather(ctx, instances).await?;
    let mut guarded = Vec::with_capacity(instances.len());
    for instance in instances {
        guarded.push(guard_one(ctx, instance, &facts, occasion).await);
    }
    Ok(guarded)
}

/// Who owns its image (as the policy, or EC2's own Allowed AMIs verdict, says), then who made it:
/// trusted, or untrusted and then enforced and alerted.
async fn guard_one<E: Ec2, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    instance: &LaunchedInstance,
    facts: &Facts,
    occasion: &Occasion,
) -> Guarded {
    let instance_id = instance.instance_id.clone();
    let Some(image_id) = instance.image_id.clone() else {
        let reason = "EC2 reports no image id for the instance".to_string();
        return Guarded::settled(InstanceReport::skipped(ctx.config.dry_run, Some(instance_id), reason));
    };
    let image = facts.images.get(&image_id);
    let made_from = facts.provenance.get(&image_id);
    let recorded = facts.launch_metadata.get(&instance_id);
    let owner_verdict = judge::owner_verdict(&ctx.config.policy, image, recorded, ctx.account, ctx.invocation.now);
    let verdict = judge::launch_verdict(owner_verdict, made_from);
    let (owner, owner_source) = judge::owner(image, recorded);
    let owner_id = owner.map(|o| o.owner_id.clone()).filter(|id| !id.is_empty());
    let report = InstanceReport::judged(ctx.config.dry_run, instance_id, image_id.clone(), owner_id, &verdict);
    match verdict {
        Verdict::Trusted => Guarded::settled(report),
        Verdict::Untrusted { severity, .. } => {
            let untrusted = Untrusted { instance, image_id, owner, owner_source, severity };
            guard_untrusted(ctx, &untrusted, report, occasion).await
        }
    }
}

/// An instance judged untrusted: what its alert states besides what was done about it.
struct Untrusted<'a> {
    instance: &'a LaunchedInstance,
    image_id: String,
    /// The owner's facts, and whose word they are.
    owner: Option<&'a LaunchImage>,
    owner_source: OwnerSource,
    severity: Severity,
}

/// Enforce first (only a `high` verdict, unless `ENFORCE_UNVERIFIABLE`), so that the alert says
/// what was done; then alert, once. A tag that cannot be written is said in the alert and the
/// report; only a failed stop fails the invocation (its retry stops the instance and does not
/// alert again).
async fn guard_untrusted<E: Ec2, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    untrusted: &Untrusted<'_>,
    mut report: InstanceReport,
    occasion: &Occasion,
) -> Guarded {
    let mut failures = Vec::new();
    let enforceable = enforce::enforceable(untrusted.severity, ctx.config.enforce_unverifiable);
    let plan = enforce::plan(ctx.config.enforcement, occasion, &untrusted.instance.state, enforceable);
    let instance_id = &untrusted.instance.instance_id;
    let enforced = enforce(ctx, instance_id, &untrusted.image_id, &plan, &mut report, &mut failures).await;
    let details = alert_details(ctx, untrusted, &report, &enforced, occasion);
    let untrusted = Some(details.clone());
    let pending = alert_once(ctx, details, occasion, &mut report, &mut failures).await;
    Guarded { report, failures, pending, untrusted }
}

/// Everything the alert says of an untrusted instance (also its JSON block), before the ledger
/// is asked whether to send it.
fn alert_details<E, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    untrusted: &Untrusted<'_>,
    report: &InstanceReport,
    enforced: &Enforced,
    occasion: &Occasion,
) -> AlertDetails {
    let Untrusted { instance, owner, .. } = untrusted;
    AlertDetails {
        instance_id: instance.instance_id.clone(),
        instance_state: instance.state.to_string(),
        image_id: untrusted.image_id.clone(),
        owner_id: report.owner_id.clone(),
        owner_alias: owner.and_then(|o| o.owner_alias.clone()),
        owner_source: untrusted.owner_source,
        image_name: owner.and_then(|o| o.name.clone()),
        reasons: report.reasons.clone(),
        severity: untrusted.severity,
        region: ctx.ports.region.clone(),
        account: ctx.account.to_string(),
        seen_on: occasion.to_string(),
        enforcement_mode: ctx.config.enforcement,
        enforcement: report.enforcement,
        enforcement_error: enforced.stop_error.as_ref().map(ToString::to_string),
        tag_error: enforced.tag_error.as_ref().map(ToString::to_string),
        policy: ctx.config.policy.to_string(),
        ledger_warning: None,
    }
}
