//! Alerting an untrusted instance once: the ledger's claim (or, in a dry run, what the ledger says
//! now), the launch-alert slot of its image this hour (fold), the publish, then the claim confirmed
//! or given back. The audit claims its alerts here and sends them in its digest.

use amiguard::alert::once::{self as sent, AlertClaim, AlertKey, Turn};
use amiguard::alert::{Alert, AlertPublisher};
use amiguard::error::AwsError;

use super::context::Context;
use crate::core::enforce::Occasion;
use crate::core::fold::{self, LaunchAlert};
use crate::core::message::{self, AlertDetails};
use crate::error::{FailedStep, InstanceFailure};
use crate::ports::{Records, Slot, Taken};
use crate::report::{InstanceReport, WouldDo};

/// An alert the audit claimed in the ledger and sends in its digest.
pub struct PendingAlert {
    pub claim: Option<AlertClaim>,
    pub details: AlertDetails,
}

/// Alerts the instance of `details` unless the ledger says it was alerted (or another delivery is
/// alerting it); the report and `failures` say what came of it. Answers the alert the audit is to
/// send in its digest.
pub async fn alert_once<E, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    details: AlertDetails,
    occasion: &Occasion,
    report: &mut InstanceReport,
    failures: &mut Vec<InstanceFailure>,
) -> Option<PendingAlert> {
    let key = AlertKey::untrusted(&ctx.ports.region, &details.instance_id, &details.image_id);
    match alert_turn(ctx, ctx.ports.ledger.as_ref(), &key).await {
        Turn::AlreadySent => report.already_alerted = true,
        Turn::InProgress if ctx.config.dry_run => report.warnings.push(
            "another delivery holds this alert's claim and has not sent it yet: a real run would wait for it".into(),
        ),
        Turn::InProgress => failures.push(InstanceFailure {
            instance_id: details.instance_id,
            step: FailedStep::AlertInProgress,
            error: AwsError::new(
                "Publish",
                "AlertInProgress",
                "another delivery claimed this alert and has not sent it yet",
            ),
        }),
        Turn::Send(claim, ledger_warning) => {
            report.warnings.extend(ledger_warning.clone());
            let details = AlertDetails { ledger_warning, ..details };
            return if ctx.config.dry_run {
                preview(ctx, details, occasion, report).await
            } else {
                send(ctx, claim, details, occasion, report, failures).await
            };
        }
    }
    None
}

/// Whether this delivery sends the alert `key`: the ledger's claim (a write), or in a dry run
/// what the ledger says now (read only).
pub async fn alert_turn<E, P, I, L: Records>(ctx: &Context<'_, E, P, I, L>, store: Option<&L>, key: &AlertKey) -> Turn {
    if ctx.config.dry_run {
        sent::preview(store, key, ctx.invocation.clock()).await
    } else {
        sent::turn(store, key, ctx.invocation).await
    }
}

/// A dry run's alert: the audit's goes in the digest it would send; a launch's says whether it
/// would alert, follow up or fold.
async fn preview<E, P, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    details: AlertDetails,
    occasion: &Occasion,
    report: &mut InstanceReport,
) -> Option<PendingAlert> {
    if occasion.is_audit() {
        return Some(PendingAlert { claim: None, details });
    }
    let would = previewed_launch_alert(ctx, &details.image_id, &mut report.warnings).await;
    report.would.push(would);
    None
}

