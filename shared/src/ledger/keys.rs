//! The key layout of the ledger, said once. One table, keys `pk` (partition) and `sk` (sort),
//! both strings; every partition holds one kind of record, so one `Query` reads what a decision
//! needs. Regions are part of the keys: one function may write the records of several regions.
//! Which function writes which partition, and what each record holds: `docs/ledger.md`.
//!
//! | `pk`                          | `sk`                     | what                                        |
//! |-------------------------------|--------------------------|---------------------------------------------|
//! | `instance#<region>#<id>`      | `lease`                  | one delivery at a time for the instance     |
//! |                               | `image#<stopped-at>`     | an image made (or adopted) for a stop       |
//! |                               | `adopted`                | pre-ledger images were adopted, once        |
//! | `made-images#<region>`        | `<image-id>`             | which instance an image was made of (for its AMI events) |
//! | `alert#<region>#<instance>`   | `image#<image-id>`       | the alert sent for the instance and image   |
//! | `failed-images#<region>`      | `<image-id>`             | the alert sent for an image that failed     |
//! | `launch-alerts#<region>#<image>` | `<hour>#<n>`          | the n-th launch alert of the image that hour (folding) |
//! | `folded-alerts#<region>`      | `<instance>#<image>`     | a folded launch alert, until a digest sends it |
//! | `findings#<region>`          | `<instance>#<image>`     | a Security Hub finding imported and not archived yet |
//! | `images#<region>`             | `<image-id>`             | an own image's snapshots, when seen, when gone |
//! | `orphans#<region>`            | `<snapshot-id>`          | when the snapshot was first seen orphaned   |
//! | `ami-events#<region>`         | `<image-id>`             | an `EC2 AMI State Change` to `deregistered` |
//! | `retirement#<region>`         | `<image-id>`             | an image's staged retirement: stage, when, evidence, launch permissions |
//! | `run#<run-id>`                | `deleted#<resource-id>`  | the journal: one entry per deletion or deregistration |
//! | `runs#<function>`             | `<started-at>#<run-id>`  | each run's summary, newest last             |

/// The first part of every partition key the builders below make, up to its first `#`: one
/// prefix, one kind of record. IAM grants each role the prefixes of its own function only
/// (`dynamodb:LeadingKeys`, `ForAllValues:StringLike` on `<prefix>*` in `template.yaml`), and
/// each function crate says which prefixes it uses (its `LEDGER_PARTITIONS`); the integration
/// tests hold this list, those lists, the template and the builders' output to one another.
pub const PARTITION_PREFIXES: &[&str] = &[
    "instance#",
    "made-images#",
    "alert#",
    "failed-images#",
    "launch-alerts#",
    "folded-alerts#",
    "findings#",
    "images#",
    "orphans#",
    "ami-events#",
    "passes#",
    "run#",
    "runs#",
    "retirement#",
];

/// The prefix of `pk` among [`PARTITION_PREFIXES`] (`None`: a key no builder here makes).
pub fn partition_prefix(pk: &str) -> Option<&'static str> {
    PARTITION_PREFIXES.iter().copied().find(|prefix| pk.starts_with(prefix))
}

pub fn instance(region: &str, instance_id: &str) -> String {
    format!("instance#{region}#{instance_id}")
}

pub const LEASE: &str = "lease";
pub const ADOPTED: &str = "adopted";
pub const IMAGE_PREFIX: &str = "image#";

/// The sort key of the image made for the stop at `stopped_at` (its fixed time form sorts).
pub fn image_of_stop(stopped_at: &str) -> String {
    format!("{IMAGE_PREFIX}{stopped_at}")
}

/// The partition that says which instance each image amiguard made at a stop is of.
pub fn made_images(region: &str) -> String {
    format!("made-images#{region}")
}

/// The partition of the alerts sent for images amiguard made that failed.
pub fn failed_image_alerts(region: &str) -> String {
    format!("failed-images#{region}")
}

/// The partition of an image's launch-alert slots (see `trust::fold`).
pub fn launch_alerts(region: &str, image_id: &str) -> String {
    format!("launch-alerts#{region}#{image_id}")
}

/// The partition of the folded launch alerts waiting for the audit's digest.
pub fn folded_alerts(region: &str) -> String {
    format!("folded-alerts#{region}")
}

pub fn findings(region: &str) -> String {
    format!("findings#{region}")
}

pub fn alert(region: &str, instance_id: &str) -> String {
    format!("alert#{region}#{instance_id}")
}

pub fn alerted_image(image_id: &str) -> String {
    format!("{IMAGE_PREFIX}{image_id}")
}

pub fn seen_images(region: &str) -> String {
    format!("images#{region}")
}

pub fn orphans(region: &str) -> String {
    format!("orphans#{region}")
}

pub fn ami_events(region: &str) -> String {
    format!("ami-events#{region}")
}

/// The partition of the sweeper's staged retirements: one record per image.
pub fn retirement(region: &str) -> String {
    format!("retirement#{region}")
}

/// The partition of a region's snapshot listing passes (the sweeper's; one item, sort key
/// [`SNAPSHOT_PASSES`]).
pub fn snapshot_passes(region: &str) -> String {
    format!("passes#{region}")
}

pub const SNAPSHOT_PASSES: &str = "snapshots";

pub fn run(run_id: &str) -> String {
    format!("run#{run_id}")
}

pub const DELETED_PREFIX: &str = "deleted#";

/// A journal entry's sort key: what was deleted or deregistered.
pub fn deleted(resource_id: &str) -> String {
    format!("{DELETED_PREFIX}{resource_id}")
}

pub fn runs(function: &str) -> String {
    format!("runs#{function}")
}

pub fn run_summary(started_at: &str, run_id: &str) -> String {
    format!("{started_at}#{run_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of every partition key builder above, in the order of `PARTITION_PREFIXES`.
    fn every_partition_key() -> Vec<String> {
        vec![
            instance("us-east-1", "i-0"),
            made_images("us-east-1"),
            alert("us-east-1", "i-0"),
            failed_image_alerts("us-east-1"),
            launch_alerts("us-east-1", "ami-0"),
            folded_alerts("us-east-1"),
            findings("us-east-1"),
            seen_images("us-east-1"),
            orphans("us-east-1"),
            ami_events("us-east-1"),
            snapshot_passes("us-east-1"),
            run("r-1"),
            runs("f"),
            retirement("us-east-1"),
        ]
    }

    #[test]
    fn every_partition_key_starts_with_its_own_listed_prefix_and_every_prefix_is_made() {
        let keys = every_partition_key();
        let prefixes: Vec<&str> = keys.iter().map(|pk| partition_prefix(pk).unwrap_or("<none>")).collect();
        assert_eq!(prefixes, PARTITION_PREFIXES, "one builder per prefix, in the list's order");
        for prefix in PARTITION_PREFIXES {
            let word = prefix.strip_suffix('#').unwrap_or_else(|| panic!("`{prefix}` ends at its first `#`"));
            assert!(word.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "`{prefix}`: no `#`, `*` or `?` inside");
            // A pattern `<prefix>*` must not take in another kind's keys.
            for other in PARTITION_PREFIXES.iter().filter(|other| *other != prefix) {
                assert!(!other.starts_with(prefix), "`{prefix}*` would match `{other}` keys");
            }
        }
        assert_eq!(partition_prefix("orphan#x"), None);
    }
}
