//! One invocation: the event, its flow, and the report, logged (and for a sweep, its metric lines)
//! before anything else is sent.

use amiguard::invocation::Invocation;
use chrono::Utc;

use crate::config::Config;
use crate::error::Error;
use crate::event::{self, Event};
use crate::flow::run::Run;
use crate::flow::{ami_event, sweep};
use crate::metrics;
use crate::ports::{EbsRegions, Ec2, Ports, Records, SummaryPublisher};
use crate::report::{AmiEventReport, Response};
use crate::FUNCTION;

/// One invocation: a sweep (every region in order; publish and log the report), or the record
/// of an AMI event. Without the EBS direct APIs: savings are bounds ([`handle_with_ebs`]).
pub async fn handle<E, P, L>(
    config: &Config,
    ports: &Ports<'_, E, P, L>,
    payload: &serde_json::Value,
    invocation: &Invocation,
) -> Result<Response, Error>
where
    E: Ec2,
    P: SummaryPublisher,
    L: Records,
{
    handle_with_ebs(config, ports, None, payload, invocation).await
}

/// [`handle`], with the EBS direct APIs of each region for exact savings (`EXACT_SAVINGS`).
pub async fn handle_with_ebs<E, P, L>(
    config: &Config,
    ports: &Ports<'_, E, P, L>,
    ebs: Option<&EbsRegions>,
    payload: &serde_json::Value,
    invocation: &Invocation,
) -> Result<Response, Error>
where
    E: Ec2,
    P: SummaryPublisher,
    L: Records,
{
    let (account_id, detail) = match event::parse(payload)? {
        Event::Sweep { account_id, detail } => (account_id, detail),
        Event::AmiStateChange { account_id, region, image_id, state, time } => {
            let event = AmiEventReport { outcome: "skipped", image_id, region, state, time, reason: None };
            let (ledger, read_only) = (ports.ledger, config.ledger_read_only);
            let report = ami_event::record(ports.regions, ledger, read_only, &account_id, event, invocation).await?;
            amiguard::report::log(FUNCTION, &report);
            return Ok(Response::AmiEvent(report));
        }
    };
    let (mut run, warnings) = Run::start(config, ports, &account_id, &detail, invocation).await;
    run.ebs = ebs;
    let (mut report, unshown) = sweep::sweep(&run, ports.regions, warnings).await;
    // The report is in the log before anything else is sent: a run cut short by its timeout while
    // writing or publishing still leaves its whole record. The warnings it has no room for are
    // logged one a line, as `full_lists` says.
    for warning in &unshown {
        tracing::warn!(function = FUNCTION, run_id = %report.run_id, warning = %warning, "warning");
    }
    amiguard::report::log(FUNCTION, &report);
    for line in metrics::emf_lines(&report, Utc::now()) {
        println!("{line}");
    }
    let delivery = sweep::deliver(&run, ports.publisher, &report).await;
    if delivery.run_recorded.is_some() || delivery.summary_published.is_some() {
        amiguard::report::log(FUNCTION, &delivery);
    }
    report.summary_published = delivery.summary_published;
    report.totals.warnings += delivery.warnings.len() as u64;
    report.warnings.extend(delivery.warnings);
    Ok(Response::Sweep(Box::new(report)))
}
