//! The steps of a delivery, over `core` and the ports only. An event is judged as a launch
//! (`launch`: the instances it names) or an audit (`audit`: every instance not terminated, with
//! its `digest`); each instance is guarded (`guard`): its facts gathered (`facts`,
//! `provenance`), judged, enforced (`enforcement`) and alerted once (`alert`), then made a Security Hub finding
//! (`findings`).

mod alert;
mod audit;
mod context;
mod digest;
mod enforcement;
mod facts;
mod findings;
mod guard;
mod launch;
mod provenance;

use amiguard::alert::AlertPublisher;
use amiguard::error::AwsError;
use amiguard::invocation::Invocation;

use crate::config::Config;
use crate::core::enforce::Occasion;
use crate::error::Error;
use crate::event::{Event, Launched, Origin};
use crate::ports::{CallerIdentity, Ec2, Ports, Records};
use crate::report::{InstanceReport, Report};
use context::Context;

/// A delivery that failed, with the report of what it did before (logged all the same: alerts it
/// sent count).
pub struct Failure {
    pub error: Error,
    pub done: Option<Box<Report>>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self { error, done: None }
    }
}

impl From<AwsError> for Failure {
    fn from(error: AwsError) -> Self {
        Error::from(error).into()
    }
}

/// Answers one event: skipped with the reason, or judged as a launch or an audit.
pub async fn deliver<E, P, I, L>(
    config: &Config,
    ports: &Ports<E, P, I, L>,
    event: Event,
    invocation: &Invocation,
) -> Result<Report, Failure>
where
    E: Ec2,
    P: AlertPublisher,
    I: CallerIdentity,
    L: Records,
{
    let account = own_account(event.origin(), ports).await?;
    let skipped = |instance_id: Option<String>, reason: String| {
        Ok(Report::Instance(InstanceReport::skipped(config.dry_run, instance_id, reason)))
    };
    match event {
        Event::StateChange { instance_id, state, .. } if state != "pending" && state != "running" => skipped(
            Some(instance_id),
            format!("instance state {state}: only pending and running (launches) are judged"),
        ),
        Event::RunInstancesFailed { error_code, .. } if error_code.ends_with("DryRunOperation") => {
            skipped(None, format!("a DryRun RunInstances call ({error_code}): no instance was launched"))
        }
        Event::RunInstancesFailed { error_code, .. } => {
            skipped(None, format!("RunInstances failed ({error_code}): no instance was launched"))
        }
        Event::RunInstancesUnrecorded { .. } => skipped(
            None,
            "CloudTrail recorded no response for this RunInstances (responseElements null): the instances' \
             state-change events judge them"
                .into(),
        ),
        Event::OtherApiCall { event_name, .. } => {
            skipped(None, format!("CloudTrail event for {event_name}: only RunInstances is judged"))
        }
        Event::StateChange { instance_id, state, origin } => {
            let ctx = Context::new(config, ports, &account, invocation);
            let launched = vec![Launched { instance_id, image_id: None }];
            let mut reports = launch::launch(&ctx, launched, Occasion::StateChange(state), origin.time).await?;
            Ok(reports.pop().map(Report::Instance).unwrap_or(Report::launch(vec![])))
        }
        Event::RunInstances { instances, origin } => {
            let ctx = Context::new(config, ports, &account, invocation);
            let instances = launch::launch(&ctx, instances, Occasion::RunInstances, origin.time).await?;
            Ok(Report::launch(instances))
        }
        Event::Audit { .. } => audit::audit(&Context::new(config, ports, &account, invocation)).await,
    }
}

/// `self`: the function's own account, as STS says (asked once per container), never the
/// event's: anyone allowed to invoke the function can write an event. An event naming another
/// account is refused before anything is judged: taken at its word, every own image would be
/// untrusted and, with `ENFORCEMENT=stop`, production instances stopped.
async fn own_account<E, P, I: CallerIdentity, L>(origin: &Origin, ports: &Ports<E, P, I, L>) -> Result<String, Error> {
    let own = ports.identity.account_id().await?;
    match origin.accounts().find(|named| *named != own) {
        Some(named) => Err(Error::AnotherAccount { named: named.to_string(), own }),
        None => Ok(own),
    }
}
