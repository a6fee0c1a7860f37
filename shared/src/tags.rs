//! Tag keys (all under `amiguard:`) and the plain tag type the core works with.

use serde::{Deserialize, Serialize};

pub const PREFIX: &str = "amiguard:";
/// On an instance: `true` opts it in (scope `tagged`), `false` opts it out (any scope).
pub const SNAPSHOT_ON_STOP: &str = "amiguard:snapshot-on-stop";
/// On an AMI and its snapshots: the instance it was imaged from.
pub const SOURCE_INSTANCE: &str = "amiguard:source-instance";
/// On an AMI and its snapshots: which function made it.
pub const CREATED_BY: &str = "amiguard:created-by";
/// On an AMI and its snapshots: the time of the stop event it was made for (RFC 3339).
pub const STOPPED_AT: &str = "amiguard:stopped-at";
/// On a snapshot: the AMI it was made for.
pub const IMAGE: &str = "amiguard:image";
/// On an instance: the untrusted image it was launched from (enforcement `tag`/`stop`).
pub const UNTRUSTED_AMI: &str = "amiguard:untrusted-ami";
/// The default protect tag: a snapshot or AMI carrying it is never deleted.
pub const KEEP: &str = "amiguard:keep";

/// `amiguard:created-by` value of the images amiguard makes when an instance stops.
pub const CREATED_BY_SNAPSHOT_ON_STOP: &str = "snapshot-on-stop";

/// EC2's limit of user tags per resource.
pub const MAX_TAGS_PER_RESOURCE: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: key.into(), value: value.into() }
    }
}

/// The value of `key` among `tags`.
pub fn value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key == key).map(|t| t.value.as_str())
}

/// `aws:` keys are reserved: users cannot write them, and copying them fails the whole call.
pub fn is_aws_reserved(key: &str) -> bool {
    // `get`, not indexing: the fourth byte may fall inside a multi-byte character.
    key.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
}

/// An `amiguard:` key, in any letter case.
pub fn is_amiguard(key: &str) -> bool {
    key.get(..PREFIX.len()).is_some_and(|head| head.eq_ignore_ascii_case(PREFIX))
}

pub fn to_sdk(tags: &[Tag]) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter().map(|t| aws_sdk_ec2::types::Tag::builder().key(&t.key).value(&t.value).build()).collect()
}

pub fn from_sdk(tags: &[aws_sdk_ec2::types::Tag]) -> Vec<Tag> {
    tags.iter().filter_map(|t| Some(Tag::new(t.key()?, t.value().unwrap_or_default()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_are_aws_prefixed_in_any_case_and_never_panic() {
        assert!(is_aws_reserved("aws:cloudformation:stack-id"));
        assert!(is_aws_reserved("AWS:x"));
        assert!(!is_aws_reserved("aws"));
        assert!(!is_aws_reserved("awsx:y"));
        assert!(!is_aws_reserved("abcé"));
        assert!(!is_aws_reserved("é"));
    }
}
