//! The function's settings, from environment variables read once at init: a bad value stops the
//! function there, with a message naming the variable and what it accepts.

use amiguard::config::{self, ConfigError, VarSource};
use amiguard::recycle_bin::RecycleBin;
use amiguard::tags;
use serde::Serialize;

use crate::core::SnapshotScope;

/// Every environment variable snapshot-on-stop reads: [`Config::from_env`]'s, and `LEDGER_TABLE`
/// (`amiguard::ledger::table_name`, read by `main`).
pub const VARIABLES: &[&str] = &[
    "SNAPSHOT_SCOPE",
    "KEEP_LAST",
    "DRY_RUN",
    "PROTECT_TAG",
    "KEEP_AFTER_TERMINATION",
    "LEDGER_TABLE",
    "ALERT_TOPIC_ARN",
    "PROTECT_NEWEST",
    "RECYCLE_BIN_RETENTION_DAYS",
    amiguard::findings::SECURITY_HUB_FINDINGS,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub scope: SnapshotScope,
    pub keep_last: usize,
    pub dry_run: bool,
    /// `PROTECT_TAG` (default `amiguard:keep`): an image carrying it, or one of whose snapshots
    /// does (any letter case, any value), is never retired and not counted in `KEEP_LAST`.
    pub protect_tag: String,
    /// `KEEP_AFTER_TERMINATION` (`all` by default): what retention keeps of a terminated
    /// instance's images.
    pub keep_after_termination: KeepAfterTermination,
    /// `ALERT_TOPIC_ARN` (optional; the stack's alert topic): where an image that failed is
    /// alerted, once.
    pub alert_topic_arn: Option<String>,
    /// `PROTECT_NEWEST` (default false): the newest available image of each instance gets EC2's
    /// own deregistration protection, taken off again when a newer one is available.
    pub protect_newest: bool,
    /// `RECYCLE_BIN_RETENTION_DAYS` (default 0): what retention retires is tagged for the stack's
    /// Recycle Bin rules first, and restorable for that long.
    pub recycle_bin: RecycleBin,
    /// `SECURITY_HUB_FINDINGS` (default true): an image that failed is also a finding in the
    /// account's own Security Hub.
    pub security_hub_findings: bool,
}

/// What happens to a terminated instance's images (no stop of it will ever run retention again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepAfterTermination {
    /// Every image stays (and is billed) until a person deregisters it.
    All,
    /// The newest N available, unprotected images stay; the rest are retired as on a stop.
    Newest(usize),
}

impl KeepAfterTermination {
    fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        const EXPECTED: &str = "all, or a number from 1 to 1000";
        match config::optional(source, "KEEP_AFTER_TERMINATION") {
            None => Ok(Self::All),
            Some(value) if value.eq_ignore_ascii_case("all") => Ok(Self::All),
            Some(value) => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(Self::Newest(n)),
                _ => Err(ConfigError::new("KEEP_AFTER_TERMINATION", value, EXPECTED)),
            },
        }
    }
}

impl Default for Config {
    /// What an unset environment gives.
    fn default() -> Self {
        Self {
            scope: SnapshotScope::Tagged,
            keep_last: 3,
            dry_run: false,
            protect_tag: tags::KEEP.to_string(),
            keep_after_termination: KeepAfterTermination::All,
            alert_topic_arn: None,
            protect_newest: false,
            recycle_bin: RecycleBin::default(),
            security_hub_findings: true,
        }
    }
}

