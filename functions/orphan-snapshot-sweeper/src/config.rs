//! The sweeper's configuration: every variable validated at init; an invalid value stops the
//! function with a message naming the variable and what it accepts.

use amiguard::config::{bool_var, number_var, optional, protect_tag_var, ConfigError, VarSource};
use amiguard::recycle_bin::RecycleBin;

use crate::core::Stages;

/// Every environment variable the sweeper reads: [`Config::from_env`]'s, and `LEDGER_TABLE`
/// (`amiguard::ledger::table_name`, read by `main`).
pub const VARIABLES: &[&str] = &[
    "DRY_RUN",
    "MIN_AGE_HOURS",
    "MAX_DELETIONS",
    "MAX_DELETE_FRACTION",
    "PROTECT_TAG",
    "REGIONS",
    "AWS_REGION",
    "PRICE_PER_GB_MONTH",
    "REPORT_TOPIC_ARN",
    "RECYCLE_BIN_CHECK",
    "RETIRE_UNUSED_AMIS_AFTER_DAYS",
    "ADOPT_UNWITNESSED_ORPHANS",
    "RECYCLE_BIN_RETENTION_DAYS",
    "LEDGER_READ_ONLY",
    "LEDGER_TABLE",
    "RETIRE_STAGES",
    "RETIRE_DWELL_DAYS",
    "USAGE_REPORT_LAG_DAYS",
    "USAGE_REPORT_TEMPLATE_DEPTH",
    "RETIRE_KEEP_NEWEST",
    "RETIRE_FAMILY_TAG",
    "RETIRE_IMAGE_BUILDER_IMAGES",
    "EXACT_SAVINGS",
    "PARTITIONED_LISTING_ABOVE",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `DRY_RUN` (default true): decide and report everything, change nothing.
    pub dry_run: bool,
    /// `MIN_AGE_HOURS` (default 24): the grace period.
    pub min_age_hours: u32,
    /// `MAX_DELETIONS` (default 500): deletions (and deregistrations) started per invocation,
    /// across regions.
    pub max_deletions: u32,
    /// `MAX_DELETE_FRACTION` (default 0.5): the circuit breaker, per region.
    pub max_delete_fraction: f64,
    /// `PROTECT_TAG` (default `amiguard:keep`): a snapshot or AMI with this tag key is kept.
    pub protect_tag: String,
    /// `REGIONS` (default the function's own `AWS_REGION`), in order, without repeats.
    pub regions: Vec<String>,
    /// `PRICE_PER_GB_MONTH` (default 0.05 USD, EBS standard snapshot storage).
    pub price_per_gb_month: f64,
    /// `REPORT_TOPIC_ARN` (optional): where the summary is published.
    pub report_topic_arn: Option<String>,
    /// `RECYCLE_BIN_CHECK` (default true): keep the snapshots of AMIs in the Recycle Bin.
    pub recycle_bin_check: bool,
    /// `RETIRE_UNUSED_AMIS_AFTER_DAYS` (optional; off when unset).
    pub retire_unused_amis_after_days: Option<u32>,
    /// `ADOPT_UNWITNESSED_ORPHANS` (default false): delete the orphans amiguard never witnessed
    /// (their AMI known only from a description) like the others. For cleaning up what was left
    /// before amiguard was installed, once a person has read a dry run's `unwitnessed` list.
    pub adopt_unwitnessed_orphans: bool,
    /// `RECYCLE_BIN_RETENTION_DAYS` (default 0): the stack's Recycle Bin rules, which exist in
    /// the function's own region (`AWS_REGION`) only.
    pub recycle_bin: RecycleBin,
    /// `AWS_REGION`: where the stack, and so its Recycle Bin rules, are.
    pub home_region: Option<String>,
    /// `LEDGER_READ_ONLY` (default false; only with `DRY_RUN=true`): the ledger is read (the
    /// grace clocks and the last run, as the deployed sweeper keeps them) and never written: no
    /// first sightings, no run summary. For a dry run from outside the stack (`make try`): a
    /// deployed dry run writes, so that its clocks have run when deletion is turned on.
    pub ledger_read_only: bool,
    /// How `RETIRE_UNUSED_AMIS_AFTER_DAYS` retires: its stages and their evidence (issue 22).
    pub staged_retirement: StagedRetirement,
    /// `EXACT_SAVINGS` (default true): what each planned deletion really frees, from the EBS
    /// direct APIs (`ListSnapshotBlocks`, `ListChangedBlocks`: $0.0006 per 1,000 requests);
    /// false: the upper bound only, and no EBS call.
    pub exact_savings: bool,
    /// `PARTITIONED_LISTING_ABOVE` (default 20,000): a region whose last complete pass (the
    /// ledger) listed more snapshots than this is listed in 16 partitions side by side
    /// (`core::partitions`); 0 lists every region so, even one with no pass recorded.
    pub partitioned_listing_above: u64,
}

