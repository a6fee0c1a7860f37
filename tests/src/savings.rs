//! Exact savings on moto (issue 23): lineages built block by block with the EBS direct APIs, and
//! what moto lacks filled in at the proxy: the lineage EC2's `DescribeSnapshots` gives the
//! snapshots the EBS direct APIs made (moto gives each a volume of its own and the time it was
//! made), and paging.

use orphan_snapshot_sweeper::adapters::ebs::EbsClient;
use orphan_snapshot_sweeper::ports::Ebs;

use crate::TestAccount;

/// moto's block size (AWS's is 512 KiB).
pub const MOTO_BLOCK_SIZE: u64 = 512;

/// The sweeper's EBS direct APIs for `account` (through its proxy, if any), waiting little
/// between retries.
pub fn ebs_regions(account: &TestAccount) -> Vec<(String, Box<dyn Ebs>)> {
    let client = EbsClient::new(account.ebs()).with_backoff(std::time::Duration::from_millis(20));
    vec![(account.region.clone(), Box::new(client) as Box<dyn Ebs>)]
}

/// Makes a completed snapshot whose block `i` holds `blocks[i]` (a byte repeated: the same byte
/// in two snapshots is the same block to moto), described `description`; its id.
pub async fn snapshot_of(account: &TestAccount, blocks: &[Option<u8>], description: &str) -> String {
    let ebs = account.ebs();
    let started = ebs.start_snapshot().volume_size(1).description(description).send().await.expect("StartSnapshot");
    let id = started.snapshot_id().expect("snapshot id").to_string();
    for (index, byte) in blocks.iter().enumerate() {
        let Some(byte) = byte else { continue };
        ebs.put_snapshot_block()
            .snapshot_id(&id)
            .block_index(index as i32)
            .block_data(vec![*byte; MOTO_BLOCK_SIZE as usize].into())
            .data_length(MOTO_BLOCK_SIZE as i32)
            .checksum("unchecked-by-moto")
            .checksum_algorithm(aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .send()
            .await
            .expect("PutSnapshotBlock");
    }
    ebs.complete_snapshot()
        .snapshot_id(&id)
        .changed_blocks_count(blocks.len() as i32)
        .send()
        .await
        .expect("CompleteSnapshot");
    id
}

/// `DescribeSnapshots`' answer with each of `lineage`'s snapshots on `volume_id`, started on
/// consecutive days from `first_day` (`2026-11-DDT00:00:00.000Z`): what AWS says of daily
/// snapshots of one volume.
pub fn as_lineage(answer: &str, lineage: &[String], volume_id: &str, first_day: u32) -> String {
    let mut out = String::new();
    let mut rest = answer;
    while let Some(start) = rest.find("<item>") {
        let end = rest[start..].find("</item>").map_or(rest.len(), |e| start + e + "</item>".len());
        out.push_str(&rest[..start]);
        let mut item = rest[start..end].to_string();
        if let Some(day) = lineage.iter().position(|id| item.contains(&format!("<snapshotId>{id}</snapshotId>"))) {
            item = replace_element(&item, "volumeId", volume_id);
            item = replace_element(&item, "startTime", &format!("2026-11-{:02}T00:00:00.000Z", first_day + day as u32));
        }
        out.push_str(&item);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn replace_element(xml: &str, name: &str, value: &str) -> String {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    match (xml.find(&open), xml.find(&close)) {
        (Some(a), Some(b)) if a < b => format!("{}{open}{value}{}", &xml[..a], &xml[b..]),
        _ => xml.to_string(),
    }
}

/// `DescribeSnapshots`' answer with every snapshot on `volume_id`: one lineage, whatever moto
/// said (for a test that needs neighbours, not their order).
pub fn one_volume(answer: &str, volume_id: &str) -> String {
    let (open, close) = ("<volumeId>", "</volumeId>");
    let mut out = String::new();
    let mut rest = answer;
    while let (Some(a), Some(b)) = (rest.find(open), rest.find(close)) {
        if b < a {
            break;
        }
        out.push_str(&rest[..a + open.len()]);
        out.push_str(volume_id);
        rest = &rest[b..];
        out.push_str(close);
        rest = &rest[close.len()..];
    }
    out.push_str(rest);
    out
}

/// Paging as AWS does it, which moto does not (it answers every block at once): the answer to a
/// call without `pageToken` keeps the first `first` entries of its `Blocks` or `ChangedBlocks`
/// list and says `NextToken` `page-2`; the answer to `pageToken=page-2` keeps the rest.
pub fn paged(proxy: &crate::proxy::Proxy, action: &str, list: &'static str, first: usize) {
    use crate::proxy::Fault;
    let cut = move |answer: &str, first_page: bool| {
        let mut value: serde_json::Value = serde_json::from_str(answer).expect("a JSON answer");
        let entries = value[list].as_array().cloned().unwrap_or_default();
        let (head, tail) = entries.split_at(first.min(entries.len()));
        if first_page {
            value[list] = serde_json::Value::Array(head.to_vec());
            value["NextToken"] = serde_json::json!("page-2");
        } else {
            value[list] = serde_json::Value::Array(tail.to_vec());
        }
        value.to_string()
    };
    // The second page first: the first page's rule matches any call of the action.
    proxy.inject(Fault::rewrite_with(action, move |answer| cut(answer, false)).when_body_contains("pageToken=page-2"));
    proxy.inject(Fault::rewrite_with(action, move |answer| cut(answer, true)).times(1));
}
