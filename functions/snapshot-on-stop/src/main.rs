//! The Lambda entry point: configuration and clients once per container, then the runtime loop.

use amiguard::config::ProcessEnv;
use amiguard::snapshot_on_stop::ec2::Ec2Client;
use lambda_runtime::{service_fn, LambdaEvent};
use snapshot_on_stop::{handle, Config, FUNCTION};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env(&ProcessEnv)?;
    let ec2 = Ec2Client::new(aws_sdk_ec2::Client::new(&amiguard::sdk::load().await));
    let (ec2, config) = (&ec2, &config);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let report = handle(ec2, config, event.payload).await?;
        amiguard::report::log(FUNCTION, &report);
        Ok::<_, snapshot_on_stop::Error>(report)
    }))
    .await
}
