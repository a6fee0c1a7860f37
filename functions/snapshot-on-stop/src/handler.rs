//! One EventBridge delivery: the event, its flow, the report (logged as one line, with its EMF
//! metric line).

use amiguard::alert::AlertPublisher;
use amiguard::invocation::Invocation;

use crate::config::Config;
use crate::error::Error;
use crate::event::{self, Event};
use crate::flow::{ami_event, stop, Delivery};
use crate::ports::{Ec2, Ports, Records};
use crate::report::Report;
use crate::{metrics, FUNCTION};

/// Handles one EventBridge delivery. Idempotent: a redelivery finds the image in the ledger (or
/// by its deterministic name) and completes what an earlier delivery left undone; deliveries for
/// one instance take turns (the ledger's lease).
pub async fn handle<E: Ec2, L: Records, P: AlertPublisher>(
    ports: &Ports<E, L, P>,
    config: &Config,
    payload: serde_json::Value,
    invocation: &Invocation,
) -> Result<Report, Error> {
    let report = match event::parse(&payload)? {
        Event::AmiStateChange { detail, region, account } => {
            let delivery = Delivery { ports, config, invocation, account: account.as_deref() };
            ami_event::image_state_changed(&delivery, detail, region.as_deref()).await?
        }
        Event::InstanceStateChange { instance_id, state, time, account } => {
            let delivery = Delivery { ports, config, invocation, account: account.as_deref() };
            stop::instance_state_changed(&delivery, &instance_id, &state, time).await?
        }
    };
    amiguard::report::log(FUNCTION, &report);
    println!("{}", metrics::emf(&report, config.dry_run, chrono::Utc::now()));
    Ok(report)
}
