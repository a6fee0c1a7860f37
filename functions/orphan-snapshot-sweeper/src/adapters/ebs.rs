//! The EBS direct APIs behind [`Ebs`]: `ListSnapshotBlocks` and `ListChangedBlocks`, every page
//! (`MaxResults` 10,000, the repeated-token check), each page retried with backoff on the EBS
//! direct APIs' own throttles (`RequestThrottledException`, `ConcurrentLimitExceededException`),
//! which the SDK's retry policy does not all know. Errors keep the AWS code.

use std::time::Duration;

use crate::core::savings::{BlockSet, Blocks};
use crate::ports::Ebs;
use amiguard::paging::PageTokens;
use amiguard::AwsError;
use futures::future::BoxFuture;

/// The largest page both list calls answer.
pub const MAX_RESULTS: i32 = 10_000;
/// The throttles of the EBS direct APIs: retried, with backoff.
pub const THROTTLES: [&str; 2] = ["RequestThrottledException", "ConcurrentLimitExceededException"];
/// Also retried: the EBS direct APIs' own server error (the SDK's retries are off for them).
pub const TRANSIENT: [&str; 1] = ["InternalServerException"];
/// Tries per page (the first and the retries) before a throttle is the answer.
pub const ATTEMPTS: u32 = 6;

/// The EBS direct APIs of one region.
#[derive(Debug, Clone)]
pub struct EbsClient {
    client: aws_sdk_ebs::Client,
    /// The first retry's wait; each next one waits twice as long.
    backoff: Duration,
}

impl EbsClient {
    pub fn new(client: aws_sdk_ebs::Client) -> Self {
        Self { client, backoff: Duration::from_millis(500) }
    }

    /// The client of `region` from the function's SDK configuration, with the SDK's own retries
    /// off: this adapter retries each page itself ([`ATTEMPTS`] tries in all, not multiplied by
    /// the SDK's).
    pub fn from_sdk_config(sdk_config: &aws_config::SdkConfig, region: &str) -> Self {
        let conf = aws_sdk_ebs::config::Builder::from(sdk_config)
            .region(aws_sdk_ebs::config::Region::new(region.to_string()))
            .retry_config(aws_sdk_ebs::config::retry::RetryConfig::disabled())
            .build();
        Self::new(aws_sdk_ebs::Client::from_conf(conf))
    }

    /// The same client, waiting `backoff` before its first retry (tests wait less).
    pub fn with_backoff(self, backoff: Duration) -> Self {
        Self { backoff, ..self }
    }

    /// `call` until it answers something else than a throttle, [`ATTEMPTS`] times at most.
    async fn retried<T, F, Fut>(&self, mut call: F) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(err) if attempt < ATTEMPTS && THROTTLES.iter().chain(&TRANSIENT).any(|code| err.has_code(code)) => {
                    tracing::debug!(error = %err, attempt, "EBS direct API throttled: retrying");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn list_snapshot_blocks(&self, snapshot_id: &str) -> Result<Blocks, AwsError> {
        const OPERATION: &str = "ListSnapshotBlocks";
        let (mut blocks, mut tokens, mut next) = (Blocks::default(), PageTokens::new(OPERATION), None::<String>);
        loop {
            let page = self
                .retried(|| async {
                    self.client
                        .list_snapshot_blocks()
                        .snapshot_id(snapshot_id)
                        .max_results(MAX_RESULTS)
                        .set_next_token(next.clone())
                        .send()
                        .await
                        .map_err(|e| AwsError::from_sdk(OPERATION, e))
                })
                .await?;
            if let Some(size) = page.block_size().and_then(|s| u64::try_from(s).ok()).filter(|s| *s > 0) {
                blocks.block_size = size;
            }
            let limit = block_limit(page.volume_size(), page.block_size());
            read_indexes(OPERATION, &mut blocks.indexes, page.blocks().iter().map(|b| b.block_index()), limit)?;
            next = page.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            tokens.check(next.as_deref())?;
            if next.is_none() {
                break;
            }
        }
        if blocks.block_size == 0 && !blocks.indexes.is_empty() {
            return Err(AwsError::new(OPERATION, "NoBlockSize", format!("{snapshot_id}: no BlockSize was answered")));
        }
        Ok(blocks)
    }

    async fn list_changed_blocks(&self, first: &str, second: &str) -> Result<BlockSet, AwsError> {
        const OPERATION: &str = "ListChangedBlocks";
        let (mut changed, mut tokens, mut next) = (BlockSet::default(), PageTokens::new(OPERATION), None::<String>);
        loop {
            let page = self
                .retried(|| async {
                    self.client
                        .list_changed_blocks()
                        .first_snapshot_id(first)
                        .second_snapshot_id(second)
                        .max_results(MAX_RESULTS)
                        .set_next_token(next.clone())
                        .send()
                        .await
                        .map_err(|e| AwsError::from_sdk(OPERATION, e))
                })
                .await?;
            let limit = block_limit(page.volume_size(), page.block_size());
            read_indexes(OPERATION, &mut changed, page.changed_blocks().iter().map(|b| b.block_index()), limit)?;
            next = page.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            tokens.check(next.as_deref())?;
            if next.is_none() {
                break;
            }
        }
        Ok(changed)
    }
}

/// The most blocks any EBS volume has: 64 TiB in blocks of 512 KiB.
pub const MAX_BLOCKS: u64 = (64 << 40) / (512 << 10);

/// How many blocks a volume of `volume_gib` GiB has in blocks of `block_size` bytes, as a page
/// says them ([`MAX_BLOCKS`] when it does not).
fn block_limit(volume_gib: Option<i64>, block_size: Option<i32>) -> u64 {
    match (volume_gib.and_then(|v| u64::try_from(v).ok()), block_size.and_then(|b| u64::try_from(b).ok())) {
        (Some(gib), Some(size)) if size > 0 => (gib << 30).div_ceil(size).min(MAX_BLOCKS),
        _ => MAX_BLOCKS,
    }
}

/// Adds a page's block indexes to `set`; an index that is not one of the volume's blocks fails
/// the listing (a set of one bit per block never grows past the volume), and so does a block
/// without an index (dropped, a changed block would read as unchanged).
fn read_indexes(
    operation: &'static str,
    set: &mut BlockSet,
    indexes: impl Iterator<Item = Option<i32>>,
    limit: u64,
) -> Result<(), AwsError> {
    for index in indexes {
        let Some(index) = index else {
            return Err(AwsError::new(operation, "BlockIndexMissing", "a block was answered without its index"));
        };
        match u32::try_from(index) {
            Ok(index) if u64::from(index) < limit => set.insert(index),
            _ => {
                return Err(AwsError::new(
                    operation,
                    "BlockIndexOutOfRange",
                    format!("block index {index} is not one of the volume's {limit} blocks"),
                ))
            }
        }
    }
    Ok(())
}

impl Ebs for EbsClient {
    fn snapshot_blocks<'a>(&'a self, snapshot_id: &'a str) -> BoxFuture<'a, Result<Blocks, AwsError>> {
        Box::pin(self.list_snapshot_blocks(snapshot_id))
    }

