//! Which AMI a snapshot was made for.
//!
//! EC2 writes a fixed description on the snapshots it makes for an AMI:
//! - `CreateImage`: `Created by CreateImage(i-…) for ami-…`, followed on older snapshots by
//!   ` from vol-…` (the volume imaged; moto and newer AWS snapshots leave it out);
//! - `CopyImage`: `Copied for DestinationAmi ami-… from SourceAmi ami-… for SourceSnapshot snap-…`
//!   (followed by free text such as `. Task created on …`); the snapshot belongs to the destination.
//!
//! Only EC2's own words can make a snapshot an orphan candidate, and only when they agree with the
//! snapshot itself: a `from vol-…` must be the snapshot's own `VolumeId`, and a copy (EC2 gives
//! every `CopySnapshot`/`CopyImage` snapshot the `VolumeId` `vol-ffffffff`) is judged only by the
//! `CopyImage` form, so a DR copy that kept its original's description is not taken for it. The
//! `amiguard:image` tag anyone can write: it may keep a snapshot (its AMI exists), never make one
//! deletable. The parsers are strict on purpose: a description that only resembles these (a
//! person's note, a truncated copy) does not make a snapshot "from an AMI", and such snapshots are
//! never deleted.

use super::facts::{Id, SourceImages};
use amiguard::aws_words::{is_resource_id, CreateImageDescription};
use amiguard::tags::{self, Tag};

const COPY_IMAGE_PREFIX: &str = "Copied for DestinationAmi ";

/// The `VolumeId` EC2 gives every snapshot made by `CopySnapshot` or `CopyImage`.
pub const COPY_VOLUME_ID: &str = "vol-ffffffff";

/// Reads [`SourceImages`] from a snapshot's description, `VolumeId` and tags.
pub fn source_images(description: &str, volume_id: Option<&str>, tags: &[Tag]) -> SourceImages {
    let described = image_from_description(description, volume_id);
    // A description that is not EC2's proof (a copy that kept its original's words, a `from
    // vol-…` of another volume, a person's note) proves nothing, but any AMI it names, while it
    // exists, still keeps the snapshot.
    let mut unproved: Vec<Id> = Vec::new();
    if described.is_none() {
        for image in image_ids_in(description) {
            if !unproved.iter().any(|known| *known == image) {
                unproved.push(Id::from(image));
            }
        }
    }
    // EC2 keys are unique per resource; every match is read all the same, so that no input can
    // hide a source.
    for tag in tags.iter().filter(|t| t.key == tags::IMAGE && is_resource_id(&t.value, "ami-")) {
        if described != Some(tag.value.as_str()) && !unproved.iter().any(|known| *known == tag.value) {
            unproved.push(Id::from(tag.value.as_str()));
        }
    }
    SourceImages::new(described.map(Id::from), unproved)
}

/// The AMI id in an EC2-written description of either format, if the description is exactly one
/// and agrees with the snapshot's `VolumeId`: a `CreateImage` description names the volume the
/// snapshot was taken from (or none), never a copy's `vol-ffffffff`.
pub fn image_from_description<'d>(description: &'d str, volume_id: Option<&str>) -> Option<&'d str> {
    if let Some(created) = CreateImageDescription::parse(description) {
        let copy = volume_id == Some(COPY_VOLUME_ID);
        let same_volume = created.volume_id.is_none_or(|named| volume_id == Some(named));
        return (!copy && same_volume).then_some(created.image_id);
    }
    copy_image_destination(description)
}

