//! The trust policy and the verdict on an image: pure functions over plain data.
//!
//! A policy is a list of criteria in the language of EC2's "Allowed AMIs" setting; an image is
//! trusted when it meets every condition of at least one criterion. `TRUSTED_IMAGE_PROVIDERS`
//! is the one-criterion case (providers only). An image whose facts cannot be read (deregistered,
//! or private to another account) is never trusted: its owner cannot be verified.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use crate::alert::Severity;
use crate::aws_words::is_account_id;

/// EC2's limits for Allowed AMIs criteria, kept so that a policy accepted here is one EC2 would
/// accept too.
pub const MAX_CRITERIA: usize = 10;
pub const MAX_PROVIDERS: usize = 200;
pub const MAX_NAMES: usize = 50;
pub const MAX_NAME_LEN: usize = 128;
/// The largest day count EC2 accepts in a date condition.
pub const MAX_DAYS: u32 = i32::MAX as u32;

/// Who may publish a trusted image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Owner alias `amazon` (Amazon's own images and verified providers').
    Amazon,
    /// Owner alias `aws-marketplace`.
    AwsMarketplace,
    /// Owner alias `aws-backup-vault`.
    AwsBackupVault,
    /// The account the instance runs in (`self`; Allowed AMIs spells it `none`).
    ThisAccount,
    /// A 12-digit account id, matched on the image's owner id only.
    Account(String),
}

impl Provider {
    /// Parses one provider word: an alias keyword, `self` or a 12-digit account id.
    pub fn parse(word: &str) -> Result<Self, String> {
        match word {
            "amazon" => Ok(Self::Amazon),
            "aws-marketplace" => Ok(Self::AwsMarketplace),
            "aws-backup-vault" => Ok(Self::AwsBackupVault),
            "self" => Ok(Self::ThisAccount),
            id if is_account_id(id) => Ok(Self::Account(id.to_string())),
            other => Err(format!(
                "{other:?} is not a provider: expected amazon, aws-marketplace, aws-backup-vault, self or a 12-digit account id"
            )),
        }
    }

    /// Whether an image owned by `owner_id` (alias `owner_alias`) comes from this provider. An
    /// alias keyword looks at the alias only and an account id at the owner id only: an account
    /// cannot become `amazon` by id, and Amazon's images are not trusted by listing one of its ids.
    pub fn matches(&self, owner_id: &str, owner_alias: Option<&str>, this_account: &str) -> bool {
        match self {
            Self::Amazon => owner_alias == Some("amazon"),
            Self::AwsMarketplace => owner_alias == Some("aws-marketplace"),
            Self::AwsBackupVault => owner_alias == Some("aws-backup-vault"),
            Self::ThisAccount => !owner_id.is_empty() && owner_id == this_account,
            Self::Account(id) => !owner_id.is_empty() && owner_id == id,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Amazon => f.write_str("amazon"),
            Self::AwsMarketplace => f.write_str("aws-marketplace"),
            Self::AwsBackupVault => f.write_str("aws-backup-vault"),
            Self::ThisAccount => f.write_str("self"),
            Self::Account(id) => f.write_str(id),
        }
    }
}

/// One Allowed AMIs criterion: an image meets it when it meets every condition that is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Criterion {
    pub providers: Option<Vec<Provider>>,
    /// Image name patterns, `*` and `?` wildcards, case-sensitive.
    pub names: Option<Vec<String>>,
    /// `CreationDateCondition.MaximumDaysSinceCreated`.
    pub max_days_since_created: Option<u32>,
    /// `DeprecationTimeCondition.MaximumDaysSinceDeprecated`.
    pub max_days_since_deprecated: Option<u32>,
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(providers) = &self.providers {
            parts.push(format!("providers {}", join(providers)));
        }
        if let Some(names) = &self.names {
            parts.push(format!("names {}", quoted(names)));
        }
        if let Some(days) = self.max_days_since_created {
            parts.push(format!("created at most {days} days ago"));
        }
        if let Some(days) = self.max_days_since_deprecated {
            parts.push(if days == 0 {
                "not deprecated".to_string()
            } else {
                format!("deprecated less than {days} days ago")
            });
        }
        f.write_str(&parts.join("; "))
    }
}

