//! The function's configuration: every environment variable it reads ([`VARIABLES`]), validated
//! whole at init; a bad value is an error naming the variable and what it accepts.

use amiguard::config::{self, ConfigError, VarSource};

use crate::core::enforce::Enforcement;
use crate::core::policy::{self, TrustPolicy};

pub const TRUSTED_IMAGE_PROVIDERS: &str = "TRUSTED_IMAGE_PROVIDERS";
pub const ALLOWED_IMAGES_CRITERIA: &str = "ALLOWED_IMAGES_CRITERIA";
pub const TRUST_POLICY_SOURCE: &str = "TRUST_POLICY_SOURCE";
pub const ALERT_TOPIC_ARN: &str = "ALERT_TOPIC_ARN";
pub const ENFORCEMENT: &str = "ENFORCEMENT";
pub const CHECK_PROVENANCE: &str = "CHECK_PROVENANCE";
pub const ENFORCE_UNVERIFIABLE: &str = "ENFORCE_UNVERIFIABLE";
pub const FOLD_LAUNCH_ALERTS: &str = "FOLD_LAUNCH_ALERTS";
pub const DRY_RUN: &str = "DRY_RUN";
pub use amiguard::findings::SECURITY_HUB_FINDINGS;

/// Every environment variable the function reads: [`Config::from_env`]'s, and `LEDGER_TABLE`
/// (`amiguard::ledger::table_name`, read by `main`).
pub const VARIABLES: &[&str] = &[
    TRUSTED_IMAGE_PROVIDERS,
    ALLOWED_IMAGES_CRITERIA,
    TRUST_POLICY_SOURCE,
    ALERT_TOPIC_ARN,
    ENFORCEMENT,
    ENFORCE_UNVERIFIABLE,
    CHECK_PROVENANCE,
    FOLD_LAUNCH_ALERTS,
    DRY_RUN,
    SECURITY_HUB_FINDINGS,
    amiguard::ledger::LEDGER_TABLE,
];

/// The function's configuration, validated whole at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub policy: TrustPolicy,
    pub alert_topic_arn: String,
    pub enforcement: Enforcement,
    /// `ENFORCE_UNVERIFIABLE` (default false): `ENFORCEMENT` also tags and stops on a `medium`
    /// verdict (not proven untrusted: provenance that cannot be verified, a trusted owner's image
    /// failing a name or age condition). By default only a `high` one (an owner or an ancestor's
    /// owner proven untrusted) is enforced; a `medium` one alerts only.
    pub enforce_unverifiable: bool,
    /// `CHECK_PROVENANCE` (default true): an image whose owner is trusted is judged again by the
    /// owners of the images it was copied or built from.
    pub check_provenance: bool,
    /// `TRUST_POLICY_SOURCE=account`: `policy` is to be read from the account's own EC2 Allowed
    /// AMIs settings at init ([`Config::with_account_policy`]); `env` (the default) reads it from
    /// the two variables.
    pub policy_from_account: bool,
    /// `FOLD_LAUNCH_ALERTS` (default false: only the audit's digest names folded instances, so
    /// folding is on only where an audit is known to run; the stack sets it so).
    pub fold_launch_alerts: bool,
    /// `DRY_RUN` (default false): judge and report everything, with what a real run would do;
    /// publish nothing, tag nothing, stop nothing, write nothing to the ledger (it is read: a
    /// sent alert is reported as not repeated).
    pub dry_run: bool,
    /// `SECURITY_HUB_FINDINGS` (default true): every untrusted instance is also a finding in the
    /// account's own Security Hub, archived once the audit verifies it is over.
    pub security_hub_findings: bool,
    /// Said in every report: why the policy is not the one configured (the account's settings
    /// could not be used, so the default judges).
    pub policy_note: Option<String>,
}