impl Config {
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        Ok(Self {
            scope: config::choice_var(
                source,
                "SNAPSHOT_SCOPE",
                SnapshotScope::Tagged,
                &[("tagged", SnapshotScope::Tagged), ("all", SnapshotScope::All)],
            )?,
            keep_last: config::number_var(source, "KEEP_LAST", 3usize, 1, 1000)?,
            dry_run: config::bool_var(source, "DRY_RUN", false)?,
            protect_tag: config::protect_tag_var(source)?,
            keep_after_termination: KeepAfterTermination::from_env(source)?,
            alert_topic_arn: config::optional_topic_arn_var(source, "ALERT_TOPIC_ARN")?,
            protect_newest: config::bool_var(source, "PROTECT_NEWEST", false)?,
            recycle_bin: RecycleBin::from_env(source)?,
            security_hub_findings: config::bool_var(source, amiguard::findings::SECURITY_HUB_FINDINGS, true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    type Env = &'static [(&'static str, &'static str)];

    fn from(pairs: Env) -> Result<Config, ConfigError> {
        Config::from_env(&|name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn defaults_are_tagged_keep_three_and_act() {
        assert_eq!(from(&[]).unwrap(), Config::default());
        assert_eq!(Config::default().protect_tag, "amiguard:keep");
    }

    #[test]
    fn reads_every_setting() {
        let env = &[
            ("SNAPSHOT_SCOPE", "all"),
            ("KEEP_LAST", "7"),
            ("DRY_RUN", "true"),
            ("PROTECT_TAG", "legal-hold"),
            ("KEEP_AFTER_TERMINATION", "2"),
            ("ALERT_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:amiguard-alerts"),
            ("PROTECT_NEWEST", "true"),
            ("RECYCLE_BIN_RETENTION_DAYS", "7"),
            ("SECURITY_HUB_FINDINGS", "false"),
        ];
        let expected = Config {
            scope: SnapshotScope::All,
            keep_last: 7,
            dry_run: true,
            protect_tag: "legal-hold".into(),
            keep_after_termination: KeepAfterTermination::Newest(2),
            alert_topic_arn: Some("arn:aws:sns:us-east-1:123456789012:amiguard-alerts".into()),
            protect_newest: true,
            recycle_bin: RecycleBin::retaining_for(7),
            security_hub_findings: false,
        };
        assert_eq!(from(env).unwrap(), expected);
        let all = from(&[("KEEP_AFTER_TERMINATION", "ALL")]).unwrap();
        assert_eq!(all.keep_after_termination, KeepAfterTermination::All);
    }

    #[test]
    fn invalid_values_name_the_variable_and_what_it_accepts() {
        let cases: [(Env, &str, &str); 9] = [
            (&[("SECURITY_HUB_FINDINGS", "yes")], "SECURITY_HUB_FINDINGS", "true or false"),
            (&[("SNAPSHOT_SCOPE", "some")], "SNAPSHOT_SCOPE", "one of tagged, all"),
            (&[("KEEP_LAST", "0")], "KEEP_LAST", "a number from 1 to 1000"),
            (&[("KEEP_LAST", "three")], "KEEP_LAST", "a number from 1 to 1000"),
            (&[("DRY_RUN", "maybe")], "DRY_RUN", "true or false"),
            (&[("PROTECT_TAG", "aws:keep")], "PROTECT_TAG", "a tag key of 1 to 128 characters, not starting with aws:"),
            (&[("KEEP_AFTER_TERMINATION", "0")], "KEEP_AFTER_TERMINATION", "all, or a number from 1 to 1000"),
            (&[("KEEP_AFTER_TERMINATION", "some")], "KEEP_AFTER_TERMINATION", "all, or a number from 1 to 1000"),
            (
                &[("ALERT_TOPIC_ARN", "amiguard-alerts")],
                "ALERT_TOPIC_ARN",
                "an SNS topic ARN such as arn:aws:sns:us-east-1:123456789012:alerts",
            ),
        ];
        for (env, variable, expected) in cases {
            let err = from(env).unwrap_err();
            assert_eq!((err.variable, err.expected.as_str()), (variable, expected));
            assert!(err.to_string().contains(variable));
        }
    }

    #[test]
    fn variables_are_every_name_the_function_reads() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let recording = |name: &str| -> Option<String> {
            asked.borrow_mut().insert(name.to_string());
            None
        };
        Config::from_env(&recording).unwrap();
        amiguard::ledger::table_name(&recording).unwrap();
        let variables: std::collections::BTreeSet<String> = VARIABLES.iter().map(|v| v.to_string()).collect();
        assert_eq!(asked.into_inner(), variables);
    }
}