/// Where the policy came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    TrustedImageProviders,
    AllowedImagesCriteria,
    /// `TRUST_POLICY_SOURCE=account`: the account's own EC2 Allowed AMIs settings, read at init.
    /// Where EC2 says whether an image is allowed (`ImageAllowed`), EC2's word decides.
    AccountAllowedImages,
}

/// The trust policy: at least one criterion, each with at least one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    criteria: Vec<Criterion>,
    source: PolicySource,
}

/// The default of `TRUSTED_IMAGE_PROVIDERS`.
pub const DEFAULT_TRUSTED_PROVIDERS: &str = "amazon,self";

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            criteria: vec![Criterion {
                providers: Some(vec![Provider::Amazon, Provider::ThisAccount]),
                ..Criterion::default()
            }],
            source: PolicySource::TrustedImageProviders,
        }
    }
}

impl TrustPolicy {
    /// What in the policy is likely a mistake, said at init and in every report: a criterion
    /// without `ImageProviders` trusts an image of that name (or age) from *any* account,
    /// public images included, and a name is trivial to squat. EC2's Allowed AMIs reads it the
    /// same way, so it is kept, not refused.
    pub fn warnings(&self) -> Vec<String> {
        self.criteria
            .iter()
            .enumerate()
            .filter(|(_, c)| c.providers.is_none())
            .map(|(index, c)| {
                format!(
                    "criterion {} ({c}) has no ImageProviders: it trusts a matching image from any account, public ones included; add ImageProviders",
                    index + 1
                )
            })
            .collect()
    }

    /// Whether an image of this owner may be trusted by some criterion, whatever its other
    /// conditions (a criterion without `ImageProviders` trusts any owner). Provenance asks it of
    /// each ancestor: an old or renamed base image is no problem, an untrusted maker is.
    pub fn trusts_owner(&self, owner_id: &str, owner_alias: Option<&str>, this_account: &str) -> bool {
        self.criteria.iter().any(|c| match &c.providers {
            None => true,
            Some(providers) => providers.iter().any(|p| p.matches(owner_id, owner_alias, this_account)),
        })
    }

    /// `TRUSTED_IMAGE_PROVIDERS`: a comma list of provider words. Blank entries, unknown words and
    /// more than 200 providers are errors; duplicates are dropped.
    pub fn from_provider_list(list: &str) -> Result<Self, String> {
        let mut providers: Vec<Provider> = Vec::new();
        for (index, word) in list.split(',').map(str::trim).enumerate() {
            if word.is_empty() {
                return Err(format!("entry {} is empty", index + 1));
            }
            let provider = Provider::parse(word)?;
            if !providers.contains(&provider) {
                providers.push(provider);
            }
        }
        if providers.len() > MAX_PROVIDERS {
            return Err(format!("{} providers: at most {MAX_PROVIDERS}", providers.len()));
        }
        Ok(Self {
            criteria: vec![Criterion { providers: Some(providers), ..Criterion::default() }],
            source: PolicySource::TrustedImageProviders,
        })
    }

