//! The trust policy: pure data, from `TRUSTED_IMAGE_PROVIDERS`, `ALLOWED_IMAGES_CRITERIA` or the
//! account's own Allowed AMIs settings.
//!
//! A policy is a list of criteria in the language of EC2's "Allowed AMIs" setting; an image is
//! trusted when it meets every condition of at least one criterion. `TRUSTED_IMAGE_PROVIDERS`
//! is the one-criterion case (providers only). The language of the criteria is
//! [`super::criteria`]'s; the verdict on an image is [`super::verdict`]'s.

use std::fmt;

use super::criteria::{self, join, Criterion, Provider, MAX_CRITERIA, MAX_PROVIDERS};

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
            .map(|(index, value)| criteria::parse_criterion(value).map_err(|e| format!("criterion {}: {e}", index + 1)))
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

    /// A policy of exactly these criteria, unchecked: the verdict's tests judge by any.
    #[cfg(test)]
    pub(crate) fn of_criteria(criteria: Vec<Criterion>) -> Self {
        Self { criteria, source: PolicySource::AllowedImagesCriteria }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn criteria(json: &str) -> TrustPolicy {
        TrustPolicy::from_criteria_json(json).unwrap()
    }

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
}