    fn changed_blocks<'a>(&'a self, first: &'a str, second: &'a str) -> BoxFuture<'a, Result<BlockSet, AwsError>> {
        Box::pin(self.list_changed_blocks(first, second))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use aws_sdk_ebs::operation::list_changed_blocks::{ListChangedBlocksError, ListChangedBlocksOutput};
    use aws_sdk_ebs::operation::list_snapshot_blocks::{ListSnapshotBlocksError, ListSnapshotBlocksOutput};
    use aws_sdk_ebs::types::{Block, ChangedBlock};
    use aws_sdk_ebs::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;

    fn blocks_page(indexes: &[i32], next: Option<&str>) -> ListSnapshotBlocksOutput {
        ListSnapshotBlocksOutput::builder()
            .set_blocks(Some(
                indexes.iter().map(|i| Block::builder().block_index(*i).block_token("t").build()).collect(),
            ))
            .block_size(524_288)
            .volume_size(8)
            .set_next_token(next.map(str::to_string))
            .build()
    }

    fn changed_page(indexes: &[i32], next: Option<&str>) -> ListChangedBlocksOutput {
        ListChangedBlocksOutput::builder()
            .set_changed_blocks(Some(indexes.iter().map(|i| ChangedBlock::builder().block_index(*i).build()).collect()))
            .block_size(524_288)
            .set_next_token(next.map(str::to_string))
            .build()
    }

    fn service_error(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(format!("{code} (mocked)")).build()
    }

    /// The SDK's own retries off: what is retried here is this adapter's doing.
    macro_rules! client {
        ($($rule:expr),+) => {
            EbsClient::new(mock_client!(aws_sdk_ebs, RuleMode::Sequential, [$($rule),+], |c| c
                .retry_config(aws_sdk_ebs::config::retry::RetryConfig::disabled())))
        };
    }