    /// `ALLOWED_IMAGES_CRITERIA`: a JSON list of criteria, or the `{"ImageCriteria": [...]}`
    /// object that `aws ec2 get-allowed-images-settings` prints. Every field is checked; a field
    /// amiguard does not know is an error rather than a condition silently ignored (ignoring one
    /// would trust more than the author meant).
    pub fn from_criteria_json(json: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let list = match value {
            serde_json::Value::Array(list) => list,
            serde_json::Value::Object(mut object) => {
                if let Some(key) =
                    object.keys().find(|k| !["ImageCriteria", "State", "ManagedBy"].contains(&k.as_str()))
                {
                    return Err(format!(
                        "unknown field `{key}`: expected a list of criteria or an object with ImageCriteria"
                    ));
                }
                match object.remove("ImageCriteria") {
                    Some(serde_json::Value::Array(list)) => list,
                    Some(_) => return Err("ImageCriteria must be a list".to_string()),
                    None => return Err("the object has no ImageCriteria list".to_string()),
                }
            }
            _ => return Err("expected a list of criteria".to_string()),
        };
        if list.is_empty() {
            return Err("the list of criteria is empty: it would trust no image at all".to_string());
        }
        if list.len() > MAX_CRITERIA {
            return Err(format!("{} criteria: at most {MAX_CRITERIA}", list.len()));
        }
        let criteria = list
            .into_iter()
            .enumerate()
            .map(|(index, value)| parse_criterion(value).map_err(|e| format!("criterion {}: {e}", index + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let total_providers: usize = criteria.iter().filter_map(|c| c.providers.as_ref()).map(Vec::len).sum();
        if total_providers > MAX_PROVIDERS {
            return Err(format!("{total_providers} providers in all: at most {MAX_PROVIDERS}"));
        }
        Ok(Self { criteria, source: PolicySource::AllowedImagesCriteria })
    }

    /// `TRUST_POLICY_SOURCE=account`: the criteria `GetAllowedImagesSettings` answered, read with
    /// the same parser (a condition amiguard cannot evaluate is refused, never ignored). Only
    /// `enabled` and `audit-mode` settings are a policy: `disabled` trusts nothing and says so.
    pub fn from_account_settings(state: &str, criteria: serde_json::Value) -> Result<Self, String> {
        if !matches!(state, "enabled" | "audit-mode") {
            return Err(format!(
                "the account's Allowed AMIs settings are {state:?}: there is no policy to read (enable them, or audit-mode, or set TRUST_POLICY_SOURCE=env)"
            ));
        }
        let policy = Self::from_criteria_json(&criteria.to_string())
            .map_err(|e| format!("the account's Allowed AMIs criteria ({state}): {e}"))?;
        Ok(Self { source: PolicySource::AccountAllowedImages, ..policy })
    }

    /// EC2's `ImageAllowed` decides where EC2 gives it (the policy is the account's own).
    pub fn defers_to_ec2(&self) -> bool {
        self.source == PolicySource::AccountAllowedImages
    }

    pub fn criteria(&self) -> &[Criterion] {
        &self.criteria
    }

    pub fn source(&self) -> PolicySource {
        self.source
    }
}

impl fmt::Display for TrustPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.source, self.criteria.as_slice()) {
            (PolicySource::TrustedImageProviders, [only]) => {
                write!(f, "trusted image providers: {}", only.providers.as_deref().map(join).unwrap_or_default())
            }
            (_, criteria) => {
                let parts: Vec<String> =
                    criteria.iter().enumerate().map(|(i, c)| format!("criterion {}: {c}", i + 1)).collect();
                let from = if self.source == PolicySource::AccountAllowedImages {
                    "the account's EC2 Allowed AMIs settings"
                } else {
                    "Allowed AMIs criteria"
                };
                write!(f, "{from}: {}", parts.join(" | "))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawCriterion {
    image_providers: Option<Vec<String>>,
    image_names: Option<Vec<String>>,
    creation_date_condition: Option<RawCreationDateCondition>,
    deprecation_time_condition: Option<RawDeprecationTimeCondition>,
    /// Known to EC2 but not judged by amiguard: refused by name rather than ignored.
    marketplace_product_codes: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawCreationDateCondition {
    maximum_days_since_created: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawDeprecationTimeCondition {
    maximum_days_since_deprecated: u32,
}

fn parse_criterion(value: serde_json::Value) -> Result<Criterion, String> {
    let raw: RawCriterion = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if raw.marketplace_product_codes.is_some() {
        return Err(
            "MarketplaceProductCodes is not supported by amiguard: use ImageProviders (aws-marketplace)".to_string()
        );
    }
    let providers = raw.image_providers.map(parse_criterion_providers).transpose()?;
    let names = raw.image_names.map(check_names).transpose()?;
    let max_days_since_created = raw.creation_date_condition.map(|c| c.maximum_days_since_created);
    let max_days_since_deprecated = raw.deprecation_time_condition.map(|c| c.maximum_days_since_deprecated);
    for (field, days) in
        [("MaximumDaysSinceCreated", max_days_since_created), ("MaximumDaysSinceDeprecated", max_days_since_deprecated)]
    {
        if days.is_some_and(|d| d > MAX_DAYS) {
            return Err(format!("{field} must be from 0 to {MAX_DAYS}"));
        }
    }
    let criterion = Criterion { providers, names, max_days_since_created, max_days_since_deprecated };
    if criterion == Criterion::default() {
        return Err("it has no condition, so it would trust every image".to_string());
    }
    Ok(criterion)
}

/// Allowed AMIs providers: the `TRUSTED_IMAGE_PROVIDERS` words, plus EC2's `none` (this account
/// only, and then alone).
fn parse_criterion_providers(words: Vec<String>) -> Result<Vec<Provider>, String> {
    if words.is_empty() {
        return Err("ImageProviders is empty".to_string());
    }
    if words.len() > MAX_PROVIDERS {
        return Err(format!("ImageProviders has {} values: at most {MAX_PROVIDERS}", words.len()));
    }
    if words.iter().any(|w| w == "none") {
        return if words.len() == 1 {
            Ok(vec![Provider::ThisAccount])
        } else {
            Err("ImageProviders: none allows this account only and must be the only value".to_string())
        };
    }
    let mut providers = Vec::new();
    for word in &words {
        let provider = Provider::parse(word).map_err(|e| format!("ImageProviders: {e}"))?;
        if !providers.contains(&provider) {
            providers.push(provider);
        }
    }
    Ok(providers)
}

/// The characters EC2 allows in an Allowed AMIs image name (AMI names use the same, less the
/// wildcards): anything else can never match and is a typo.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "()[]./-'@_*? ".contains(c)
}

fn check_names(names: Vec<String>) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Err("ImageNames is empty".to_string());
    }
    if names.len() > MAX_NAMES {
        return Err(format!("ImageNames has {} values: at most {MAX_NAMES}", names.len()));
    }
    for name in &names {
        let length = name.chars().count();
        if length == 0 || length > MAX_NAME_LEN {
            return Err(format!("ImageNames: {name:?} must be 1 to {MAX_NAME_LEN} characters"));
        }
        if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
            return Err(format!(
                "ImageNames: {name:?} contains {bad:?}: allowed are letters, digits, spaces, ( ) [ ] . / - ' @ _ and the wildcards * ?"
            ));
        }
        if name.contains('?') && length < 3 {
            return Err(format!("ImageNames: {name:?}: a name with ? must be at least 3 characters"));
        }
    }
    Ok(names)
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (empty too) and
/// `?` for exactly one. Case-sensitive, like AMI names. Linear backtracking on the last `*`.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently swallows up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    // Let the `*` swallow one more character and retry after it.
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// What the adapter learned of an image: plain data, timestamps as EC2 writes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageFacts {
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
pub fn verdict(policy: &TrustPolicy, image: Option<&ImageFacts>, this_account: &str, now: DateTime<Utc>) -> Verdict {
    let Some(image) = image else {
        return Verdict::Untrusted {
            reasons: vec![Reason { criterion: None, problem: Problem::ImageNotVisible }],
            severity: Severity::High,
        };
    };
    let numbered = policy.criteria.len() > 1;
    let mut reasons = Vec::new();
    let mut owner_trusted_somewhere = false;
    for (index, criterion) in policy.criteria.iter().enumerate() {
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
    image: &ImageFacts,
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

fn join(providers: &[Provider]) -> String {
    providers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn quoted(items: &[String]) -> String {
    items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {

    #[test]
    fn the_accounts_allowed_images_settings_are_a_policy_when_enabled_or_auditing() {
        let criteria = serde_json::json!([{"ImageProviders": ["amazon", "123456789012"]}]);
        for state in ["enabled", "audit-mode"] {
            let policy = TrustPolicy::from_account_settings(state, criteria.clone()).unwrap();
            assert!(policy.defers_to_ec2());
            assert_eq!(policy.criteria().len(), 1);
            assert!(policy.to_string().starts_with("the account's EC2 Allowed AMIs settings"), "{policy}");
        }
        let disabled = TrustPolicy::from_account_settings("disabled", criteria).unwrap_err();
        assert!(disabled.contains("\"disabled\""), "{disabled}");
        // A condition amiguard cannot evaluate is refused, never ignored (it would trust more).
        let codes = serde_json::json!([{"ImageProviders": ["amazon"], "MarketplaceProductCodes": ["abc"]}]);
        assert!(TrustPolicy::from_account_settings("enabled", codes).is_err());
        assert!(!TrustPolicy::default().defers_to_ec2());
    }

    #[test]
    fn a_criterion_without_image_providers_is_warned_about_and_kept() {
        let policy =
            TrustPolicy::from_criteria_json(r#"[{"ImageNames": ["al2023-ami-*"]}, {"ImageProviders": ["amazon"]}]"#)
                .unwrap();
        let warnings = policy.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("criterion 1 (names \"al2023-ami-*\")") && warnings[0].contains("ImageProviders"),
            "{warnings:?}"
        );
        assert!(TrustPolicy::default().warnings().is_empty());
    }

    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const ME: &str = "123456789012";
    const VENDOR: &str = "309956199498";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap()
    }

    fn image(owner_id: &str, alias: Option<&str>) -> ImageFacts {
        ImageFacts {
            image_id: "ami-0123456789abcdef0".into(),
            owner_id: owner_id.into(),
            owner_alias: alias.map(str::to_string),
            name: Some("al2023-ami-2023.6-x86_64".into()),
            creation_date: Some("2026-01-01T12:00:00.000Z".into()),
            ..ImageFacts::default()
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

    #[test]
    fn provider_list_syntax() {
        let policy = TrustPolicy::from_provider_list(" amazon , 111122223333,self,amazon ").unwrap();
        assert_eq!(
            policy.criteria()[0].providers.as_deref().unwrap(),
            [Provider::Amazon, Provider::Account("111122223333".into()), Provider::ThisAccount]
        );
        assert_eq!(policy.to_string(), "trusted image providers: amazon, 111122223333, self");
        for bad in ["", "amazon,", "Amazon", "12345678901", "1234567890123", "none", "amazon;self", "12345678901a"] {
            assert!(TrustPolicy::from_provider_list(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(TrustPolicy::from_provider_list("amazon,,self").unwrap_err(), "entry 2 is empty");
        let too_many: Vec<String> = (0..201).map(|i| format!("{i:012}")).collect();
        assert!(TrustPolicy::from_provider_list(&too_many.join(",")).unwrap_err().contains("at most 200"));
    }

    // ---- criteria syntax ----

    #[test]
    fn criteria_accept_a_list_or_the_settings_object() {
        let list = criteria(r#"[{"ImageProviders": ["amazon"]}, {"ImageNames": ["golden-*"]}]"#);
        assert_eq!(list.criteria().len(), 2);
        let settings = criteria(r#"{"State": "enabled", "ImageCriteria": [{"ImageProviders": ["amazon"]}]}"#);
        assert_eq!(settings.criteria()[0].providers.as_deref().unwrap(), [Provider::Amazon]);
        let full = criteria(
            r#"[{"ImageProviders": ["amazon", "123456789012"], "ImageNames": ["al2023-*"],
                 "CreationDateCondition": {"MaximumDaysSinceCreated": 300},
                 "DeprecationTimeCondition": {"MaximumDaysSinceDeprecated": 0}}]"#,
        );
        assert_eq!(
            full.criteria()[0],
            Criterion {
                providers: Some(vec![Provider::Amazon, Provider::Account("123456789012".into())]),
                names: Some(vec!["al2023-*".into()]),
                max_days_since_created: Some(300),
                max_days_since_deprecated: Some(0),
            }
        );
        assert_eq!(
            full.to_string(),
            "Allowed AMIs criteria: criterion 1: providers amazon, 123456789012; names \"al2023-*\"; \
             created at most 300 days ago; not deprecated"
        );
    }

    #[test]
    fn none_means_this_account_and_stands_alone() {
        let policy = criteria(r#"[{"ImageProviders": ["none"]}]"#);
        assert_eq!(policy.criteria()[0].providers.as_deref().unwrap(), [Provider::ThisAccount]);
        let err = TrustPolicy::from_criteria_json(r#"[{"ImageProviders": ["none", "amazon"]}]"#).unwrap_err();
        assert!(err.contains("must be the only value"), "{err}");
    }

    #[test]
    fn criteria_errors_name_the_criterion_and_the_problem() {
        let cases = [
            ("", "not JSON"),
            ("{}", "no ImageCriteria"),
            (r#"{"ImageCriteria": {}}"#, "must be a list"),
            (r#"{"Criteria": []}"#, "unknown field `Criteria`"),
            ("5", "expected a list"),
            ("[]", "empty"),
            ("[{}]", "criterion 1: it has no condition"),
            (r#"[{"ImageProviders": ["amazon"]}, {"ImageName": ["x"]}]"#, "criterion 2: unknown field `ImageName`"),
            (r#"[{"ImageProviders": []}]"#, "ImageProviders is empty"),
            (r#"[{"ImageProviders": ["amzon"]}]"#, "\"amzon\" is not a provider"),
            (r#"[{"ImageProviders": "amazon"}]"#, "invalid type"),
            (r#"[{"ImageNames": []}]"#, "ImageNames is empty"),
            (r#"[{"ImageNames": [""]}]"#, "1 to 128 characters"),
            (r#"[{"ImageNames": ["a,b"]}]"#, "contains ','"),
            (r#"[{"ImageNames": ["a?"]}]"#, "at least 3 characters"),
            (r#"[{"CreationDateCondition": {"MaximumDaysSinceCreated": -1}}]"#, "invalid value"),
            (r#"[{"CreationDateCondition": {"MaximumDaysSinceCreated": 2147483648}}]"#, "from 0 to 2147483647"),
            (r#"[{"CreationDateCondition": {}}]"#, "missing field `MaximumDaysSinceCreated`"),
            (r#"[{"DeprecationTimeCondition": {"MaximumDaysSinceDeprecated": "3"}}]"#, "invalid type"),
            (r#"[{"MarketplaceProductCodes": ["abc"]}]"#, "MarketplaceProductCodes is not supported"),
        ];
        for (json, expected) in cases {
            let err = TrustPolicy::from_criteria_json(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let eleven = format!("[{}]", [r#"{"ImageProviders": ["amazon"]}"#; 11].join(","));
        assert!(TrustPolicy::from_criteria_json(&eleven).unwrap_err().contains("at most 10"));
        let long = format!(r#"[{{"ImageNames": ["{}"]}}]"#, "a".repeat(129));
        assert!(TrustPolicy::from_criteria_json(&long).is_err());
        let ok =
            format!(r#"[{{"ImageNames": ["{}", "Golden (v1) [x86_64] o'brien@team_1.2/3 *?"]}}]"#, "a".repeat(128));
        assert!(TrustPolicy::from_criteria_json(&ok).is_ok());
    }

    // ---- wildcards ----

    #[test]
    fn wildcards() {
        assert!(wildcard_match("al2023-ami-*", "al2023-ami-2023.6-x86_64"));
        assert!(!wildcard_match("al2023-ami-*", "xal2023-ami-2023"));
        assert!(wildcard_match("*-x86_64", "al2023-x86_64"));
        assert!(!wildcard_match("*-x86_64", "al2023-x86_64-minimal"));
        assert!(wildcard_match("RHEL-9.?.0*", "RHEL-9.4.0_HVM"));
        assert!(!wildcard_match("RHEL-9.?.0*", "RHEL-9.10.0_HVM"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(wildcard_match("a*b*c", "abc"));
        assert!(!wildcard_match("a*b*c", "acb"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("?", ""));
        assert!(!wildcard_match("", "a"));
        assert!(wildcard_match("", ""));
        assert!(!wildcard_match("Golden", "golden"), "case-sensitive");
        assert!(wildcard_match("a**b", "ab"));
        assert!(wildcard_match("??é", "abé"), "characters, not bytes");
    }

    /// A plainly correct (exponential) matcher to check the fast one against.
    fn reference_match(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| reference_match(rest, &text[skip..])),
            Some((p, rest)) => text
                .split_first()
                .is_some_and(|(t, text_rest)| (*p == '?' || p == t) && reference_match(rest, text_rest)),
        }
    }

    proptest! {
        #[test]
        fn wildcard_match_agrees_with_the_reference(pattern in "[ab*?]{0,8}", text in "[ab]{0,10}") {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            prop_assert_eq!(wildcard_match(&pattern, &text), reference_match(&p, &t));
        }

        #[test]
        fn a_name_matches_itself_and_its_wildcarded_forms(name in "[A-Za-z0-9._-]{1,40}", cut in 0usize..40, q in 0usize..40) {
            prop_assert!(wildcard_match(&name, &name));
            let chars: Vec<char> = name.chars().collect();
            let cut = cut.min(chars.len());
            let prefix: String = chars[..cut].iter().collect();
            let suffix: String = chars[cut..].iter().collect();
            let prefix_star = format!("{prefix}*");
            let star_suffix = format!("*{suffix}");
            prop_assert!(wildcard_match(&prefix_star, &name));
            prop_assert!(wildcard_match(&star_suffix, &name));
            let mut one = chars.clone();
            let q = q % one.len();
            one[q] = '?';
            prop_assert!(wildcard_match(&one.iter().collect::<String>(), &name));
            // Without wildcards a pattern matches only the very same name.
            let other = format!("{name}x");
            prop_assert!(!wildcard_match(&name, &other));
        }

        #[test]
        fn an_account_provider_ignores_the_alias_and_an_alias_provider_ignores_the_id(
            owner in "[0-9]{12}", listed in "[0-9]{12}", alias in proptest::option::of("amazon|aws-marketplace|aws-backup-vault|other"),
        ) {
            let account = Provider::Account(listed.clone());
            prop_assert_eq!(account.matches(&owner, alias.as_deref(), ME), owner == listed);
            for (provider, name) in [(Provider::Amazon, "amazon"), (Provider::AwsMarketplace, "aws-marketplace"), (Provider::AwsBackupVault, "aws-backup-vault")] {
                prop_assert_eq!(provider.matches(&owner, alias.as_deref(), ME), alias.as_deref() == Some(name));
            }
            prop_assert_eq!(Provider::ThisAccount.matches(&owner, alias.as_deref(), &listed), owner == listed);
        }

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
            let image = ImageFacts {
                image_id: "ami-1".into(),
                owner_id: owner,
                owner_alias: alias,
                name: Some(name),
                creation_date: Some(rfc3339(&(now() - TimeDelta::days(age_days)))),
                deprecation_time: deprecated_days.map(|d| rfc3339(&(now() - TimeDelta::days(d)))),
                ..ImageFacts::default()
            };
            let policy = TrustPolicy { criteria: criteria.clone(), source: PolicySource::AllowedImagesCriteria };
            let any_clean = criteria.iter().any(|c| criterion_problems(c, &image, ME, now()).is_empty());
            let v = verdict(&policy, Some(&image), ME, now());
            prop_assert_eq!(v.is_trusted(), any_clean);
            if let Verdict::Untrusted { reasons, .. } = &v {
                prop_assert!(reasons.len() >= criteria.len(), "every criterion says why it failed");
            }
            // Adding a criterion never makes a trusted image untrusted.
            let mut wider = criteria.clone();
            wider.push(Criterion { names: Some(vec!["nothing-matches-this".into()]), ..Criterion::default() });
            let wider = TrustPolicy { criteria: wider, source: PolicySource::AllowedImagesCriteria };
            if v.is_trusted() {
                prop_assert!(verdict(&wider, Some(&image), ME, now()).is_trusted());
            }
        }

        #[test]
        fn huge_day_counts_never_panic_and_allow_everything(days in (i32::MAX as u32 - 1000)..=MAX_DAYS) {
            let policy = TrustPolicy {
                criteria: vec![Criterion { max_days_since_created: Some(days), max_days_since_deprecated: Some(days), ..Criterion::default() }],
                source: PolicySource::AllowedImagesCriteria,
            };
            let mut old = image(VENDOR, None);
            old.creation_date = Some("1970-01-01T00:00:00Z".into());
            old.deprecation_time = Some("1970-01-02T00:00:00Z".into());
            prop_assert!(verdict(&policy, Some(&old), ME, now()).is_trusted());
        }
    }

    // ---- ages at the boundary ----

    fn aged(created: DateTime<Utc>, deprecated: Option<DateTime<Utc>>) -> ImageFacts {
        ImageFacts {
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
