//! The scheduled audit: every instance that is not terminated, judged; it alerts (one digest) and
//! tags, never stops.

use amiguard::alert::AlertPublisher;

use super::context::Context;
use super::digest::{folded_for_digest, send_digest};
use super::findings;
use super::guard::{guard, Guarded};
use super::Failure;
use crate::core::enforce::Occasion;
use crate::error::Error;
use crate::ports::{Ec2, Records};
use crate::report::{AuditCounts, AuditFinding, AuditReport, Outcome, Report, WouldDo};

pub async fn audit<E: Ec2, P: AlertPublisher, I, L: Records>(ctx: &Context<'_, E, P, I, L>) -> Result<Report, Failure> {
    let instances = ctx.ports.ec2.live_instances().await?;
    let mut guarded = guard(ctx, &instances, &Occasion::Audit).await?;
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let folded = folded_for_digest(ctx, &guarded, &mut warnings).await;
    // Folded launch alerts of instances gone since, sent by this digest: findings too.
    let mut untrusted = send_digest(ctx, &mut guarded, folded, &mut failures, &mut warnings).await;
    // After the digest: a finding never costs an alert.
    let open = findings::open_findings(ctx).await;
    warnings.extend(findings::import_untrusted(ctx, &mut guarded, open.as_deref().unwrap_or_default()).await);
    match open {
        Ok(open) => warnings.extend(findings::archive_resolved(ctx, &instances, &guarded, &open).await),
        Err(warning) => warnings.push(warning),
    }
    let mut alerts_sent = untrusted.iter().filter(|f| f.alert_message_id.is_some()).count();
    for Guarded { report, failures: f, .. } in guarded {
        failures.extend(f);
        warnings.extend(report.warnings.iter().cloned());
        alerts_sent += usize::from(report.alert_message_id.is_some());
        if report.outcome == Outcome::Untrusted {
            untrusted.push(AuditFinding::judged(report));
        }
    }
    let alerts_would_send =
        ctx.config.dry_run.then(|| untrusted.iter().filter(|f| f.would.contains(&WouldDo::AlertInDigest)).count());
    let report = Report::Audit(AuditReport {
        outcome: Outcome::Audit,
        dry_run: ctx.config.dry_run,
        audited: instances.len(),
        untrusted,
        alerts_sent,
        alerts_would_send,
        warnings,
        // Taken, with where the rest is, when the handler cuts the lists to fit one log event.
        counts: AuditCounts::default(),
        full_lists: None,
    });
    if !failures.is_empty() {
        return Err(Failure { error: Error::NotGuarded(failures), done: Some(Box::new(report)) });
    }
    Ok(report)
}