/// The settings of staged retirement, read (and checked) whether or not retirement is on.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRetirement {
    /// `RETIRE_STAGES` (default `deprecate,disable,deregister`; `deregister`: today's one step).
    pub stages: Stages,
    /// `RETIRE_DWELL_DAYS` (default 14; 0 allowed): the least time between two stages.
    pub dwell_days: u32,
    /// `USAGE_REPORT_LAG_DAYS` (default 3; 0 allowed): how long after a stage a usage report must
    /// be made to be evidence for the next.
    pub lag_days: u32,
    /// `USAGE_REPORT_TEMPLATE_DEPTH` (default 20): the launch-template versions a report reads.
    pub template_depth: u32,
    /// `RETIRE_KEEP_NEWEST` (default 1): the newest images of each family never retired.
    pub keep_newest: u32,
    /// `RETIRE_FAMILY_TAG` (unset: no families by tag): the tag whose value names a family.
    pub family_tag: Option<String>,
    /// `RETIRE_IMAGE_BUILDER_IMAGES` (default false): also retire Image Builder's images.
    pub image_builder_images: bool,
}

impl Default for StagedRetirement {
    fn default() -> Self {
        Self {
            stages: Stages::default(),
            dwell_days: 14,
            lag_days: 3,
            template_depth: 20,
            keep_newest: 1,
            family_tag: None,
            image_builder_images: false,
        }
    }
}

impl StagedRetirement {
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        let stages = match optional(source, "RETIRE_STAGES") {
            None => Stages::default(),
            Some(text) => Stages::parse(&text).ok_or_else(|| {
                ConfigError::new(
                    "RETIRE_STAGES",
                    text.clone(),
                    "deprecate,disable,deregister (the default), deregister (one step), or those verbs in that order ending with deregister",
                )
            })?,
        };
        Ok(Self {
            stages,
            dwell_days: number_var(source, "RETIRE_DWELL_DAYS", 14u32, 0, 3_650)?,
            // A usage report expires 30 days after it is made.
            lag_days: number_var(source, "USAGE_REPORT_LAG_DAYS", 3u32, 0, 29)?,
            template_depth: number_var(source, "USAGE_REPORT_TEMPLATE_DEPTH", 20u32, 1, 10_000)?,
            keep_newest: number_var(source, "RETIRE_KEEP_NEWEST", 1u32, 0, 1_000)?,
            family_tag: family_tag(source)?,
            image_builder_images: bool_var(source, "RETIRE_IMAGE_BUILDER_IMAGES", false)?,
        })
    }
}

/// `RETIRE_FAMILY_TAG`: a tag key EC2 accepts (1-128 characters, not `aws:`).
fn family_tag(source: &dyn VarSource) -> Result<Option<String>, ConfigError> {
    let Some(key) = optional(source, "RETIRE_FAMILY_TAG") else { return Ok(None) };
    if key.chars().count() > 128 || amiguard::tags::is_aws_reserved(&key) {
        return Err(ConfigError::new("RETIRE_FAMILY_TAG", key, "a tag key of 1-128 characters not starting with aws:"));
    }
    Ok(Some(key))
}

pub const DEFAULT_MIN_AGE_HOURS: u32 = 24;
pub const DEFAULT_MAX_DELETIONS: u32 = 500;
pub const DEFAULT_MAX_DELETE_FRACTION: f64 = 0.5;
pub const DEFAULT_PRICE_PER_GB_MONTH: f64 = 0.05;
pub const DEFAULT_PARTITIONED_LISTING_ABOVE: u64 = 20_000;

