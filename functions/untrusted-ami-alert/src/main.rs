//! The Lambda entry point: configuration and clients once per container, then one `handle` per
//! event.

use amiguard::alert::sns::SnsAlerts;
use amiguard::config::ProcessEnv;
use amiguard::findings::securityhub::SecurityHubFindings;
use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use lambda_runtime::{service_fn, LambdaEvent};
use untrusted_ami_alert::{handle, Config, Ec2Client, Ports, StsIdentity, FUNCTION};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = amiguard::config::reported(FUNCTION, Config::from_env(&ProcessEnv))?;
    let table = amiguard::config::reported(FUNCTION, amiguard::ledger::table_name(&ProcessEnv))?;
    if table.is_none() {
        tracing::warn!(function = FUNCTION, "LEDGER_TABLE is not set: every event alerts again");
    }
    let sdk = amiguard::sdk::load().await;
    let region =
        sdk.region().map(ToString::to_string).ok_or("AWS_REGION is not set: the region to watch is unknown")?;
    let ec2 = Ec2Client::new(aws_sdk_ec2::Client::new(&sdk));
    // TRUST_POLICY_SOURCE=account: the account's Allowed AMIs settings, read once per container.
    // Settings that cannot be read or used leave the default policy judging, said in every
    // report: an unread policy never means "trust all", nor silence.
    let config = if config.policy_from_account {
        let read = ec2.allowed_images_settings().await.map_err(|e| e.to_string());
        match read.and_then(|(state, criteria)| {
            config.clone().with_account_policy(&state, criteria).map_err(|e| e.to_string())
        }) {
            Ok(config) => config,
            Err(why) => {
                tracing::error!(function = FUNCTION, "{why}: judging by the default policy");
                config.with_default_policy_because(&why)
            }
        }
    } else {
        config
    };
    tracing::info!(function = FUNCTION, policy = %config.policy, "trust policy");
    for warning in config.policy.warnings() {
        tracing::warn!(function = FUNCTION, "{warning}");
    }
    let ports = Ports {
        ec2,
        alerts: SnsAlerts::new(aws_sdk_sns::Client::new(&sdk), config.alert_topic_arn.clone()),
        identity: StsIdentity::from_conf(&sdk),
        ledger: table.map(|table| DynamoLedger::from_conf(&sdk, table)),
        region,
        findings: config
            .security_hub_findings
            .then(|| Box::new(SecurityHubFindings::from_conf(&sdk)) as Box<dyn amiguard::findings::FindingsPublisher>),
    };
    let (config, ports) = (&config, &ports);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        handle(config, ports, &event.payload, &Invocation::from_context(&event.context)).await
    }))
    .await
}
