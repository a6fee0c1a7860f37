//! Which AMI a snapshot was made for.
//!
//! EC2 writes a fixed description on the snapshots it makes for an AMI:
//! - `CreateImage`: `Created by CreateImage(i-…) for ami-…` (AWS adds ` from vol-…`; moto does not);
//! - `CopyImage`: `Copied for DestinationAmi ami-… from SourceAmi ami-… for SourceSnapshot snap-…`
//!   (followed by free text such as `. Task created on …`); the snapshot belongs to the destination.
//!
//! The parsers are strict on purpose: a description that only resembles these (a person's note,
//! a truncated copy) does not make a snapshot "from an AMI", and such snapshots are never deleted.

use crate::tags::{self, Tag};

const CREATE_IMAGE_PREFIX: &str = "Created by CreateImage(";
const COPY_IMAGE_PREFIX: &str = "Copied for DestinationAmi ";

/// The AMIs a snapshot says it was made for: the one in its description, then the one in
/// amiguard's `amiguard:image` tag (snapshot-on-stop writes it on every snapshot of its AMIs).
/// Usually one; two when they disagree, and then the snapshot is kept if either still exists.
pub fn source_images(description: &str, tags: &[Tag]) -> Vec<String> {
    let mut sources: Vec<String> = image_from_description(description).into_iter().collect();
    // EC2 keys are unique per resource; every match is read all the same, so that no input can
    // hide a source.
    for tagged in tags.iter().filter(|t| t.key == tags::IMAGE && is_resource_id(&t.value, "ami-")) {
        if !sources.contains(&tagged.value) {
            sources.push(tagged.value.clone());
        }
    }
    sources
}

/// The AMI id in an EC2-written description of either format, if the description is exactly one.
pub fn image_from_description(description: &str) -> Option<String> {
    create_image_source(description).or_else(|| copy_image_destination(description))
}

/// `Created by CreateImage(i-…) for ami-…`, optionally followed by ` from vol-…`, nothing else.
fn create_image_source(description: &str) -> Option<String> {
    let rest = description.strip_prefix(CREATE_IMAGE_PREFIX)?;
    let (instance, rest) = rest.split_once(')')?;
    if !is_resource_id(instance, "i-") {
        return None;
    }
    let rest = rest.strip_prefix(" for ")?;
    let (image, tail) = match rest.split_once(' ') {
        Some((image, tail)) => (image, Some(tail)),
        None => (rest, None),
    };
    if !is_resource_id(image, "ami-") {
        return None;
    }
    match tail {
        None => Some(image.to_string()),
        Some(tail) => {
            let volume = tail.strip_prefix("from ")?;
            is_resource_id(volume, "vol-").then(|| image.to_string())
        }
    }
}

/// `Copied for DestinationAmi ami-… from SourceAmi ami-… for SourceSnapshot snap-…[free text]`.
fn copy_image_destination(description: &str) -> Option<String> {
    let rest = description.strip_prefix(COPY_IMAGE_PREFIX)?;
    let (destination, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("from SourceAmi ")?;
    let (source, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("for SourceSnapshot ")?;
    // The source snapshot id runs up to the first character that cannot be part of an id
    // (AWS follows it with `. Task created on …`).
    let snapshot: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    (is_resource_id(destination, "ami-") && is_resource_id(source, "ami-") && is_resource_id(&snapshot, "snap-"))
        .then(|| destination.to_string())
}

/// `prefix` followed by at least one lower-case hex digit and nothing else (`ami-0abc…`).
fn is_resource_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f')))
}

/// AWS Backup's snapshots: any `aws:backup:` tag, or a description naming AWS Backup (it writes
/// `This snapshot is created by the AWS Backup service.`). Matching loosely only ever keeps more.
pub fn is_aws_backup(description: &str, tags: &[Tag]) -> bool {
    has_tag_prefix(tags, "aws:backup:") || description.to_ascii_lowercase().contains("aws backup")
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

    #[test]
    fn create_image_descriptions_with_and_without_volume() {
        assert_eq!(
            image_from_description("Created by CreateImage(i-0123abcd) for ami-0fedcba987 from vol-0aa11"),
            Some("ami-0fedcba987".to_string())
        );
        // moto's form, without ` from vol-…`.
        assert_eq!(
            image_from_description("Created by CreateImage(i-360ed1e5a3260cd1b) for ami-c0fea0d3bb2b653a2"),
            Some("ami-c0fea0d3bb2b653a2".to_string())
        );
    }

    #[test]
    fn copy_image_descriptions_name_the_destination() {
        assert_eq!(
            image_from_description(
                "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc. Task created on 1,634,000,000."
            ),
            Some("ami-0aaa".to_string())
        );
        assert_eq!(
            image_from_description(
                "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc"
            ),
            Some("ami-0aaa".to_string())
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
            assert_eq!(image_from_description(description), None, "{description:?}");
        }
    }

    #[test]
    fn amiguard_image_tag_adds_a_source_and_must_be_an_ami_id() {
        let tagged = [Tag::new(tags::IMAGE, "ami-0abc")];
        assert_eq!(source_images("", &tagged), ["ami-0abc"]);
        let described = "Created by CreateImage(i-01) for ami-0def";
        assert_eq!(source_images(described, &tagged), ["ami-0def", "ami-0abc"]);
        assert_eq!(source_images(described, &[Tag::new(tags::IMAGE, "ami-0def")]), ["ami-0def"]);
        assert!(source_images("", &[Tag::new(tags::IMAGE, "not-an-ami")]).is_empty());
        assert!(source_images("", &[]).is_empty());
    }

    #[test]
    fn managed_markers_by_tag_or_description() {
        assert!(is_aws_backup("", &[Tag::new("aws:backup:source-resource", "x")]));
        assert!(is_aws_backup("", &[Tag::new("AWS:Backup:Source-Resource", "x")]));
        assert!(is_aws_backup("This snapshot is created by the AWS Backup service.", &[]));
        assert!(is_aws_backup("Created by AWS Backup", &[]));
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
