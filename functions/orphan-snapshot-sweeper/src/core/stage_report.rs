//! What the report says of staged retirement (GOLDEN_CONTRACT.md): per region the images in a
//! stage or with a next stage (`retirement_stages`) and, per stage, how many images it holds and
//! what they cost a month (`retirement_stage_totals`; run-wide `totals.retirement_stages`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::stages::{Stage, UsageEntry};

/// What this run did to an image's retirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageChange {
    None,
    Advanced,
    Undone,
    EndedByPerson,
    /// A dry run: it would take `next_stage` now.
    WouldAdvance,
}

/// The evidence read for an image this run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StageEvidence {
    /// The usage reports read this run.
    pub usage_reports: Vec<String>,
    pub usage_entries: Vec<UsageEntry>,
    /// `DescribeImageReferences` (`null`: not asked).
    pub referenced: Option<bool>,
    pub last_launched: Option<DateTime<Utc>>,
}

/// One image in a stage, or with a next stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetirementStageEntry {
    pub image_id: String,
    pub name: String,
    pub shared: bool,
    pub stage: Stage,
    /// When amiguard took `stage` (`null` for `active`).
    pub since: Option<DateTime<Utc>>,
    pub change: StageChange,
    pub next_stage: Option<Stage>,
    /// The earliest time the next stage may be taken; `null` when it waits for evidence.
    pub next_at: Option<DateTime<Utc>>,
    pub waiting_for: Option<String>,
    /// For `undone` and `ended_by_person`: the use seen, or who ended it.
    pub why_stopped: Option<String>,
    pub evidence: StageEvidence,
    /// What its snapshots hold at most (its volumes' sizes): for the totals, not in the JSON.
    #[serde(skip)]
    pub gib: u64,
}

/// The images of one stage and what they cost a month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTotal {
    pub images: u64,
    pub gib: u64,
    pub monthly_cost_usd: f64,
}

/// Per stage, after the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTotals {
    pub deprecated: StageTotal,
    pub disabled: StageTotal,
    pub deregistered: StageTotal,
}

impl StageTotals {
    /// The totals of `entries` (their stage after the run), at `price_per_gb_month`.
    pub fn of(entries: &[RetirementStageEntry], price_per_gb_month: f64) -> Self {
        let mut totals = Self::default();
        for entry in entries {
            let total = match entry.stage {
                Stage::Deprecated => &mut totals.deprecated,
                Stage::Disabled => &mut totals.disabled,
                Stage::Deregistered => &mut totals.deregistered,
                Stage::Active => continue,
            };
            total.images += 1;
            total.gib += entry.gib;
        }
        totals.price(price_per_gb_month)
    }

    /// The sum of regions' totals, priced again.
    pub fn sum<'a>(all: impl Iterator<Item = &'a StageTotals>, price_per_gb_month: f64) -> Self {
        let mut totals = Self::default();
        for t in all {
            for (sum, one) in [
                (&mut totals.deprecated, t.deprecated),
                (&mut totals.disabled, t.disabled),
                (&mut totals.deregistered, t.deregistered),
            ] {
                sum.images += one.images;
                sum.gib += one.gib;
            }
        }
        totals.price(price_per_gb_month)
    }

    fn price(mut self, price_per_gb_month: f64) -> Self {
        for total in [&mut self.deprecated, &mut self.disabled, &mut self.deregistered] {
            total.monthly_cost_usd = (total.gib as f64 * price_per_gb_month * 100.0).round() / 100.0;
        }
        self
    }
}
