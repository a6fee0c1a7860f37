//! The EBS direct APIs behind [`Ebs`]: `ListSnapshotBlocks` and `ListChangedBlocks`, every page
//! (`MaxResults` 10,000, the repeated-token check), each page retried with backoff on the EBS
//! direct APIs' own throttles (`RequestThrottledException`, `ConcurrentLimitExceededException`),
//! which the SDK's retry policy does not all know. Errors keep the AWS code.

use std::time::Duration;

use amiguard::paging::PageTokens;
use amiguard::AwsError;
use futures::future::BoxFuture;
use hashbrown::HashSet;

use crate::core::savings::Blocks;
use crate::ports::Ebs;

/// The largest page both list calls answer.
pub const MAX_RESULTS: i32 = 10_000;
/// The throttles of the EBS direct APIs: retried, with backoff.
pub const THROTTLES: [&str; 2] = ["RequestThrottledException", "ConcurrentLimitExceededException"];
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
                Err(err) if attempt < ATTEMPTS && THROTTLES.iter().any(|code| err.has_code(code)) => {
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
            if let Some(size) = page.block_size().and_then(|s| u64::try_from(s).ok()) {
                blocks.block_size = size;
            }
            blocks
                .indexes
                .extend(page.blocks().iter().filter_map(|b| b.block_index()).filter_map(|i| u32::try_from(i).ok()));
            next = page.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            tokens.check(next.as_deref())?;
            if next.is_none() {
                break;
            }
        }
        if blocks.block_size == 0 && !blocks.indexes.is_empty() {
            return Err(AwsError::new(OPERATION, "NoBlockSize", format!("{snapshot_id}: no BlockSize was answered")));
        }
        blocks.indexes.sort_unstable();
        blocks.indexes.dedup();
        Ok(blocks)
    }

    async fn list_changed_blocks(&self, first: &str, second: &str) -> Result<HashSet<u32>, AwsError> {
        const OPERATION: &str = "ListChangedBlocks";
        let (mut changed, mut tokens, mut next) = (HashSet::new(), PageTokens::new(OPERATION), None::<String>);
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
            changed.extend(
                page.changed_blocks().iter().filter_map(|b| b.block_index()).filter_map(|i| u32::try_from(i).ok()),
            );
            next = page.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            tokens.check(next.as_deref())?;
            if next.is_none() {
                break;
            }
        }
        Ok(changed)
    }
}

impl Ebs for EbsClient {
    fn snapshot_blocks<'a>(&'a self, snapshot_id: &'a str) -> BoxFuture<'a, Result<Blocks, AwsError>> {
        Box::pin(self.list_snapshot_blocks(snapshot_id))
    }

    fn changed_blocks<'a>(&'a self, first: &'a str, second: &'a str) -> BoxFuture<'a, Result<HashSet<u32>, AwsError>> {
        Box::pin(self.list_changed_blocks(first, second))
    }
}