impl Config {
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        let retire_unused_amis_after_days = match optional(source, "RETIRE_UNUSED_AMIS_AFTER_DAYS") {
            None => None,
            Some(_) => Some(number_var(source, "RETIRE_UNUSED_AMIS_AFTER_DAYS", 0u32, 0, 36_500)?),
        };
        Ok(Self {
            dry_run: bool_var(source, "DRY_RUN", true)?,
            min_age_hours: number_var(source, "MIN_AGE_HOURS", DEFAULT_MIN_AGE_HOURS, 0, 87_600)?,
            max_deletions: number_var(source, "MAX_DELETIONS", DEFAULT_MAX_DELETIONS, 0, 100_000)?,
            max_delete_fraction: number_var(source, "MAX_DELETE_FRACTION", DEFAULT_MAX_DELETE_FRACTION, 0.0, 1.0)?,
            protect_tag: protect_tag_var(source)?,
            regions: regions(source)?,
            price_per_gb_month: number_var(source, "PRICE_PER_GB_MONTH", DEFAULT_PRICE_PER_GB_MONTH, 0.0, 100.0)?,
            report_topic_arn: report_topic_arn(source)?,
            recycle_bin_check: bool_var(source, "RECYCLE_BIN_CHECK", true)?,
            retire_unused_amis_after_days,
            adopt_unwitnessed_orphans: bool_var(source, "ADOPT_UNWITNESSED_ORPHANS", false)?,
            recycle_bin: RecycleBin::from_env(source)?,
            home_region: optional(source, "AWS_REGION"),
            ledger_read_only: ledger_read_only(source)?,
            staged_retirement: StagedRetirement::from_env(source)?,
            exact_savings: bool_var(source, "EXACT_SAVINGS", true)?,
            partitioned_listing_above: number_var(
                source,
                "PARTITIONED_LISTING_ABOVE",
                DEFAULT_PARTITIONED_LISTING_ABOVE,
                0,
                1_000_000_000,
            )?,
        })
    }

    /// The Recycle Bin rules deletions in `region` go to: the stack's in its own region. Elsewhere
    /// deletions are tagged all the same but promised nothing: they are final unless someone made
    /// a rule there selecting the tag (docs/undo.md).
    pub fn recycle_bin_in(&self, region: &str) -> RecycleBin {
        if self.home_region.as_deref() == Some(region) {
            self.recycle_bin
        } else {
            self.recycle_bin.elsewhere()
        }
    }

    /// The region of `REPORT_TOPIC_ARN`: SNS only accepts a publish in the topic's own region.
    pub fn report_topic_region(&self) -> Option<&str> {
        self.report_topic_arn.as_deref().and_then(|arn| arn.split(':').nth(3))
    }
}