impl Config {
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        let (policy, policy_from_account) = trust_policy(source)?;
        let alert_topic_arn = config::optional(source, ALERT_TOPIC_ARN)
            .ok_or_else(|| ConfigError::new(ALERT_TOPIC_ARN, "", "the ARN of the SNS topic for alerts (required)"))?;
        if !amiguard::aws_words::is_sns_topic_arn(&alert_topic_arn) {
            return Err(ConfigError::new(
                ALERT_TOPIC_ARN,
                alert_topic_arn,
                "an SNS topic ARN: arn:<partition>:sns:<region>:<12-digit account>:<topic name>",
            ));
        }
        let enforcement = config::choice_var(source, ENFORCEMENT, Enforcement::Alert, &Enforcement::CHOICES)?;
        let enforce_unverifiable = config::bool_var(source, ENFORCE_UNVERIFIABLE, false)?;
        let check_provenance = config::bool_var(source, CHECK_PROVENANCE, true)?;
        let fold_launch_alerts = config::bool_var(source, FOLD_LAUNCH_ALERTS, false)?;
        let dry_run = config::bool_var(source, DRY_RUN, false)?;
        let security_hub_findings = config::bool_var(source, SECURITY_HUB_FINDINGS, true)?;
        Ok(Self {
            policy,
            alert_topic_arn,
            enforcement,
            enforce_unverifiable,
            check_provenance,
            policy_from_account,
            fold_launch_alerts,
            dry_run,
            security_hub_findings,
            policy_note: None,
        })
    }

    /// `TRUST_POLICY_SOURCE=account`: the policy is the account's own Allowed AMIs settings
    /// (`state`, `criteria` as `GetAllowedImagesSettings` answered). A setting that is no policy
    /// (`disabled`) or that amiguard cannot evaluate is an init error naming the variable: never
    /// "trust all".
    pub fn with_account_policy(self, state: &str, criteria: serde_json::Value) -> Result<Self, ConfigError> {
        let policy = TrustPolicy::from_account_settings(state, criteria)
            .map_err(|problem| ConfigError::new(TRUST_POLICY_SOURCE, "account", problem))?;
        Ok(Self { policy, ..self })
    }

    /// The account's settings could not be used (`why`): the default policy (`amazon,self`, never
    /// "trust all") judges instead, and every report says so. Alerting goes on: anyone able to
    /// disable the account's Allowed AMIs must not silence amiguard with it.
    pub fn with_default_policy_because(self, why: &str) -> Self {
        Self {
            policy: TrustPolicy::default(),
            policy_note: Some(format!(
                "{TRUST_POLICY_SOURCE}=account: the account's Allowed AMIs settings could not be used ({why}): judged by the default policy ({}) until the function restarts",
                policy::DEFAULT_TRUSTED_PROVIDERS
            )),
            ..self
        }
    }
}

