//! What the recording proxy saw of the Recycle Bin tag: which `CreateTags` wrote it, on what, and
//! whether each deletion came after the tagging of its resource.

use std::collections::BTreeSet;

use amiguard::recycle_bin::{TAG_KEY, TAG_VALUE};

use crate::proxy::Call;

/// Each `CreateTags` that wrote the rules' tag (EC2 answered it with success): its position among
/// `calls` and its resource ids.
/// Panics on a call that writes the tag together with another one, or with another value: the
/// rules select exactly `TAG_KEY=TAG_VALUE`, and the sweeper's IAM allows no other tag.
pub fn taggings(calls: &[Call]) -> Vec<(usize, Vec<String>)> {
    calls
        .iter()
        .enumerate()
        .filter(|(_, call)| call.action == "CreateTags" && call.succeeded())
        .filter(|(_, call)| call.params().iter().any(|(key, value)| key.ends_with(".Key") && value == TAG_KEY))
        .map(|(at, call)| {
            let keys: Vec<String> = (1..).map_while(|n| call.param(&format!("Tag.{n}.Key"))).collect();
            assert_eq!(keys, [TAG_KEY], "the Recycle Bin tag is written alone: {}", call.body);
            assert_eq!(call.param("Tag.1.Value").as_deref(), Some(TAG_VALUE), "{}", call.body);
            (at, call.list("ResourceId"))
        })
        .collect()
}

/// Every id the rules' tag was written on.
pub fn tagged(calls: &[Call]) -> BTreeSet<String> {
    taggings(calls).into_iter().flat_map(|(_, ids)| ids).collect()
}

/// The ids of the `action` calls (`DeleteSnapshot` by `SnapshotId`, `DeregisterImage` by
/// `ImageId`) that reached EC2, asserting that each came after a tagging that named its id.
pub fn assert_each_tagged_before(calls: &[Call], action: &str, id_param: &str) -> BTreeSet<String> {
    let taggings = taggings(calls);
    let mut ids = BTreeSet::new();
    for (at, call) in calls.iter().enumerate().filter(|(_, c)| c.action == action && !c.faulted) {
        let id = call.param(id_param).unwrap_or_else(|| panic!("{action} without {id_param}: {}", call.body));
        assert!(
            taggings.iter().any(|(tagged_at, tagged)| *tagged_at < at && tagged.contains(&id)),
            "{action} {id} came without the Recycle Bin tag written on it first"
        );
        ids.insert(id);
    }
    ids
}
