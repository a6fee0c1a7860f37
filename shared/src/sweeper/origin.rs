//! Which AMI a snapshot was made for.
//!
//! EC2 writes a fixed description on the snapshots it makes for an AMI:
//! - `CreateImage`: `Created by CreateImage(i-…) for ami-…` (AWS adds ` from vol-…`; moto does not);
//! - `CopyImage`: `Copied for DestinationAmi ami-… from SourceAmi ami-… for SourceSnapshot snap-…`
//!   (followed by free text such as `. Task created on …`); the snapshot belongs to the destination.
//!
//! The parsers are strict on purpose: a description that only resembles these (a person's note,
//! a truncated copy) does not make a snapshot "from an AMI", and such snapshots are never deleted.

use super::facts::Id;
use crate::tags::{self, Tag};

const CREATE_IMAGE_PREFIX: &str = "Created by CreateImage(";
const COPY_IMAGE_PREFIX: &str = "Copied for DestinationAmi ";

/// The AMIs a snapshot says it was made for: the one in its description, then the ones in
/// amiguard's `amiguard:image` tag (snapshot-on-stop writes it on every snapshot of its AMIs).
/// Usually one; two when they disagree, and then the snapshot is kept if either still exists.
///
/// The first is stored inline and the rest boxed: a million snapshots' sources then cost no
/// allocation unless a snapshot names more than one AMI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceImages {
    first: Option<Id>,
    more: Box<[Id]>,
}

impl SourceImages {
    /// The sources in the order they were read: description first.
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone {
        self.first.iter().chain(self.more.iter()).map(Id::as_str)
    }

    pub fn first(&self) -> Option<&str> {
        self.first.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push(&mut self, image_id: &str) {
        if self.iter().any(|known| known == image_id) {
            return;
        }
        match self.first {
            None => self.first = Some(Id::from(image_id)),
            Some(_) => {
                let mut more = std::mem::take(&mut self.more).into_vec();
                more.push(Id::from(image_id));
                self.more = more.into_boxed_slice();
            }
        }
    }
}

/// Reads [`SourceImages`] from a snapshot's description and tags.
pub fn source_images(description: &str, tags: &[Tag]) -> SourceImages {
    let mut sources = SourceImages::default();
    if let Some(described) = image_from_description(description) {
        sources.push(described);
    }
    // EC2 keys are unique per resource; every match is read all the same, so that no input can
    // hide a source.
    for tagged in tags.iter().filter(|t| t.key == tags::IMAGE && is_resource_id(&t.value, "ami-")) {
        sources.push(&tagged.value);
    }
    sources
}

/// The AMI id in an EC2-written description of either format, if the description is exactly one.
pub fn image_from_description(description: &str) -> Option<&str> {
    create_image_source(description).or_else(|| copy_image_destination(description))
}

/// `Created by CreateImage(i-…) for ami-…`, optionally followed by ` from vol-…`, nothing else.
fn create_image_source(description: &str) -> Option<&str> {
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
        None => Some(image),
        Some(tail) => {
            let volume = tail.strip_prefix("from ")?;
            is_resource_id(volume, "vol-").then_some(image)
        }
    }
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

/// `prefix` followed by at least one lower-case hex digit and nothing else (`ami-0abc…`).
fn is_resource_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f')))
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

    #[test]
    fn create_image_descriptions_with_and_without_volume() {
        assert_eq!(
            image_from_description("Created by CreateImage(i-0123abcd) for ami-0fedcba987 from vol-0aa11"),
            Some("ami-0fedcba987")
        );
        // moto's form, without ` from vol-…`.
        assert_eq!(
            image_from_description("Created by CreateImage(i-360ed1e5a3260cd1b) for ami-c0fea0d3bb2b653a2"),
            Some("ami-c0fea0d3bb2b653a2")
        );
    }

    #[test]
    fn copy_image_descriptions_name_the_destination() {
        assert_eq!(
            image_from_description(
                "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc. Task created on 1,634,000,000."
            ),
            Some("ami-0aaa")
        );
        assert_eq!(
            image_from_description(
                "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc"
            ),
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
            assert_eq!(image_from_description(description), None, "{description:?}");
        }
    }

    #[test]
    fn amiguard_image_tag_adds_a_source_and_must_be_an_ami_id() {
        let tagged = [Tag::new(tags::IMAGE, "ami-0abc")];
        let read = |description: &str, tags: &[Tag]| -> Vec<String> {
            source_images(description, tags).iter().map(str::to_string).collect()
        };
        assert_eq!(read("", &tagged), ["ami-0abc"]);
        let described = "Created by CreateImage(i-01) for ami-0def";
        assert_eq!(read(described, &tagged), ["ami-0def", "ami-0abc"]);
        assert_eq!(read(described, &[Tag::new(tags::IMAGE, "ami-0def")]), ["ami-0def"]);
        let two_tags = [Tag::new(tags::IMAGE, "ami-0abc"), Tag::new(tags::IMAGE, "ami-0123")];
        assert_eq!(read(described, &two_tags), ["ami-0def", "ami-0abc", "ami-0123"]);
        assert!(source_images("", &[Tag::new(tags::IMAGE, "not-an-ami")]).is_empty());
        assert!(source_images("", &[]).is_empty());
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