/// The audit sends one digest for all it found; a launch alerts now, unless its image has had its
/// three alerts (and the follow-up) this hour.
async fn send<E, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    claim: Option<AlertClaim>,
    details: AlertDetails,
    occasion: &Occasion,
    report: &mut InstanceReport,
    failures: &mut Vec<InstanceFailure>,
) -> Option<PendingAlert> {
    if occasion.is_audit() {
        return Some(PendingAlert { claim, details });
    }
    let (message, taken) = match launch_slot(ctx, &details, &mut report.warnings).await {
        Slot::Folded => {
            // Unsent (the folded record, kept by `launch_slot`, waits for the digest).
            if let (Some(claim), Some(store)) = (&claim, &ctx.ports.ledger) {
                let _ = sent::release(store, claim).await;
            }
            report.alert_folded = true;
            report.warnings.push(format!(
                "more than {} launches of {} this hour: this alert is folded (the next audit's digest lists it)",
                fold::ALERTS_PER_HOUR,
                details.image_id
            ));
            return None;
        }
        Slot::FollowUp(taken) => (message::compose_follow_up(&details, occasion, taken.n), Some(taken)),
        Slot::Alert(taken) => (message::compose(&details, occasion), Some(taken)),
        Slot::Uncounted => (message::compose(&details, occasion), None),
    };
    publish(ctx, &message, claim, taken, &details, report, failures).await;
    None
}

/// Publishes a launch's alert: sent, the claim is confirmed with its message id; refused, the
/// claim and the slot are given back, so that the retry alerts at once (else the claim expires)
/// and an alert not sent does not count.
async fn publish<E, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    message: &Alert,
    claim: Option<AlertClaim>,
    taken: Option<Taken>,
    details: &AlertDetails,
    report: &mut InstanceReport,
    failures: &mut Vec<InstanceFailure>,
) {
    match ctx.ports.alerts.publish(message).await {
        Ok(message_id) => {
            if let (Some(claim), Some(store)) = (&claim, &ctx.ports.ledger) {
                if let Err(err) = sent::confirm(store, claim, &details.image_id, &message_id, ctx.invocation.now).await
                {
                    report
                        .warnings
                        .push(format!("the ledger could not record the alert as sent ({err}): it may repeat"));
                }
            }
            report.alert_message_id = Some(message_id);
        }
        Err(error) => {
            if let (Some(claim), Some(store)) = (&claim, &ctx.ports.ledger) {
                let _ = sent::release(store, claim).await;
            }
            if let (Some(taken), Some(store)) = (&taken, &ctx.ports.ledger) {
                let _ = store.release_slot(taken).await;
            }
            let instance_id = details.instance_id.clone();
            failures.insert(0, InstanceFailure { instance_id, step: FailedStep::Alert, error });
        }
    }
}

/// A dry run's [`launch_slot`]: the slots of the image this hour are counted, with this
/// invocation's own previewed alerts, and none is taken.
async fn previewed_launch_alert<E, P, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    image_id: &str,
    warnings: &mut Vec<String>,
) -> WouldDo {
    let Some(store) = ctx.ports.ledger.as_ref().filter(|_| ctx.config.fold_launch_alerts) else {
        return WouldDo::Alert;
    };
    let taken = match store.slots_taken(&ctx.ports.region, image_id, ctx.invocation.clock()).await {
        Ok(taken) => taken,
        Err(err) => {
            warnings.push(format!("the launch-alert count of {image_id} could not be read ({err}): not folded"));
            return WouldDo::Alert;
        }
    };
    let before = ctx.previewed_before(image_id);
    match LaunchAlert::nth(taken.saturating_add(before).saturating_add(1)) {
        LaunchAlert::Alert => WouldDo::Alert,
        LaunchAlert::FollowUp => WouldDo::AlertFollowUp,
        LaunchAlert::Folded => WouldDo::FoldAlert,
    }
}

/// The launch-alert slot of the image this hour. A folded alert is kept in the ledger for
/// the next digest first; no folding (`FOLD_LAUNCH_ALERTS=false`: no audit to send the
/// digest), no ledger, or a ledger that fails: alert, with a warning (a duplicate beats
/// silence).
async fn launch_slot<E, P, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    details: &AlertDetails,
    warnings: &mut Vec<String>,
) -> Slot {
    let Some(store) = ctx.ports.ledger.as_ref().filter(|_| ctx.config.fold_launch_alerts) else {
        return Slot::Uncounted;
    };
    let image_id = &details.image_id;
    let (region, now) = (&ctx.ports.region, ctx.invocation.clock());
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