    #[tokio::test(start_paused = true)]
    async fn every_page_of_the_blocks_is_read_with_the_largest_page() {
        let first = mock!(Client::list_snapshot_blocks)
            .match_requests(|r| {
                r.snapshot_id() == Some("snap-1") && r.max_results() == Some(MAX_RESULTS) && r.next_token().is_none()
            })
            .then_output(|| blocks_page(&[3, 1], Some("t1")));
        let last = mock!(Client::list_snapshot_blocks)
            .match_requests(|r| r.next_token() == Some("t1"))
            .then_output(|| blocks_page(&[7, 1], None));
        let client = client!(&first, &last);
        let blocks = client.snapshot_blocks("snap-1").await.unwrap();
        assert_eq!(blocks, Blocks { indexes: [1, 3, 7].into_iter().collect(), block_size: 524_288 });
        assert_eq!((first.num_calls(), last.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn every_page_of_the_changes_is_read() {
        let first = mock!(Client::list_changed_blocks)
            .match_requests(|r| {
                r.first_snapshot_id() == Some("snap-1")
                    && r.second_snapshot_id() == Some("snap-2")
                    && r.max_results() == Some(MAX_RESULTS)
            })
            .then_output(|| changed_page(&[2], Some("t1")));
        let last = mock!(Client::list_changed_blocks)
            .match_requests(|r| r.next_token() == Some("t1"))
            .then_output(|| changed_page(&[5, 6], None));
        let client = client!(&first, &last);
        let changed = client.changed_blocks("snap-1", "snap-2").await.unwrap();
        assert_eq!(changed, [2, 5, 6].into_iter().collect());
    }

    #[tokio::test(start_paused = true)]
    async fn an_index_beyond_the_volume_fails_the_listing() {
        // 8 GiB in blocks of 512 KiB: 16,384 blocks, 0 to 16,383.
        let beyond = mock!(Client::list_snapshot_blocks).then_output(|| blocks_page(&[16_383, 16_384], None));
        let err = client!(&beyond).snapshot_blocks("snap-1").await.unwrap_err();
        assert_eq!(err.code, "BlockIndexOutOfRange");
        let negative = mock!(Client::list_changed_blocks).then_output(|| changed_page(&[-1], None));
        assert_eq!(client!(&negative).changed_blocks("a", "b").await.unwrap_err().code, "BlockIndexOutOfRange");
        assert_eq!((block_limit(Some(8), Some(524_288)), block_limit(None, None)), (16_384, MAX_BLOCKS));
    }

    /// C6: a block without an index fails the listing (a changed block is never read as
    /// unchanged), and the SDK's own retries are off for the client the function builds.
    #[tokio::test(start_paused = true)]
    async fn a_block_without_an_index_fails_the_listing_and_the_sdk_does_not_retry() {
        let unindexed = mock!(Client::list_changed_blocks).then_output(|| {
            ListChangedBlocksOutput::builder()
                .changed_blocks(ChangedBlock::builder().block_index(1).build())
                .changed_blocks(ChangedBlock::builder().build())
                .block_size(524_288)
                .build()
        });
        assert_eq!(client!(&unindexed).changed_blocks("a", "b").await.unwrap_err().code, "BlockIndexMissing");
        let sdk_config = aws_config::SdkConfig::builder()
            .retry_config(aws_sdk_ebs::config::retry::RetryConfig::standard().with_max_attempts(5))
            .behavior_version(aws_sdk_ebs::config::BehaviorVersion::latest())
            .build();
        let client = EbsClient::from_sdk_config(&sdk_config, "eu-west-1");
        assert_eq!(client.client.config().retry_config().map(|r| r.max_attempts()), Some(1));
        assert_eq!(client.client.config().region().map(|r| r.to_string()), Some("eu-west-1".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_page_token_fails_the_listing() {
        let first = mock!(Client::list_snapshot_blocks).then_output(|| blocks_page(&[1], Some("t1")));
        let again = mock!(Client::list_snapshot_blocks).then_output(|| blocks_page(&[2], Some("t1")));
        let client = client!(&first, &again);
        let err = client.snapshot_blocks("snap-1").await.unwrap_err();
        assert_eq!((err.operation, err.code.as_str()), ("ListSnapshotBlocks", amiguard::paging::REPEATED_NEXT_TOKEN));
    }

    #[tokio::test(start_paused = true)]
    async fn both_throttles_are_retried_with_backoff_and_other_errors_keep_their_code() {
        let throttled = mock!(Client::list_snapshot_blocks)
            .sequence()
            .error(|| ListSnapshotBlocksError::generic(service_error("RequestThrottledException")))
            .error(|| ListSnapshotBlocksError::generic(service_error("ConcurrentLimitExceededException")))
            .output(|| blocks_page(&[1], None))
            .build();
        let client = client!(&throttled);
        let started = tokio::time::Instant::now();
        assert_eq!(client.snapshot_blocks("snap-1").await.unwrap().indexes.iter().collect::<Vec<_>>(), [1]);
        assert_eq!(throttled.num_calls(), 3);
        assert!(tokio::time::Instant::now() - started >= Duration::from_millis(1500), "0.5 s, then 1 s");

        let always = mock!(Client::list_changed_blocks)
            .sequence()
            .error(|| ListChangedBlocksError::generic(service_error("RequestThrottledException")))
            .times(ATTEMPTS as usize)
            .build();
        let client = client!(&always);
        let err = client.changed_blocks("snap-1", "snap-2").await.unwrap_err();
        assert_eq!((err.operation, err.code.as_str()), ("ListChangedBlocks", "RequestThrottledException"));
        assert_eq!(always.num_calls(), ATTEMPTS as usize, "given up after {ATTEMPTS} tries");

        let denied = mock!(Client::list_changed_blocks)
            .then_error(|| ListChangedBlocksError::generic(service_error("AccessDeniedException")));
        let client = client!(&denied);
        let err = client.changed_blocks("snap-1", "snap-2").await.unwrap_err();
        assert_eq!(err.code, "AccessDeniedException");
        assert_eq!(denied.num_calls(), 1, "not a throttle: not retried");
    }
}