/// `Copied for DestinationAmi ami-… from SourceAmi ami-… for SourceSnapshot snap-…[free text]`.
fn copy_image_destination(description: &str) -> Option<&str> {
    let rest = description.strip_prefix(COPY_IMAGE_PREFIX)?;
    let (destination, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("from SourceAmi ")?;
    let (source, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("for SourceSnapshot ")?;
    // The source snapshot id runs up to the first character that cannot be part of an id
    // (AWS follows it with `. Task created on …`).
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(rest.len());
    let snapshot = &rest[..end];
    (is_resource_id(destination, "ami-") && is_resource_id(source, "ami-") && is_resource_id(snapshot, "snap-"))
        .then_some(destination)
}

/// Every `ami-…` id in free text: `ami-` after a non-alphanumeric (or at the start), then
/// lower-case hex digits up to the first other character.
fn image_ids_in(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("ami-").filter_map(move |(at, _)| {
        let boundary = text[..at].chars().next_back().is_none_or(|c| !c.is_ascii_alphanumeric());
        let hex = &text[at + 4..];
        let len = hex.find(|c: char| !(c.is_ascii_digit() || matches!(c, 'a'..='f'))).unwrap_or(hex.len());
        (boundary && len > 0).then(|| &text[at..at + 4 + len])
    })
}

/// AWS Backup's snapshots: any `aws:backup:` tag, or a description naming AWS Backup (it writes
/// `This snapshot is created by the AWS Backup service.`). Matching loosely only ever keeps more.
pub fn is_aws_backup(description: &str, tags: &[Tag]) -> bool {
    has_tag_prefix(tags, "aws:backup:") || contains_ignoring_ascii_case(description, "aws backup")
}

fn contains_ignoring_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack.as_bytes().windows(needle.len()).any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Data Lifecycle Manager's snapshots: any `aws:dlm:` tag, or DLM's description
/// `Created for policy: policy-…`.
pub fn is_dlm(description: &str, tags: &[Tag]) -> bool {
    has_tag_prefix(tags, "aws:dlm:") || description.starts_with("Created for policy:")
}

/// Snapshots that Recycle Bin restored or manages: any `aws:recycle-bin:` tag.
pub fn is_recycle_bin(tags: &[Tag]) -> bool {
    has_tag_prefix(tags, "aws:recycle-bin:")
}

/// Tag keys compared without case: `aws:` keys are written by AWS services, whose spelling we do
/// not control, and a false match only keeps a snapshot.
fn has_tag_prefix(tags: &[Tag], prefix: &str) -> bool {
    tags.iter().any(|t| t.key.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a snapshot made by CreateImage of volume `vol-0aa11` says of itself.
    const OWN_VOLUME: Option<&str> = Some("vol-0aa11");

    fn described(description: &str) -> Option<&str> {
        image_from_description(description, OWN_VOLUME)
    }

    #[test]
    fn create_image_descriptions_with_and_without_volume() {
        assert_eq!(
            described("Created by CreateImage(i-0123abcd) for ami-0fedcba987 from vol-0aa11"),
            Some("ami-0fedcba987")
        );
        // moto's form (and newer AWS snapshots'), without ` from vol-…`.
        assert_eq!(
            described("Created by CreateImage(i-360ed1e5a3260cd1b) for ami-c0fea0d3bb2b653a2"),
            Some("ami-c0fea0d3bb2b653a2")
        );
    }

    #[test]
    fn a_description_that_disagrees_with_the_snapshot_is_not_ec2s() {
        let with_volume = "Created by CreateImage(i-0123abcd) for ami-0fedcba987 from vol-0aa11";
        // Another volume's description (copied onto a snapshot of another volume, or by hand).
        assert_eq!(image_from_description(with_volume, Some("vol-0bb22")), None);
        // A copy (EC2's vol-ffffffff) that kept its original's CreateImage description, with or
        // without the volume in it: a DR copy, never the AMI's own snapshot.
        assert_eq!(image_from_description(with_volume, Some(COPY_VOLUME_ID)), None);
        let without = "Created by CreateImage(i-0123abcd) for ami-0fedcba987";
        assert_eq!(image_from_description(without, Some(COPY_VOLUME_ID)), None);
        // A listing that does not say the volume cannot confirm a named one.
        assert_eq!(image_from_description(with_volume, None), None);
        assert_eq!(image_from_description(without, None), Some("ami-0fedcba987"));
        // CopyImage's own snapshots are copies: their form is judged alone.
        let copied = "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc";
        assert_eq!(image_from_description(copied, Some(COPY_VOLUME_ID)), Some("ami-0aaa"));
    }

    #[test]
    fn copy_image_descriptions_name_the_destination() {
        assert_eq!(
            described(
                "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc. Task created on 1,634,000,000."
            ),
            Some("ami-0aaa")
        );
        assert_eq!(
            described("Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc"),
            Some("ami-0aaa")
        );
    }

    #[test]
    fn look_alikes_are_not_from_an_ami() {
        for description in [
            "",
            "nightly backup of the db volume",
            "Created by CreateImage(i-0123) for ami-0abc and some notes",
            "Created by CreateImage(i-0123) for ami-",
            "Created by CreateImage(i-0123) for AMI-0ABC",
            "Created by CreateImage(i-0123) for ami-0abc from vol-",
            "Created by CreateImage(i-0123) for ami-0abc from snap-0123",
            "Created by CreateImage(x-0123) for ami-0abc",
            "created by createimage(i-0123) for ami-0abc",
            " Created by CreateImage(i-0123) for ami-0abc",
            "Copied for DestinationAmi ami-0aaa",
            "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb",
            "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot vol-0ccc",
            "Copied for DestinationAmi ami-zzz from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc",
        ] {
            assert_eq!(described(description), None, "{description:?}");
        }
    }

    #[test]
    fn amiguard_image_tags_name_sources_that_keep_but_never_describe() {
        let tagged = [Tag::new(tags::IMAGE, "ami-0abc")];
        let read = |description: &str, tags: &[Tag]| -> (Option<String>, Vec<String>) {
            let sources = source_images(description, OWN_VOLUME, tags);
            (sources.described().map(str::to_string), sources.iter().map(str::to_string).collect())
        };
        assert_eq!(read("", &tagged), (None, vec!["ami-0abc".to_string()]), "a tag alone makes nothing deletable");
        let description = "Created by CreateImage(i-01) for ami-0def";
        assert_eq!(read(description, &tagged), (Some("ami-0def".into()), vec!["ami-0def".into(), "ami-0abc".into()]));
        assert_eq!(read(description, &[Tag::new(tags::IMAGE, "ami-0def")]).1, ["ami-0def"]);
        let two_tags = [Tag::new(tags::IMAGE, "ami-0abc"), Tag::new(tags::IMAGE, "ami-0123")];
        assert_eq!(read(description, &two_tags).1, ["ami-0def", "ami-0abc", "ami-0123"]);
        assert!(source_images("", OWN_VOLUME, &[Tag::new(tags::IMAGE, "not-an-ami")]).is_empty());
        // A description that proves nothing still names AMIs that keep: EC2's form on a copy, a
        // note. A proving one names only its own AMI (a copy's SourceAmi does not keep it).
        let copy_of_original = source_images(description, Some(COPY_VOLUME_ID), &[]);
        assert_eq!(
            (copy_of_original.described(), copy_of_original.iter().collect::<Vec<_>>()),
            (None, vec!["ami-0def"])
        );
        let note = source_images("db before ami-0aa1 upgrade, see ami-0bb2.", OWN_VOLUME, &[]);
        assert_eq!(note.iter().collect::<Vec<_>>(), ["ami-0aa1", "ami-0bb2"]);
        assert!(source_images("salami-0abc", OWN_VOLUME, &[]).is_empty(), "not an id: no boundary");
        let copied = "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc";
        assert_eq!(source_images(copied, Some(COPY_VOLUME_ID), &[]).iter().collect::<Vec<_>>(), ["ami-0aaa"]);
        assert!(source_images("", OWN_VOLUME, &[]).is_empty());
    }

    #[test]
    fn managed_markers_by_tag_or_description() {
        assert!(is_aws_backup("", &[Tag::new("aws:backup:source-resource", "x")]));
        assert!(is_aws_backup("", &[Tag::new("AWS:Backup:Source-Resource", "x")]));
        assert!(is_aws_backup("This snapshot is created by the AWS Backup service.", &[]));
        assert!(is_aws_backup("Created by AWS Backup", &[]));
        assert!(is_aws_backup("made by aws BACKUP", &[]));
        assert!(!is_aws_backup("my backup", &[Tag::new("backup", "daily")]));
        assert!(is_dlm("", &[Tag::new("aws:dlm:lifecycle-policy-id", "policy-1")]));
        assert!(is_dlm("Created for policy: policy-0123 schedule: Default Schedule", &[]));
        assert!(!is_dlm("dlm", &[Tag::new("dlm", "x")]));
        assert!(is_recycle_bin(&[Tag::new("aws:recycle-bin:resource-type", "snapshot")]));
        assert!(!is_recycle_bin(&[Tag::new("recycle-bin", "x")]));
        // A key whose first bytes are not a character boundary is simply not a match.
        assert!(!is_dlm("", &[Tag::new("aws:dlmé", "x"), Tag::new("aws:d", "x")]));
    }
}