fn regions(source: &dyn VarSource) -> Result<Vec<String>, ConfigError> {
    let Some(list) = optional(source, "REGIONS") else {
        return match optional(source, "AWS_REGION") {
            Some(region) if is_region(&region) => Ok(vec![region]),
            _ => Err(ConfigError::new(
                "REGIONS",
                "",
                "a comma-separated list of regions such as us-east-1 (unset, it defaults to AWS_REGION, which is not set either)",
            )),
        };
    };
    let mut regions: Vec<String> = Vec::new();
    for region in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if !is_region(region) {
            return Err(ConfigError::new(
                "REGIONS",
                list.clone(),
                format!("region names such as us-east-1, not {region:?}"),
            ));
        }
        if !regions.iter().any(|r| r == region) {
            regions.push(region.to_string());
        }
    }
    if regions.is_empty() {
        return Err(ConfigError::new("REGIONS", list, "at least one region such as us-east-1"));
    }
    Ok(regions)
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`, `cn-north-1`.
fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// `LEDGER_READ_ONLY`: refused unless `DRY_RUN=true`, since a run that deletes journals each
/// deletion first.
fn ledger_read_only(source: &dyn VarSource) -> Result<bool, ConfigError> {
    let read_only = bool_var(source, "LEDGER_READ_ONLY", false)?;
    if read_only && !bool_var(source, "DRY_RUN", true)? {
        return Err(ConfigError::new(
            "LEDGER_READ_ONLY",
            "true",
            "false unless DRY_RUN=true (a run that deletes journals every deletion in the ledger first)",
        ));
    }
    Ok(read_only)
}

fn report_topic_arn(source: &dyn VarSource) -> Result<Option<String>, ConfigError> {
    let Some(arn) = optional(source, "REPORT_TOPIC_ARN") else {
        return Ok(None);
    };
    let parts: Vec<&str> = arn.split(':').collect();
    let valid = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sns"
        && is_region(parts[3])
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && !parts[5].is_empty();
    if !valid {
        return Err(ConfigError::new(
            "REPORT_TOPIC_ARN",
            arn,
            "an SNS topic ARN such as arn:aws:sns:us-east-1:123456789012:reports",
        ));
    }
    Ok(Some(arn))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn defaults_are_the_safe_ones() {
        let config = Config::from_env(&env(&[("AWS_REGION", "eu-west-1")])).unwrap();
        assert_eq!(
            config,
            Config {
                dry_run: true,
                min_age_hours: 24,
                max_deletions: 500,
                max_delete_fraction: 0.5,
                protect_tag: "amiguard:keep".into(),
                regions: vec!["eu-west-1".into()],
                price_per_gb_month: 0.05,
                report_topic_arn: None,
                recycle_bin_check: true,
                retire_unused_amis_after_days: None,
                adopt_unwitnessed_orphans: false,
                recycle_bin: RecycleBin::retaining_for(0),
                home_region: Some("eu-west-1".into()),
                ledger_read_only: false,
                staged_retirement: StagedRetirement::default(),
                exact_savings: true,
                partitioned_listing_above: 20_000,
            }
        );
    }

    #[test]
    fn every_variable_is_read() {
        let config = Config::from_env(&env(&[
            ("DRY_RUN", "false"),
            ("MIN_AGE_HOURS", "0"),
            ("MAX_DELETIONS", "10"),
            ("MAX_DELETE_FRACTION", "0.25"),
            ("PROTECT_TAG", "team:keep"),
            ("REGIONS", " us-east-1, eu-central-1 ,us-east-1,"),
            ("PRICE_PER_GB_MONTH", "0.0125"),
            ("REPORT_TOPIC_ARN", "arn:aws:sns:eu-west-1:123456789012:sweeps"),
            ("RECYCLE_BIN_CHECK", "false"),
            ("RETIRE_UNUSED_AMIS_AFTER_DAYS", "180"),
            ("ADOPT_UNWITNESSED_ORPHANS", "TRUE"),
            ("RECYCLE_BIN_RETENTION_DAYS", "7"),
            ("AWS_REGION", "us-east-1"),
        ]))
        .unwrap();
        assert!(!config.dry_run && !config.ledger_read_only);
        let read_only = Config::from_env(&env(&[("AWS_REGION", "us-east-1"), ("LEDGER_READ_ONLY", "true")]));
        assert!(read_only.unwrap().ledger_read_only, "with the default DRY_RUN=true");
        assert_eq!((config.min_age_hours, config.max_deletions), (0, 10));
        assert_eq!((config.max_delete_fraction, config.price_per_gb_month), (0.25, 0.0125));
        assert_eq!(config.protect_tag, "team:keep");
        assert_eq!(config.regions, ["us-east-1", "eu-central-1"]);
        assert_eq!(config.report_topic_region(), Some("eu-west-1"));
        assert!(!config.recycle_bin_check);
        assert_eq!(config.retire_unused_amis_after_days, Some(180));
        assert!(config.adopt_unwitnessed_orphans);
        // The stack's rules are in its own region: deletions elsewhere are not promised a restore.
        assert_eq!(config.recycle_bin_in("us-east-1"), RecycleBin::retaining_for(7));
        assert_eq!(config.recycle_bin_in("eu-central-1"), RecycleBin::retaining_for(7).elsewhere());
    }

    #[test]
    fn exact_savings_is_on_unless_turned_off() {
        let region = ("AWS_REGION", "us-east-1");
        assert!(Config::from_env(&env(&[region])).unwrap().exact_savings);
        assert!(!Config::from_env(&env(&[region, ("EXACT_SAVINGS", "FALSE")])).unwrap().exact_savings);
        let err = Config::from_env(&env(&[region, ("EXACT_SAVINGS", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("EXACT_SAVINGS"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let region = ("AWS_REGION", "us-east-1");
        for (name, value) in [
            ("DRY_RUN", "yes"),
            ("MIN_AGE_HOURS", "-1"),
            ("MIN_AGE_HOURS", "1.5"),
            ("MAX_DELETIONS", "many"),
            ("MAX_DELETE_FRACTION", "1.5"),
            ("MAX_DELETE_FRACTION", "NaN"),
            ("PROTECT_TAG", "aws:keep"),
            ("PROTECT_TAG", &"k".repeat(129)),
            ("REGIONS", "us-east-1,Mars"),
            ("REGIONS", " , "),
            ("PRICE_PER_GB_MONTH", "-0.05"),
            ("REPORT_TOPIC_ARN", "reports"),
            ("REPORT_TOPIC_ARN", "arn:aws:sqs:us-east-1:123456789012:q"),
            ("RECYCLE_BIN_CHECK", "0"),
            ("RETIRE_UNUSED_AMIS_AFTER_DAYS", "-3"),
            ("RETIRE_UNUSED_AMIS_AFTER_DAYS", "soon"),
            ("RECYCLE_BIN_RETENTION_DAYS", "400"),
            ("LEDGER_READ_ONLY", "maybe"),
            ("ADOPT_UNWITNESSED_ORPHANS", "yes"),
        ] {
            let err = Config::from_env(&env(&[region, (name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn staged_retirement_reads_its_seven_variables_and_accepts_zero_days() {
        let config = Config::from_env(&env(&[
            ("AWS_REGION", "us-east-1"),
            ("RETIRE_STAGES", "deregister"),
            ("RETIRE_DWELL_DAYS", "0"),
            ("USAGE_REPORT_LAG_DAYS", "0"),
            ("USAGE_REPORT_TEMPLATE_DEPTH", "15"),
            ("RETIRE_KEEP_NEWEST", "2"),
            ("RETIRE_FAMILY_TAG", "golden:family"),
            ("RETIRE_IMAGE_BUILDER_IMAGES", "true"),
        ]))
        .unwrap();
        let staged = config.staged_retirement;
        assert!(staged.stages.is_one_step());
        assert_eq!((staged.dwell_days, staged.lag_days, staged.template_depth, staged.keep_newest), (0, 0, 15, 2));
        assert_eq!(staged.family_tag.as_deref(), Some("golden:family"));
        assert!(staged.image_builder_images);
        let two = Config::from_env(&env(&[("AWS_REGION", "us-east-1"), ("RETIRE_STAGES", "disable, deregister")]));
        assert!(!two.unwrap().staged_retirement.stages.is_one_step());
        for (name, value) in [
            ("RETIRE_STAGES", "deregister,deprecate"),
            ("RETIRE_STAGES", "deprecate,disable"),
            ("RETIRE_STAGES", "archive,deregister"),
            ("RETIRE_DWELL_DAYS", "-1"),
            ("USAGE_REPORT_LAG_DAYS", "30"),
            ("USAGE_REPORT_TEMPLATE_DEPTH", "0"),
            ("RETIRE_KEEP_NEWEST", "many"),
            ("RETIRE_FAMILY_TAG", "aws:family"),
            ("RETIRE_IMAGE_BUILDER_IMAGES", "yes"),
        ] {
            let err = Config::from_env(&env(&[("AWS_REGION", "us-east-1"), (name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}");
        }
    }

    #[test]
    fn a_read_only_ledger_is_refused_to_a_run_that_would_delete() {
        let vars = [("AWS_REGION", "us-east-1"), ("LEDGER_READ_ONLY", "true"), ("DRY_RUN", "false")];
        let err = Config::from_env(&env(&vars)).unwrap_err();
        assert_eq!(err.variable, "LEDGER_READ_ONLY");
        assert!(err.expected.contains("DRY_RUN=true"), "{err}");
    }

    #[test]
    fn regions_need_a_default_when_unset() {
        let err = Config::from_env(&env(&[])).unwrap_err();
        assert_eq!(err.variable, "REGIONS");
        assert!(err.expected.contains("AWS_REGION"), "{err}");
        assert!(Config::from_env(&env(&[("REGIONS", "us-gov-west-1,ap-southeast-4")])).is_ok());
    }

    #[test]
    fn blank_values_mean_the_default() {
        let config = Config::from_env(&env(&[
            ("AWS_REGION", "us-east-1"),
            ("DRY_RUN", ""),
            ("REPORT_TOPIC_ARN", " "),
            ("RETIRE_UNUSED_AMIS_AFTER_DAYS", ""),
        ]))
        .unwrap();
        assert!(config.dry_run);
        assert_eq!((config.report_topic_arn, config.retire_unused_amis_after_days), (None, None));
    }

    #[test]
    fn variables_are_every_name_the_function_reads() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        // `AWS_REGION` answered, so that every variable after `REGIONS` is read too.
        let recording = |name: &str| {
            asked.borrow_mut().insert(name.to_string());
            (name == "AWS_REGION").then(|| "us-east-1".to_string())
        };
        Config::from_env(&recording).unwrap();
        amiguard::ledger::table_name(&recording).unwrap();
        let variables: std::collections::BTreeSet<String> = VARIABLES.iter().map(|v| v.to_string()).collect();
        assert_eq!(asked.into_inner(), variables);
        assert_eq!(VARIABLES.len(), variables.len(), "each once");
    }

    #[test]
    fn the_partitioned_listing_threshold_is_read_and_checked() {
        let region = ("AWS_REGION", "us-east-1");
        let read = |value: &str| Config::from_env(&env(&[region, ("PARTITIONED_LISTING_ABOVE", value)]));
        assert_eq!(read("0").unwrap().partitioned_listing_above, 0);
        assert_eq!(read("50000").unwrap().partitioned_listing_above, 50_000);
        for bad in ["-1", "many", "1.5"] {
            let err = read(bad).unwrap_err();
            assert_eq!(err.variable, "PARTITIONED_LISTING_ABOVE", "{bad}");
        }
    }
}
