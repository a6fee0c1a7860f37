//! The verdict on an image by the trust policy: an image is trusted when it meets every condition
//! of at least one criterion; otherwise every criterion says why not ([`Problem`], [`Reason`]).
//! An image whose facts cannot be read (deregistered, or private to another account) is never
//! trusted: its owner cannot be verified. Pure.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

use amiguard::alert::Severity;

use super::criteria::{join, quoted, wildcard_match, Criterion, Provider};
use super::policy::TrustPolicy;

/// An image a launch used, as EC2 describes it (or recorded it at launch): plain data,
/// timestamps as EC2 writes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaunchImage {
    pub image_id: String,
    pub owner_id: String,
    pub owner_alias: Option<String>,
    pub name: Option<String>,
    /// `CreationDate`, e.g. `2024-10-10T00:00:00.000Z`.
    pub creation_date: Option<String>,
    /// `DeprecationTime`: the image is deprecated from that time on.
    pub deprecation_time: Option<String>,
    /// `SourceImageId`/`SourceImageRegion`: the image it was copied from, when EC2 says.
    pub source_image_id: Option<String>,
    pub source_image_region: Option<String>,
    /// `ImageAllowed`: whether the account's Allowed AMIs settings allow it, when EC2 says.
    pub image_allowed: Option<bool>,
}

/// Parses an EC2 timestamp (RFC 3339, with or without milliseconds).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.with_timezone(&Utc))
}

/// Why an image is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// DescribeImages does not show it: deregistered, or private to another account.
    ImageNotVisible,
    /// The image is not visible, and the owner EC2 recorded when the instance was launched
    /// (`DescribeInstanceImageMetadata`) is not one the policy trusts.
    RecordedOwnerNotTrusted {
        owner_id: String,
        owner_alias: Option<String>,
    },
    OwnerNotTrusted {
        owner_id: String,
        owner_alias: Option<String>,
        providers: Vec<Provider>,
    },
    NameNotAllowed {
        name: Option<String>,
        patterns: Vec<String>,
    },
    CreationDateUnknown {
        max_days: u32,
    },
    TooOld {
        created: DateTime<Utc>,
        max_days: u32,
    },
    DeprecationTimeUnreadable {
        raw: String,
    },
    Deprecated {
        since: DateTime<Utc>,
        max_days: u32,
    },
    /// The image's owner is trusted, but it was copied or built from an image whose owner is
    /// not (`chain`: the image, then its ancestors up to that one).
    AncestorNotTrusted {
        chain: Vec<String>,
        owner_id: String,
        owner_alias: Option<String>,
    },
    /// EC2 says the account's own Allowed AMIs settings do not allow the image.
    NotAllowedByEc2,
    /// The image's owner is trusted, but who made one of its ancestors cannot be read.
    ProvenanceUnverifiable {
        chain: Vec<String>,
        why: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AncestorNotTrusted { chain, owner_id, owner_alias } => {
                let alias =
                    owner_alias.as_deref().map(|a| format!("owner alias {a}")).unwrap_or("no owner alias".into());
                write!(f, "made from an image whose owner {owner_id} ({alias}) is not trusted: {}", chain.join(" <- "))
            }
            Self::NotAllowedByEc2 => f.write_str("EC2 says the account's Allowed AMIs settings do not allow it"),
            Self::ProvenanceUnverifiable { chain, why } => {
                write!(f, "provenance cannot be verified: {why}: {}", chain.join(" <- "))
            }
            Self::ImageNotVisible => f.write_str(
                "image not visible: it is deregistered or private to another account, so its owner cannot be verified",
            ),
            Self::RecordedOwnerNotTrusted { owner_id, owner_alias } => {
                let alias =
                    owner_alias.as_deref().map(|a| format!("owner alias {a}")).unwrap_or("no owner alias".into());
                write!(f, "EC2 recorded at launch that its owner is {owner_id} ({alias}), not a trusted provider")
            }
            Self::OwnerNotTrusted { owner_id, owner_alias, providers } => {
                let alias =
                    owner_alias.as_deref().map(|a| format!("owner alias {a}")).unwrap_or("no owner alias".into());
                write!(f, "owner {owner_id} ({alias}) is not a trusted provider (trusted: {})", join(providers))
            }
            Self::NameNotAllowed { name: Some(name), patterns } => {
                write!(f, "image name {name:?} matches none of the allowed names {}", quoted(patterns))
            }
            Self::NameNotAllowed { name: None, patterns } => {
                write!(f, "image has no name; allowed names: {}", quoted(patterns))
            }
            Self::CreationDateUnknown { max_days } => {
                write!(f, "image creation date unknown; images must be at most {max_days} days old")
            }
            Self::TooOld { created, max_days } => {
                write!(f, "image created {} is older than the {max_days} days allowed", rfc3339(created))
            }
            Self::DeprecationTimeUnreadable { raw } => {
                write!(f, "image deprecation time {raw:?} is unreadable, so it counts as deprecated")
            }
            Self::Deprecated { since, max_days: 0 } => write!(f, "image deprecated since {}", rfc3339(since)),
            Self::Deprecated { since, max_days } => {
                write!(
                    f,
                    "image deprecated since {}, {max_days} days or more ago (allowed: less than {max_days})",
                    rfc3339(since)
                )
            }
        }
    }
}

