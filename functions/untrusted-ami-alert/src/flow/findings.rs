//! The Security Hub findings of a delivery (`SECURITY_HUB_FINDINGS`): each untrusted instance
//! guarded is imported (active), recorded in the ledger first; the audit then archives the
//! recorded findings that EC2 verifies are over (the instance terminated or gone, its image judged
//! trusted). Never on a dry run; never at the cost of an alert (they are sent before), and what
//! could not be imported is a warning, never a failed invocation.

use std::collections::{HashMap, HashSet};

use amiguard::findings::{Finding, FindingsPublisher};

use super::context::Context;
use super::guard::Guarded;
use crate::core::enforce::{InstanceState, LaunchedInstance};
use crate::core::finding::{self, OpenFinding, Resolution};
use crate::ports::{Ec2, Records};
use crate::report::Outcome;

/// EC2 keeps listing a terminated instance for about an hour: an instance it does not list is
/// gone only when its finding is older than that (else it may be EC2 lagging after a launch).
const LISTED_AFTER_LAUNCH: chrono::Duration = chrono::Duration::hours(1);

/// The publisher, unless this delivery imports nothing (a dry run, or findings off).
fn publisher<'c, E, P, I, L>(ctx: &'c Context<'_, E, P, I, L>) -> Option<&'c dyn FindingsPublisher> {
    ctx.ports.findings.as_deref().filter(|_| !ctx.config.dry_run)
}

/// The findings recorded and not archived yet (the audit's: it reads them once, to date the
/// findings it imports again and to archive those that are over); none when nothing is imported.
pub async fn open_findings<E, P, I, L: Records>(ctx: &Context<'_, E, P, I, L>) -> Result<Vec<OpenFinding>, String> {
    let (Some(_), Some(store)) = (publisher(ctx), ctx.ports.ledger.as_ref()) else { return Ok(Vec::new()) };
    store
        .open_findings(&ctx.ports.region)
        .await
        .map_err(|err| format!("the recorded Security Hub findings could not be read ({err}): none archived"))
}

/// Imports the findings of the untrusted instances in `guarded`, recording in the ledger those
/// not among `known` (the open findings the caller read). A warning about one finding goes to its
/// instance's report; the others (Security Hub not enabled, a failed call) are answered, for the
/// caller to say once per report.
pub async fn import_untrusted<E, P, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    guarded: &mut [Guarded],
    known: &[OpenFinding],
) -> Vec<String> {
    let Some(publisher) = publisher(ctx) else { return Vec::new() };
    let now = ctx.invocation.clock();
    let mut findings: Vec<(usize, Finding)> = Vec::new();
    for (n, g) in guarded.iter_mut().enumerate() {
        let Some(details) = &g.untrusted else { continue };
        let recorded = known.iter().find(|k| k.instance_id == details.instance_id && k.image_id == details.image_id);
        let first_seen = match (recorded, &ctx.ports.ledger) {
            (Some(open), _) => open.first_seen,
            (None, None) => now,
            (None, Some(store)) => {
                let recorded = store
                    .record_finding(&ctx.ports.region, &details.instance_id, &details.image_id, details.severity, now)
                    .await;
                recorded.unwrap_or_else(|err| {
                    g.report.warnings.push(format!(
                        "the ledger could not record the Security Hub finding ({err}): no audit will archive it"
                    ));
                    now
                })
            }
        };
        findings.push((n, finding::untrusted(details, first_seen, now)));
    }
    let sent: Vec<Finding> = findings.iter().map(|(_, f)| f.clone()).collect();
    let mut general = Vec::new();
    for warning in publisher.import(&sent).await {
        match findings.iter().find(|(_, f)| warning.contains(&f.id)) {
            Some((n, _)) => guarded[*n].report.warnings.push(warning),
            None => general.push(warning),
        }
    }
    general
}

/// The audit: archives each recorded finding EC2 verifies is over, and forgets it once Security
/// Hub took the archived record. `open` is what [`open_findings`] read, `listed` the audit's whole listing of instances not
/// terminated, `guarded` what it judged of them. Nothing unverified archives: an instance not
/// listed is asked of EC2 again, and a failed call keeps every finding active.
pub async fn archive_resolved<E: Ec2, P, I, L: Records>(
    ctx: &Context<'_, E, P, I, L>,
    listed: &[LaunchedInstance],
    guarded: &[Guarded],
    open: &[OpenFinding],
) -> Vec<String> {
    let (Some(publisher), Some(store)) = (publisher(ctx), ctx.ports.ledger.as_ref()) else { return Vec::new() };
    let region = &ctx.ports.region;
    let judged: HashMap<&str, (&Outcome, Option<&str>)> = guarded
        .iter()
        .filter_map(|g| Some((g.report.instance_id.as_deref()?, (&g.report.outcome, g.report.image_id.as_deref()))))
        .collect();
    let live: HashSet<&str> = listed.iter().map(|i| i.instance_id.as_str()).collect();
    let mut resolved: Vec<(&OpenFinding, Resolution)> = Vec::new();
    let mut unlisted: Vec<&OpenFinding> = Vec::new();
    for finding in open {
        match judged.get(finding.instance_id.as_str()) {
            // Trusted by the policy the account set, not by the fallback judging while that
            // policy could not be read: a fallback's "trusted" archives nothing.
            Some((Outcome::Trusted, Some(image))) if *image == finding.image_id && ctx.config.policy_note.is_none() => {
                resolved.push((finding, Resolution::ImageTrusted))
            }
            Some(_) => {}
            None if live.contains(finding.instance_id.as_str()) => {}
            None => unlisted.push(finding),
        }
    }
    let mut warnings = Vec::new();
    if !unlisted.is_empty() {
        let ids: Vec<String> = unlisted.iter().map(|f| f.instance_id.clone()).collect();
        match ctx.ports.ec2.instances(&ids).await {
            Ok(found) => resolved.extend(unlisted.into_iter().filter_map(|f| gone(ctx, f, &found).map(|r| (f, r)))),
            Err(err) => warnings.push(format!(
                "the instances of {} Security Hub finding(s) could not be described ({err}): kept active",
                ids.len()
            )),
        }
    }
    if resolved.is_empty() {
        return warnings;
    }
    let now = ctx.invocation.clock();
    let archived: Vec<Finding> = resolved.iter().map(|(f, why)| finding::resolved(region, f, why, now)).collect();
    let refused = publisher.import(&archived).await;
    if refused.is_empty() {
        for (open, _) in &resolved {
            if let Err(err) = store.forget_finding(region, open).await {
                warnings.push(format!("the ledger could not forget an archived finding ({err}): archived again"));
            }
        }
    }
    // Not forgotten when anything was refused: the next audit archives them again.
    warnings.extend(refused);
    warnings
}

/// Why the finding's instance is over, as EC2 says: listed terminated (or shutting down), or not
/// listed at all once EC2 would have stopped listing a terminated one.
fn gone<E, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    finding: &OpenFinding,
    found: &[LaunchedInstance],
) -> Option<Resolution> {
    match found.iter().find(|i| i.instance_id == finding.instance_id) {
        Some(i) if i.state.is_gone() || i.state == InstanceState::ShuttingDown => Some(Resolution::InstanceTerminated),
        Some(_) => None,
        None if ctx.invocation.clock() - finding.first_seen > LISTED_AFTER_LAUNCH => Some(Resolution::InstanceNotFound),
        None => None,
    }
}
