//! The Lambda binary: configuration, one EC2 client per region, the SNS client and the ledger,
//! built once.

use amiguard::config::ProcessEnv;
use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use aws_config::Region;
use lambda_runtime::{service_fn, LambdaEvent};
use orphan_snapshot_sweeper::adapters::ebs::EbsClient;
use orphan_snapshot_sweeper::ports::Ebs;
use orphan_snapshot_sweeper::{handle_with_ebs, Config, Ports, FUNCTION};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = amiguard::config::reported(FUNCTION, Config::from_env(&ProcessEnv))?;
    let table = amiguard::config::reported(FUNCTION, amiguard::ledger::table_name(&ProcessEnv))?;
    if table.is_none() {
        tracing::warn!("LEDGER_TABLE is not set: dry runs have no memory, and nothing is ever deleted");
    }
    let sdk_config = amiguard::sdk::load().await;
    let regions: Vec<(String, aws_sdk_ec2::Client)> = config
        .regions
        .iter()
        .map(|region| {
            let ec2 = aws_sdk_ec2::config::Builder::from(&sdk_config).region(Region::new(region.clone())).build();
            (region.clone(), aws_sdk_ec2::Client::from_conf(ec2))
        })
        .collect();
    // SNS accepts a publish only in the topic's own region.
    let mut sns = aws_sdk_sns::config::Builder::from(&sdk_config);
    if let Some(region) = config.report_topic_region() {
        sns = sns.region(Region::new(region.to_string()));
    }
    let sns = aws_sdk_sns::Client::from_conf(sns.build());
    // The EBS direct APIs of each region, for exact savings (none asked with EXACT_SAVINGS=false).
    let ebs: Vec<(String, Box<dyn Ebs>)> = config
        .regions
        .iter()
        .map(|region| {
            let client: Box<dyn Ebs> = Box::new(EbsClient::from_sdk_config(&sdk_config, region));
            (region.clone(), client)
        })
        .collect();
    let ledger = table.map(|table| DynamoLedger::from_conf(&sdk_config, table));
    let ports = Ports { regions: &regions, publisher: &sns, ledger: ledger.as_ref() };

    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let invocation = Invocation::from_context(&event.context);
        let (config, ports, ebs) = (&config, &ports, &ebs);
        let ebs = config.exact_savings.then_some(ebs.as_slice());
        async move { handle_with_ebs(config, ports, ebs, &event.payload, &invocation).await }
    }))
    .await
}
