//! The audit's digest: one message (in parts when large) for every instance the audit claimed an
//! alert for, and for the folded launch alerts the ledger keeps. Each part sent confirms its
//! claims; a part SNS refuses gives them back. A folded record is forgotten only once known sent.

use amiguard::alert::once::{self as sent, AlertKey, Turn};
use amiguard::alert::AlertPublisher;
use amiguard::error::AwsError;

use super::alert::{alert_turn, PendingAlert};
use super::context::Context;
use super::guard::Guarded;
use crate::core::message::{self, AlertDetails};
use crate::error::{FailedStep, InstanceFailure};
use crate::ports::{Folded, Records};
use crate::report::{AuditFinding, WouldDo};

/// What becomes of a folded launch alert at an audit.
pub enum FoldedFate {
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

/// The folded launch alerts the ledger keeps, for the digest. One whose instance this audit
/// claimed goes out with it; one the ledger says was sent (a claim answered sent, or the
/// audit found it alerted) is forgotten; any other (gone since, judged otherwise now, or
/// claimed by nobody yet) is claimed from its record and sent from it: a folded alert is
/// forgotten only once it is known to be sent.
pub async fn folded_for_digest<E, P, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    guarded: &[Guarded],
    warnings: &mut Vec<String>,
) -> Vec<(FoldedFate, Folded)> {
    let Some(store) = &ctx.ports.ledger else { return Vec::new() };
    let (records, unreadable) = match store.folded(&ctx.ports.region).await {
        Ok(read) => read,
        Err(err) => {
            warnings.push(format!("the folded launch alerts could not be read ({err}): the next audit sends them"));
            return Vec::new();
        }
    };
    if unreadable > 0 {
        warnings.push(format!("{unreadable} folded launch alert record(s) could not be read: they stay in the ledger"));
    }
    let mut out = Vec::new();
    for record in records {
        let (instance, image) = (record.details.instance_id.as_str(), record.details.image_id.as_str());
        let judged = guarded
            .iter()
            .find(|g| g.report.instance_id.as_deref() == Some(instance) && g.report.image_id.as_deref() == Some(image));
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
        let key = AlertKey::untrusted(&ctx.ports.region, instance, image);
        match alert_turn(ctx, Some(store), &key).await {
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
/// alerts (nothing claimed: nothing sent), in parts (`core::message::digest_parts`). Each part
/// sent confirms its claims with its message id; a part SNS refuses gives its claims back and
/// fails the invocation, so that the retry sends it (the parts sent stay sent). Folded records
/// are forgotten once known sent. Answers the folded alerts of instances this audit did not judge
/// that it sent (they are findings too).
pub async fn send_digest<E, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
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
    if ctx.config.dry_run {
        return preview_digest(guarded, pending);
    }
    let mut sent_ids: Vec<(String, String)> = Vec::new();
    let from_records = publish_parts(ctx, guarded, &pending, &mut sent_ids, failures, warnings).await;
    forget_sent(ctx, &records, &sent_ids, warnings).await;
    from_records
}

/// A dry run's digest: nothing published, confirmed or forgotten; each alert is one a real
/// digest would send (a folded one of an instance gone since is a finding of its own).
fn preview_digest(guarded: &mut [Guarded], pending: Vec<DigestEntry>) -> Vec<AuditFinding> {
    let mut from_records = Vec::new();
    for (index, PendingAlert { details, .. }) in pending {
        match index {
            Some(i) => guarded[i].report.would.push(WouldDo::AlertInDigest),
            None => from_records.push(AuditFinding::folded(details, None, vec![WouldDo::AlertInDigest])),
        }
    }
    from_records
}

/// Sends the digest's parts, each numbered when there are several, and settles each alert's
/// claim; `sent_ids` gets the (instance, image) of every alert sent.
async fn publish_parts<E, P: AlertPublisher, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    guarded: &mut [Guarded],
    pending: &[DigestEntry],
    sent_ids: &mut Vec<(String, String)>,
    failures: &mut Vec<InstanceFailure>,
    warnings: &mut Vec<String>,
) -> Vec<AuditFinding> {
    let mut from_records = Vec::new();
    let all: Vec<&AlertDetails> = pending.iter().map(|(_, p)| &p.details).collect();
    let parts = message::digest_parts(&all);
    let count = parts.len();
    for (n, range) in parts.into_iter().enumerate() {
        let part = &pending[range];
        let findings: Vec<AlertDetails> = part.iter().map(|(_, p)| p.details.clone()).collect();
        let numbered = (count > 1).then_some((n + 1, count));
        let digest = message::compose_digest(&findings, ctx.account, &ctx.ports.region, numbered);
        let published = ctx.ports.alerts.publish(&digest).await;
        for (index, alert) in part {
            settle_claim(ctx, &published, alert, warnings).await;
            match &published {
                Ok(message_id) => {
                    let details = &alert.details;
                    sent_ids.push((details.instance_id.clone(), details.image_id.clone()));
                    match index {
                        Some(i) => guarded[*i].report.alert_message_id = Some(message_id.clone()),
                        None => {
                            from_records.push(AuditFinding::folded(details.clone(), Some(message_id.clone()), vec![]))
                        }
                    }
                }
                Err(error) => failures.push(InstanceFailure {
                    instance_id: alert.details.instance_id.clone(),
                    step: FailedStep::Alert,
                    error: error.clone(),
                }),
            }
        }
    }
    from_records
}

/// Confirms an alert's claim with the digest part's message id, or gives it back when SNS
/// refused the part (a claim not confirmed may repeat: said).
async fn settle_claim<E, P, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    published: &Result<String, AwsError>,
    PendingAlert { claim, details }: &PendingAlert,
    warnings: &mut Vec<String>,
) {
    match (published, claim, &ctx.ports.ledger) {
        (Ok(message_id), Some(claim), Some(store)) => {
            if let Err(err) = sent::confirm(store, claim, &details.image_id, message_id, ctx.invocation.clock()).await {
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
}

/// Forgets the folded records known sent: by this digest, or before.
async fn forget_sent<E, P, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    records: &[(Folded, bool)],
    sent_ids: &[(String, String)],
    warnings: &mut Vec<String>,
) {
    let Some(store) = &ctx.ports.ledger else { return };
    for (record, sent_before) in records {
        let ids = (record.details.instance_id.clone(), record.details.image_id.clone());
        if *sent_before || sent_ids.contains(&ids) {
            if let Err(err) = store.forget_folded(&ctx.ports.region, record).await {
                warnings.push(format!("a folded alert's record stays ({err}): the next digest may list it again"));
            }
        }
    }
}
