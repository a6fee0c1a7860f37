//! The Lambda entry point: configuration and clients once per container, then the runtime loop.

use amiguard::alert::sns::SnsAlerts;
use amiguard::config::ProcessEnv;
use amiguard::findings::securityhub::SecurityHubFindings;
use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use lambda_runtime::{service_fn, LambdaEvent};
use snapshot_on_stop::{handle, Config, Ec2Client, Ports, FUNCTION};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = amiguard::config::reported(FUNCTION, Config::from_env(&ProcessEnv))?;
    let table = amiguard::config::reported(FUNCTION, amiguard::ledger::table_name(&ProcessEnv))?;
    let sdk = amiguard::sdk::load().await;
    let region = sdk.region().map(ToString::to_string).ok_or("AWS_REGION is not set")?;
    if table.is_none() {
        lambda_runtime::tracing::warn!(
            function = FUNCTION,
            "LEDGER_TABLE is not set: images are made, none is ever retired"
        );
    }
    let ports = Ports {
        ec2: Ec2Client::new(aws_sdk_ec2::Client::new(&sdk)),
        ledger: table.map(|table| DynamoLedger::from_conf(&sdk, table)),
        alerts: config.alert_topic_arn.as_ref().map(|arn| SnsAlerts::new(aws_sdk_sns::Client::new(&sdk), arn)),
        region,
        findings: config
            .security_hub_findings
            .then(|| Box::new(SecurityHubFindings::from_conf(&sdk)) as Box<dyn amiguard::findings::FindingsPublisher>),
    };
    let (ports, config) = (&ports, &config);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        handle(ports, config, event.payload, &Invocation::from_context(&event.context)).await
    }))
    .await
}
