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
use crate::ports::{Ec2, Ports, Records, SummaryPublisher};
use crate::report::Response;
use crate::FUNCTION;

/// One invocation: a sweep (every region in order; publish and log the report), or the record
/// of an AMI event.
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
    let (account_id, detail) = match event::parse(payload)? {
        Event::Sweep { account_id, detail } => (account_id, detail),
        Event::AmiStateChange { region, image_id, state, time, .. } => {
            let report =
                ami_event::record(ports.ledger, config.ledger_read_only, region, image_id, state, time).await?;
            amiguard::report::log(FUNCTION, &report);
            return Ok(Response::AmiEvent(report));
        }
    };
    let (run, warnings) = Run::start(config, ports, &account_id, &detail, invocation).await;
    let mut report = sweep::sweep(&run, ports.regions, warnings).await;
    // The report is in the log before anything else is sent: a run cut short by its timeout while
    // writing or publishing still leaves its whole record.
    amiguard::report::log(FUNCTION, &report);
    for line in metrics::emf_lines(&report, Utc::now()) {
        println!("{line}");
    }
    let delivery = sweep::deliver(&run, ports.publisher, &report).await;
    if delivery.run_recorded.is_some() || delivery.summary_published.is_some() {
        amiguard::report::log(FUNCTION, &delivery);
    }
    report.summary_published = delivery.summary_published;
    report.warnings.extend(delivery.warnings);
    Ok(Response::Sweep(Box::new(report)))
}
