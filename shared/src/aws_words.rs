//! The grammar of AWS words more than one function reads: account ids, resource ids, SNS topic
//! ARNs, and the description EC2 writes on the snapshots `CreateImage` makes.
//!
//! The parsers are strict on purpose: text that only resembles these (a person's note, a
//! truncated copy) is not taken for them.

/// A 12-digit AWS account id.
pub fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// `prefix` followed by at least one lower-case hex digit and nothing else (`ami-0abc…`).
pub fn is_resource_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f')))
}

/// Whether `arn` is an SNS topic's ARN (`arn:<partition>:sns:<region>:<account>:<name>`).
pub fn is_sns_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(parts.as_slice(), ["arn", partition, "sns", region, account, name]
        if !partition.is_empty() && !region.is_empty() && is_account_id(account) && !name.is_empty()
            && name.len() <= 256 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
}

const CREATE_IMAGE_PREFIX: &str = "Created by CreateImage(";

/// What EC2 writes on each snapshot `CreateImage` makes: `Created by CreateImage(i-…) for ami-…`,
/// followed on older snapshots by ` from vol-…` (the volume imaged; moto and newer AWS snapshots
/// leave it out). Anyone can write the same words with `CreateSnapshot` or `CopySnapshot`: they
/// say what a snapshot claims to be, never, alone, what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateImageDescription<'d> {
    pub instance_id: &'d str,
    pub image_id: &'d str,
    /// The volume imaged, when the description names one.
    pub volume_id: Option<&'d str>,
}

impl<'d> CreateImageDescription<'d> {
    /// `description`, if it is exactly this form and nothing else.
    pub fn parse(description: &'d str) -> Option<Self> {
        let rest = description.strip_prefix(CREATE_IMAGE_PREFIX)?;
        let (instance_id, rest) = rest.split_once(')')?;
        if !is_resource_id(instance_id, "i-") {
            return None;
        }
        let rest = rest.strip_prefix(" for ")?;
        let (image_id, tail) = match rest.split_once(' ') {
            Some((image, tail)) => (image, Some(tail)),
            None => (rest, None),
        };
        if !is_resource_id(image_id, "ami-") {
            return None;
        }
        let volume_id = match tail {
            None => None,
            Some(tail) => {
                let volume = tail.strip_prefix("from ")?;
                if !is_resource_id(volume, "vol-") {
                    return None;
                }
                Some(volume)
            }
        };
        Some(Self { instance_id, image_id, volume_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(description: &str) -> Option<(&str, &str, Option<&str>)> {
        CreateImageDescription::parse(description).map(|d| (d.instance_id, d.image_id, d.volume_id))
    }

    #[test]
    fn create_image_descriptions_name_the_instance_the_image_and_maybe_the_volume() {
        assert_eq!(
            parts("Created by CreateImage(i-0123) for ami-0abc from vol-01"),
            Some(("i-0123", "ami-0abc", Some("vol-01")))
        );
        assert_eq!(parts("Created by CreateImage(i-0123) for ami-0abc"), Some(("i-0123", "ami-0abc", None)));
        for look_alike in [
            "",
            "Created by CreateImage(i-0123) for ami-0abc and more",
            "Created by CreateImage(i-0123) for ami-",
            "Created by CreateImage(i-0123) for AMI-0ABC",
            "Created by CreateImage(i-0123) for ami-0abc from vol-",
            "Created by CreateImage(i-0123) for ami-0abc from snap-0123",
            "Created by CreateImage(x-0123) for ami-0abc",
            "created by createimage(i-0123) for ami-0abc",
            " Created by CreateImage(i-0123) for ami-0abc",
            "Copied for DestinationAmi ami-0aaa from SourceAmi ami-0bbb for SourceSnapshot snap-0ccc",
        ] {
            assert_eq!(parts(look_alike), None, "{look_alike:?}");
        }
    }

    #[test]
    fn ids_are_a_prefix_and_lower_case_hex() {
        assert!(is_resource_id("ami-0abc", "ami-"));
        assert!(!is_resource_id("ami-", "ami-"));
        assert!(!is_resource_id("ami-0ABC", "ami-"));
        assert!(!is_resource_id("snap-0abc", "ami-"));
        assert!(is_account_id("123456789012"));
        assert!(!is_account_id("12345678901"));
        assert!(!is_account_id("12345678901a"));
    }

    #[test]
    fn topic_arns_name_a_partition_region_account_and_topic() {
        assert!(is_sns_topic_arn("arn:aws:sns:eu-west-1:123456789012:amiguard-alerts"));
        for bad in [
            "alerts",
            "arn:aws:sqs:eu-west-1:123456789012:q",
            "arn:aws:sns:eu-west-1:1234:alerts",
            "arn:aws:sns::123456789012:a",
        ] {
            assert!(!is_sns_topic_arn(bad), "{bad}");
        }
    }
}
