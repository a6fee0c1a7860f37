//! The language of EC2's Allowed AMIs criteria: who may publish an image ([`Provider`]) and the
//! conditions of one [`Criterion`] (providers, names, age, deprecation), parsed and checked as EC2
//! would accept them, and the wildcards of image names ([`wildcard_match`]). Pure.

use std::fmt;

use serde::Deserialize;

use amiguard::aws_words::is_account_id;

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

/// One criterion of an Allowed AMIs JSON list, every field checked.
pub fn parse_criterion(value: serde_json::Value) -> Result<Criterion, String> {
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

/// Providers as messages list them: `amazon, self`.
pub(crate) fn join(providers: &[Provider]) -> String {
    providers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Names as messages list them, each quoted.
pub(crate) fn quoted(items: &[String]) -> String {
    items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ME: &str = "123456789012";

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
    }
}