/// A problem, and which criterion found it when the policy has several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// 1-based; `None` when the policy has a single criterion (or the image is not visible).
    pub criterion: Option<usize>,
    pub problem: Problem,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.criterion {
            Some(n) => write!(f, "criterion {n}: {}", self.problem),
            None => write!(f, "{}", self.problem),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    Untrusted { reasons: Vec<Reason>, severity: Severity },
}

impl Verdict {
    pub fn is_trusted(&self) -> bool {
        matches!(self, Self::Trusted)
    }
}

/// Judges an image (`None`: not visible) by `policy`. `this_account` is what `self` means;
/// `now` dates the age conditions.
pub fn verdict(policy: &TrustPolicy, image: Option<&LaunchImage>, this_account: &str, now: DateTime<Utc>) -> Verdict {
    let Some(image) = image else {
        return Verdict::Untrusted {
            reasons: vec![Reason { criterion: None, problem: Problem::ImageNotVisible }],
            severity: Severity::High,
        };
    };
    let numbered = policy.criteria().len() > 1;
    let mut reasons = Vec::new();
    let mut owner_trusted_somewhere = false;
    for (index, criterion) in policy.criteria().iter().enumerate() {
        let problems = criterion_problems(criterion, image, this_account, now);
        if problems.is_empty() {
            return Verdict::Trusted;
        }
        if !problems.iter().any(|p| matches!(p, Problem::OwnerNotTrusted { .. })) {
            owner_trusted_somewhere = true;
        }
        let criterion = numbered.then_some(index + 1);
        reasons.extend(problems.into_iter().map(|problem| Reason { criterion, problem }));
    }
    let severity = if owner_trusted_somewhere { Severity::Medium } else { Severity::High };
    Verdict::Untrusted { reasons, severity }
}