/// The policy the variables set, and whether it is to be read from the account
/// (`TRUST_POLICY_SOURCE=account`; the policy is then the default until [`Config::with_account_policy`]).
fn trust_policy(source: &dyn VarSource) -> Result<(TrustPolicy, bool), ConfigError> {
    let providers = config::optional(source, TRUSTED_IMAGE_PROVIDERS);
    let criteria = config::optional(source, ALLOWED_IMAGES_CRITERIA);
    let policy_from_account =
        config::choice_var(source, TRUST_POLICY_SOURCE, false, &[("env", false), ("account", true)])?;
    if policy_from_account {
        // The account's settings are the whole policy: a second one would leave the reader
        // guessing which rules.
        if let Some((variable, value)) = [(TRUSTED_IMAGE_PROVIDERS, &providers), (ALLOWED_IMAGES_CRITERIA, &criteria)]
            .into_iter()
            .find_map(|(variable, value)| value.clone().map(|v| (variable, v)))
        {
            return Err(ConfigError::new(variable, value, format!("to be unset when {TRUST_POLICY_SOURCE}=account")));
        }
    }
    let policy = match (providers, criteria) {
        // Two policies would leave the reader guessing which one rules: refuse both.
        (Some(_), Some(criteria)) => {
            return Err(ConfigError::new(
                ALLOWED_IMAGES_CRITERIA,
                criteria,
                format!("to be unset when {TRUSTED_IMAGE_PROVIDERS} is set: set one of the two"),
            ))
        }
        (Some(list), None) => TrustPolicy::from_provider_list(&list).map_err(|problem| {
            ConfigError::new(
                TRUSTED_IMAGE_PROVIDERS,
                list.clone(),
                format!(
                    "a comma list of amazon, aws-marketplace, aws-backup-vault, self and 12-digit account ids ({problem})"
                ),
            )
        })?,
        (None, Some(json)) => TrustPolicy::from_criteria_json(&json).map_err(|problem| {
            ConfigError::new(
                ALLOWED_IMAGES_CRITERIA,
                json.clone(),
                format!("a JSON list of EC2 Allowed AMIs criteria ({problem})"),
            )
        })?,
        (None, None) => TrustPolicy::default(),
    };
    Ok((policy, policy_from_account))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:amiguard-alerts";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    // ---- configuration ----

    #[test]
    fn config_defaults() {
        let config = Config::from_env(&env(&[(ALERT_TOPIC_ARN, TOPIC)])).unwrap();
        assert_eq!(config.policy, TrustPolicy::default());
        assert_eq!(config.enforcement, Enforcement::Alert);
        assert_eq!(config.alert_topic_arn, TOPIC);
        assert!(config.check_provenance, "provenance is checked unless turned off");
        assert!(!config.enforce_unverifiable, "only a proven verdict is enforced unless told otherwise");
        assert!(!config.fold_launch_alerts, "no folding unless an audit is known to send the digest");
        assert!(!config.dry_run, "a deployed function acts unless told to only report");
        assert!(config.security_hub_findings, "findings are imported unless turned off");
        // Blank means unset (an empty template parameter).
        let blank = Config::from_env(&env(&[
            (ALERT_TOPIC_ARN, TOPIC),
            (TRUSTED_IMAGE_PROVIDERS, " "),
            (ALLOWED_IMAGES_CRITERIA, ""),
        ]));
        assert_eq!(blank.unwrap().policy, TrustPolicy::default());
    }

    #[test]
    fn config_reads_each_variable() {
        let config = Config::from_env(&env(&[
            (ALERT_TOPIC_ARN, "arn:aws-us-gov:sns:us-gov-west-1:123456789012:alerts.fifo"),
            (TRUSTED_IMAGE_PROVIDERS, "aws-marketplace,111122223333"),
            (ENFORCEMENT, "stop"),
            (ENFORCE_UNVERIFIABLE, "True"),
            ("CHECK_PROVENANCE", "false"),
            ("FOLD_LAUNCH_ALERTS", "true"),
            (DRY_RUN, "TRUE"),
            (SECURITY_HUB_FINDINGS, "false"),
        ]))
        .unwrap();
        assert!(!config.security_hub_findings);
        assert!(config.fold_launch_alerts);
        assert!(config.dry_run);
        assert_eq!(config.policy.to_string(), "trusted image providers: aws-marketplace, 111122223333");
        assert_eq!(config.enforcement, Enforcement::Stop);
        assert!(config.enforce_unverifiable);
        assert!(!config.check_provenance);
        let criteria = Config::from_env(&env(&[
            (ALERT_TOPIC_ARN, TOPIC),
            (ALLOWED_IMAGES_CRITERIA, r#"[{"ImageProviders": ["amazon"], "ImageNames": ["al2023-*"]}]"#),
            (ENFORCEMENT, "tag"),
        ]))
        .unwrap();
        assert_eq!(criteria.policy.criteria().len(), 1);
        assert_eq!(criteria.enforcement, Enforcement::Tag);
    }

    #[test]
    fn config_errors_name_the_variable() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 13] = [
            (&[], ALERT_TOPIC_ARN, "required"),
            (&[(ALERT_TOPIC_ARN, TOPIC), (SECURITY_HUB_FINDINGS, "on")], SECURITY_HUB_FINDINGS, "true or false"),
            (&[(ALERT_TOPIC_ARN, TOPIC), (ENFORCE_UNVERIFIABLE, "sometimes")], ENFORCE_UNVERIFIABLE, "true or false"),
            (&[(ALERT_TOPIC_ARN, TOPIC), (DRY_RUN, "yes")], DRY_RUN, "true or false"),
            (&[(ALERT_TOPIC_ARN, TOPIC), (TRUST_POLICY_SOURCE, "ssm")], TRUST_POLICY_SOURCE, "one of env, account"),
            (
                &[(ALERT_TOPIC_ARN, TOPIC), (TRUST_POLICY_SOURCE, "account"), (TRUSTED_IMAGE_PROVIDERS, "self")],
                TRUSTED_IMAGE_PROVIDERS,
                "unset when TRUST_POLICY_SOURCE=account",
            ),
            (&[(ALERT_TOPIC_ARN, TOPIC), ("CHECK_PROVENANCE", "maybe")], "CHECK_PROVENANCE", "true or false"),
            (&[(ALERT_TOPIC_ARN, "my-topic")], ALERT_TOPIC_ARN, "an SNS topic ARN"),
            (&[(ALERT_TOPIC_ARN, "arn:aws:sqs:us-east-1:123456789012:q")], ALERT_TOPIC_ARN, "an SNS topic ARN"),
            (&[(ALERT_TOPIC_ARN, TOPIC), (ENFORCEMENT, "terminate")], ENFORCEMENT, "one of alert, tag, stop"),
            (
                &[(ALERT_TOPIC_ARN, TOPIC), (TRUSTED_IMAGE_PROVIDERS, "amazon,redhat")],
                TRUSTED_IMAGE_PROVIDERS,
                "\"redhat\" is not a provider",
            ),
            (&[(ALERT_TOPIC_ARN, TOPIC), (ALLOWED_IMAGES_CRITERIA, "[{}]")], ALLOWED_IMAGES_CRITERIA, "no condition"),
            (
                &[
                    (ALERT_TOPIC_ARN, TOPIC),
                    (TRUSTED_IMAGE_PROVIDERS, "amazon,self"),
                    (ALLOWED_IMAGES_CRITERIA, "[{\"ImageProviders\": [\"amazon\"]}]"),
                ],
                ALLOWED_IMAGES_CRITERIA,
                "unset when TRUSTED_IMAGE_PROVIDERS is set",
            ),
        ];
        for (vars, variable, expected) in cases {
            let err = Config::from_env(&env(vars)).unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
        // Both set is an error whatever the values, even identical policies.
        let same = Config::from_env(&env(&[
            (ALERT_TOPIC_ARN, TOPIC),
            (TRUSTED_IMAGE_PROVIDERS, "amazon"),
            (ALLOWED_IMAGES_CRITERIA, "not even json"),
        ]));
        assert_eq!(same.unwrap_err().variable, ALLOWED_IMAGES_CRITERIA);
    }

    #[test]
    fn the_accounts_settings_become_the_policy_or_a_clear_init_error() {
        let config = Config::from_env(&env(&[(ALERT_TOPIC_ARN, TOPIC), (TRUST_POLICY_SOURCE, "account")])).unwrap();
        assert!(config.policy_from_account);
        let criteria = json!([{"ImageProviders": ["amazon"]}]);
        let read = config.clone().with_account_policy("enabled", criteria.clone()).unwrap();
        assert!(read.policy.defers_to_ec2());
        let err = config.clone().with_account_policy("disabled", criteria).unwrap_err();
        assert_eq!(err.variable, TRUST_POLICY_SOURCE);
        assert!(err.to_string().contains("disabled"), "{err}");
        // The handler then judges by the default policy, and says so in every report.
        let fallback = config.with_default_policy_because(&err.to_string());
        assert_eq!(fallback.policy, TrustPolicy::default());
        assert!(fallback.policy_note.as_deref().unwrap().contains("amazon,self"));
    }

    #[test]
    fn variables_are_exactly_what_the_function_reads() {
        let asked = RefCell::new(BTreeSet::new());
        let recording = |name: &str| {
            asked.borrow_mut().insert(name.to_string());
            (name == ALERT_TOPIC_ARN).then(|| TOPIC.to_string())
        };
        Config::from_env(&recording).unwrap();
        amiguard::ledger::table_name(&recording).unwrap();
        let expected: BTreeSet<String> = VARIABLES.iter().map(|v| v.to_string()).collect();
        assert_eq!(asked.into_inner(), expected);
        assert_eq!(VARIABLES.len(), expected.len(), "each once");
    }
}
