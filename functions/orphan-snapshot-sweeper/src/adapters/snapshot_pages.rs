//! One page of a (partitioned) `DescribeSnapshots` listing on `aws_sdk_ec2::Client`, answered
//! as EC2 gave it: a throttled answer comes back as `RequestLimitExceeded` instead of being
//! retried by the SDK, so that the caller paces the partitions of a region with one token bucket
//! and counts what EC2 throttled (`flow::partitioned`).

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::types::Filter;

use amiguard::AwsError;

use super::ec2::snapshot_listing;
use crate::ports::SnapshotPage;

const MAX_RESULTS: i32 = 1000;

pub(super) async fn snapshot_page(
    client: &aws_sdk_ec2::Client,
    protect_tag: &str,
    partition: Option<&str>,
    next_token: Option<String>,
) -> Result<SnapshotPage, AwsError> {
    let filter = partition.map(|value| Filter::builder().name("snapshot-id").values(value).build());
    let page = client
        .describe_snapshots()
        .owner_ids("self")
        .max_results(MAX_RESULTS)
        .set_filters(filter.map(|f| vec![f]))
        .set_next_token(next_token)
        .customize()
        .config_override(aws_sdk_ec2::config::Builder::default().retry_config(RetryConfig::disabled()))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeSnapshots", e))?;
    Ok(SnapshotPage {
        // Each page's descriptions and tags are dropped here, once read.
        snapshots: page.snapshots().iter().filter_map(snapshot_listing).map(|l| l.read(protect_tag)).collect(),
        next_token: page.next_token().filter(|t| !t.is_empty()).map(str::to_string),
    })
}