/// Every condition of `criterion` that `image` fails (empty: it meets the criterion).
pub fn criterion_problems(
    criterion: &Criterion,
    image: &LaunchImage,
    this_account: &str,
    now: DateTime<Utc>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(providers) = &criterion.providers {
        let alias = image.owner_alias.as_deref();
        if !providers.iter().any(|p| p.matches(&image.owner_id, alias, this_account)) {
            problems.push(Problem::OwnerNotTrusted {
                owner_id: image.owner_id.clone(),
                owner_alias: image.owner_alias.clone(),
                providers: providers.clone(),
            });
        }
    }
    if let Some(patterns) = &criterion.names {
        let allowed = image.name.as_deref().is_some_and(|name| patterns.iter().any(|p| wildcard_match(p, name)));
        if !allowed {
            problems.push(Problem::NameNotAllowed { name: image.name.clone(), patterns: patterns.clone() });
        }
    }
    if let Some(max_days) = criterion.max_days_since_created {
        match image.creation_date.as_deref().and_then(parse_time) {
            None => problems.push(Problem::CreationDateUnknown { max_days }),
            // An image exactly `max_days` old is still allowed.
            Some(created) if !age_at_most(now - created, max_days) => {
                problems.push(Problem::TooOld { created, max_days })
            }
            Some(_) => {}
        }
    }
    if let Some(max_days) = criterion.max_days_since_deprecated {
        if let Some(raw) = &image.deprecation_time {
            match parse_time(raw) {
                None => problems.push(Problem::DeprecationTimeUnreadable { raw: raw.clone() }),
                // Deprecated from its deprecation time on; allowed only for less than
                // `max_days` after it, so that 0 allows no deprecated image (EC2's meaning).
                Some(since) if since <= now && !age_below(now - since, max_days) => {
                    problems.push(Problem::Deprecated { since, max_days })
                }
                Some(_) => {}
            }
        }
    }
    problems
}

/// `age <= days`. A day count too large for a duration is longer than any age.
fn age_at_most(age: TimeDelta, days: u32) -> bool {
    TimeDelta::try_days(i64::from(days)).is_none_or(|limit| age <= limit)
}

/// `age < days`.
fn age_below(age: TimeDelta, days: u32) -> bool {
    TimeDelta::try_days(i64::from(days)).is_none_or(|limit| age < limit)
}

fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::core::criteria::MAX_DAYS;
    use crate::core::policy::DEFAULT_TRUSTED_PROVIDERS;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const ME: &str = "123456789012";
    const VENDOR: &str = "309956199498";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap()
    }

    fn image(owner_id: &str, alias: Option<&str>) -> LaunchImage {
        LaunchImage {
            image_id: "ami-0123456789abcdef0".into(),
            owner_id: owner_id.into(),
            owner_alias: alias.map(str::to_string),
            name: Some("al2023-ami-2023.6-x86_64".into()),
            creation_date: Some("2026-01-01T12:00:00.000Z".into()),
            ..LaunchImage::default()
        }
    }

    fn criteria(json: &str) -> TrustPolicy {
        TrustPolicy::from_criteria_json(json).unwrap()
    }

    fn reasons(verdict: &Verdict) -> Vec<String> {
        match verdict {
            Verdict::Trusted => vec![],
            Verdict::Untrusted { reasons, .. } => reasons.iter().map(ToString::to_string).collect(),
        }
    }

    // ---- providers ----

    #[test]
    fn default_policy_trusts_amazon_alias_and_this_account() {
        let policy = TrustPolicy::default();
        assert_eq!(policy, TrustPolicy::from_provider_list(DEFAULT_TRUSTED_PROVIDERS).unwrap());
        assert!(verdict(&policy, Some(&image("801119661308", Some("amazon"))), ME, now()).is_trusted());
        assert!(verdict(&policy, Some(&image(ME, None)), ME, now()).is_trusted());
        let v = verdict(&policy, Some(&image(VENDOR, None)), ME, now());
        assert_eq!(
            reasons(&v),
            ["owner 309956199498 (no owner alias) is not a trusted provider (trusted: amazon, self)"]
        );
        assert!(matches!(v, Verdict::Untrusted { severity: Severity::High, .. }));
    }

    #[test]
    fn self_means_the_account_given_not_a_fixed_one() {
        let policy = TrustPolicy::default();
        let own = image(ME, None);
        assert!(verdict(&policy, Some(&own), ME, now()).is_trusted());
        assert!(!verdict(&policy, Some(&own), "210987654321", now()).is_trusted());
    }

    #[test]
    fn an_account_id_matches_the_owner_id_only_and_an_alias_keyword_the_alias_only() {
        let by_id = TrustPolicy::from_provider_list(VENDOR).unwrap();
        assert!(verdict(&by_id, Some(&image(VENDOR, None)), ME, now()).is_trusted());
        // An Amazon image (alias amazon) is not trusted by listing some other id...
        assert!(!verdict(&by_id, Some(&image("137112412989", Some("amazon"))), ME, now()).is_trusted());
        // ...and listing Amazon's owner id does not trust by alias either: ids are ids.
        let amazon_id = TrustPolicy::from_provider_list("137112412989").unwrap();
        assert!(verdict(&amazon_id, Some(&image("137112412989", Some("amazon"))), ME, now()).is_trusted());
        assert!(!verdict(&amazon_id, Some(&image("801119661308", Some("amazon"))), ME, now()).is_trusted());
        let alias = TrustPolicy::from_provider_list("aws-marketplace").unwrap();
        assert!(verdict(&alias, Some(&image("679593333241", Some("aws-marketplace"))), ME, now()).is_trusted());
        assert!(!verdict(&alias, Some(&image("679593333241", Some("amazon"))), ME, now()).is_trusted());
        assert!(!verdict(&alias, Some(&image("679593333241", None)), ME, now()).is_trusted());
        let backup = TrustPolicy::from_provider_list("aws-backup-vault").unwrap();
        assert!(verdict(&backup, Some(&image(ME, Some("aws-backup-vault"))), ME, now()).is_trusted());
    }

    #[test]
    fn an_unknown_owner_id_never_matches_self_or_an_id() {
        let policy = TrustPolicy::from_provider_list("self").unwrap();
        assert!(!verdict(&policy, Some(&image("", None)), "", now()).is_trusted());
    }

    proptest! {
        #[test]
        fn an_invisible_image_is_never_trusted(providers in proptest::collection::vec("amazon|aws-marketplace|self|[0-9]{12}", 1..5)) {
            let policy = TrustPolicy::from_provider_list(&providers.join(",")).unwrap();
            let v = verdict(&policy, None, ME, now());
            prop_assert_eq!(
                v,
                Verdict::Untrusted { reasons: vec![Reason { criterion: None, problem: Problem::ImageNotVisible }], severity: Severity::High }
            );
        }

        #[test]
        fn trusted_exactly_when_one_criterion_has_no_problem_and_untrusted_always_says_why(
            owner in "111111111111|222222222222|123456789012",
            alias in proptest::option::of("amazon|aws-marketplace"),
            name in "(golden|base|al2023)-[a-z]{1,4}",
            age_days in 0i64..20,
            deprecated_days in proptest::option::of(-5i64..20),
            raw in proptest::collection::vec((
                proptest::option::of(proptest::collection::vec("amazon|aws-marketplace|self|111111111111|222222222222", 1..3)),
                proptest::option::of(proptest::collection::vec(proptest::sample::select(vec!["golden-*", "base-?*", "*-x", "al2023-*"]).prop_map(str::to_string), 1..3)),
                proptest::option::of(0u32..15),
                proptest::option::of(0u32..15),
            ), 1..4),
        ) {
            let criteria: Vec<Criterion> = raw.into_iter().map(|(p, n, c, d)| Criterion {
                providers: p.map(|p| p.iter().map(|w| Provider::parse(w).unwrap()).collect()),
                names: n,
                max_days_since_created: c,
                max_days_since_deprecated: d,
            }).collect();
            let image = LaunchImage {
                image_id: "ami-1".into(),
                owner_id: owner,
                owner_alias: alias,
                name: Some(name),
                creation_date: Some(rfc3339(&(now() - TimeDelta::days(age_days)))),
                deprecation_time: deprecated_days.map(|d| rfc3339(&(now() - TimeDelta::days(d)))),
                ..LaunchImage::default()
            };
            let policy = TrustPolicy::of_criteria(criteria.clone());
            let any_clean = criteria.iter().any(|c| criterion_problems(c, &image, ME, now()).is_empty());
            let v = verdict(&policy, Some(&image), ME, now());
            prop_assert_eq!(v.is_trusted(), any_clean);
            if let Verdict::Untrusted { reasons, .. } = &v {
                prop_assert!(reasons.len() >= criteria.len(), "every criterion says why it failed");
            }
            // Adding a criterion never makes a trusted image untrusted.
            let mut wider = criteria.clone();
            wider.push(Criterion { names: Some(vec!["nothing-matches-this".into()]), ..Criterion::default() });
            let wider = TrustPolicy::of_criteria(wider);
            if v.is_trusted() {
                prop_assert!(verdict(&wider, Some(&image), ME, now()).is_trusted());
            }
        }

        #[test]
        fn huge_day_counts_never_panic_and_allow_everything(days in (i32::MAX as u32 - 1000)..=MAX_DAYS) {
            let policy = TrustPolicy::of_criteria(
                vec![Criterion { max_days_since_created: Some(days), max_days_since_deprecated: Some(days), ..Criterion::default() }],
            );
            let mut old = image(VENDOR, None);
            old.creation_date = Some("1970-01-01T00:00:00Z".into());
            old.deprecation_time = Some("1970-01-02T00:00:00Z".into());
            prop_assert!(verdict(&policy, Some(&old), ME, now()).is_trusted());
        }
    }

    // ---- ages at the boundary ----

    fn aged(created: DateTime<Utc>, deprecated: Option<DateTime<Utc>>) -> LaunchImage {
        LaunchImage {
            creation_date: Some(created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            deprecation_time: deprecated.map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ..image(VENDOR, Some("amazon"))
        }
    }

    #[test]
    fn creation_age_is_allowed_up_to_and_including_the_maximum() {
        let policy = criteria(r#"[{"CreationDateCondition": {"MaximumDaysSinceCreated": 300}}]"#);
        let limit = now() - TimeDelta::days(300);
        assert!(verdict(&policy, Some(&aged(limit, None)), ME, now()).is_trusted());
        assert!(verdict(&policy, Some(&aged(limit + TimeDelta::seconds(1), None)), ME, now()).is_trusted());
        let too_old = verdict(&policy, Some(&aged(limit - TimeDelta::seconds(1), None)), ME, now());
        assert_eq!(reasons(&too_old), ["image created 2025-04-06T11:59:59Z is older than the 300 days allowed"]);
        assert!(matches!(too_old, Verdict::Untrusted { severity: Severity::Medium, .. }));
        // Created "in the future" (clock skew) is young, not an error.
        assert!(verdict(&policy, Some(&aged(now() + TimeDelta::hours(1), None)), ME, now()).is_trusted());
        // Zero days: only an image created at this very instant.
        let zero = criteria(r#"[{"CreationDateCondition": {"MaximumDaysSinceCreated": 0}}]"#);
        assert!(verdict(&zero, Some(&aged(now(), None)), ME, now()).is_trusted());
        assert!(!verdict(&zero, Some(&aged(now() - TimeDelta::seconds(1), None)), ME, now()).is_trusted());
    }

    #[test]
    fn an_unknown_or_unreadable_creation_date_fails_an_age_condition() {
        let policy = criteria(r#"[{"CreationDateCondition": {"MaximumDaysSinceCreated": 30}}]"#);
        let mut facts = image(VENDOR, None);
        facts.creation_date = None;
        assert_eq!(
            reasons(&verdict(&policy, Some(&facts), ME, now())),
            ["image creation date unknown; images must be at most 30 days old"]
        );
        facts.creation_date = Some("yesterday".into());
        assert!(!verdict(&policy, Some(&facts), ME, now()).is_trusted());
    }

    #[test]
    fn deprecation_is_allowed_for_less_than_the_maximum_and_zero_allows_none() {
        let created = now() - TimeDelta::days(1000);
        let zero = criteria(r#"[{"DeprecationTimeCondition": {"MaximumDaysSinceDeprecated": 0}}]"#);
        assert!(verdict(&zero, Some(&aged(created, None)), ME, now()).is_trusted(), "never deprecated");
        assert!(
            verdict(&zero, Some(&aged(created, Some(now() + TimeDelta::seconds(1)))), ME, now()).is_trusted(),
            "not yet"
        );
        let just_now = verdict(&zero, Some(&aged(created, Some(now()))), ME, now());
        assert_eq!(reasons(&just_now), ["image deprecated since 2026-01-31T12:00:00Z"]);

        let ten = criteria(r#"[{"DeprecationTimeCondition": {"MaximumDaysSinceDeprecated": 10}}]"#);
        let limit = now() - TimeDelta::days(10);
        assert!(verdict(&ten, Some(&aged(created, Some(limit + TimeDelta::seconds(1)))), ME, now()).is_trusted());
        let at_limit = verdict(&ten, Some(&aged(created, Some(limit))), ME, now());
        assert_eq!(
            reasons(&at_limit),
            ["image deprecated since 2026-01-21T12:00:00Z, 10 days or more ago (allowed: less than 10)"]
        );

        let mut unreadable = aged(created, None);
        unreadable.deprecation_time = Some("soon".into());
        assert!(!verdict(&ten, Some(&unreadable), ME, now()).is_trusted());
        // Without a deprecation condition, deprecation does not matter.
        assert!(verdict(&TrustPolicy::default(), Some(&aged(created, Some(limit))), ME, now()).is_trusted());
    }

    #[test]
    fn names_and_providers_together() {
        let policy = criteria(r#"[{"ImageProviders": ["amazon"], "ImageNames": ["al2023-ami-*"]}]"#);
        assert!(verdict(&policy, Some(&image("137112412989", Some("amazon"))), ME, now()).is_trusted());
        let mut other_name = image("137112412989", Some("amazon"));
        other_name.name = Some("amzn2-ami-hvm".into());
        assert_eq!(
            reasons(&verdict(&policy, Some(&other_name), ME, now())),
            ["image name \"amzn2-ami-hvm\" matches none of the allowed names \"al2023-ami-*\""]
        );
        other_name.name = None;
        assert_eq!(
            reasons(&verdict(&policy, Some(&other_name), ME, now())),
            ["image has no name; allowed names: \"al2023-ami-*\""]
        );
        // A copycat name from an untrusted owner fails on the owner.
        let copycat = image(VENDOR, None);
        let v = verdict(&policy, Some(&copycat), ME, now());
        assert_eq!(reasons(&v).len(), 1);
        assert!(reasons(&v)[0].starts_with("owner 309956199498"));
    }

    #[test]
    fn several_criteria_number_their_reasons_and_any_one_suffices() {
        let policy = criteria(
            r#"[{"ImageProviders": ["amazon"], "CreationDateCondition": {"MaximumDaysSinceCreated": 10}},
                {"ImageProviders": ["self"]}]"#,
        );
        assert!(verdict(&policy, Some(&image(ME, None)), ME, now()).is_trusted());
        let mut old_amazon = image("137112412989", Some("amazon"));
        old_amazon.creation_date = Some("2025-01-01T00:00:00.000Z".into());
        let v = verdict(&policy, Some(&old_amazon), ME, now());
        assert_eq!(
            reasons(&v),
            [
                "criterion 1: image created 2025-01-01T00:00:00Z is older than the 10 days allowed",
                "criterion 2: owner 137112412989 (owner alias amazon) is not a trusted provider (trusted: self)",
            ]
        );
        // The owner is trusted by criterion 1: only the age is wrong, a medium alert.
        assert!(matches!(v, Verdict::Untrusted { severity: Severity::Medium, .. }));
    }

    #[test]
    fn times_parse_with_or_without_milliseconds() {
        assert_eq!(parse_time("2024-10-10T00:00:00.000Z"), Some(Utc.with_ymd_and_hms(2024, 10, 10, 0, 0, 0).unwrap()));
        assert_eq!(parse_time("2024-10-10T00:00:00Z"), Some(Utc.with_ymd_and_hms(2024, 10, 10, 0, 0, 0).unwrap()));
        assert_eq!(parse_time("2024-10-10"), None);
    }
}
