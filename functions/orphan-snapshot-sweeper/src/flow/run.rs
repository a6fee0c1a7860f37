//! One sweep's run: what every region of the invocation shares (the configuration, the account,
//! whether it is a dry run, the deadline, the ledger as the run can use it), and the run's own
//! helpers: how much time is left for a step, and whether the ledger still serves.

use std::time::{Duration, SystemTime};

use amiguard::invocation::Invocation;
use amiguard::ledger::journal::{JournalEntry, Resource};
use amiguard::recycle_bin::RecycleBin;
use amiguard::AwsError;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::event::ScheduledDetail;
use crate::ports::{Ebs, EbsRegions, Ports, Records};
use crate::report::RegionReport;
use crate::FUNCTION;

/// No region, listing, ledger read or deregistration starts with less than this left before the
/// Lambda deadline. It exceeds the longest single call (the SDK's 120 s operation timeout,
/// `amiguard::sdk::timeout_config`); a paged listing may take many calls, so every call of a
/// region is also cut [`DELETION_CUTOFF`] before the deadline, whatever it is.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(150);
/// A deletion or its journal's write-ahead starts only with more than this left. Deletions are the
/// bulk of a run, so they keep all but its last minute; a deletion still in flight at
/// [`DELETION_CUTOFF`] is cut, so even the last one ends in time for the journal's completion,
/// the report and its summary.
pub const DELETION_MARGIN: Duration = Duration::from_secs(60);
/// How long before the deadline any call of a region still in flight is cut (a listing, a ledger
/// read or write, a deregistration, a deletion): a deletion is then reported failed with code
/// `Timeout` (it may have happened; the next sweep sees), a listing aborts its region.
pub const DELETION_CUTOFF: Duration = Duration::from_secs(30);

/// The ledger, as this invocation can use it.
pub(crate) enum Ledger<'a, L> {
    /// Read and written; `previous_run` is when the last sweep started.
    Ready { store: &'a L, previous_run: Option<DateTime<Utc>> },
    /// A dry run without a ledger: no memory, nothing written.
    Absent,
    /// Unusable for a run that would delete: every region is aborted with this reason.
    Refused(String),
}

impl<'a, L: Records> Ledger<'a, L> {
    /// The ledger of a run: `store` unless there is none, or it cannot be read (then a run that
    /// would delete refuses to). Says so in `warnings` when a dry run goes without one.
    async fn open(store: Option<&'a L>, dry_run: bool, warnings: &mut Vec<String>) -> Self {
        match store {
            None if dry_run => {
                warnings.push("no ledger is configured (LEDGER_TABLE): every orphan counts as first seen now".into());
                Ledger::Absent
            }
            None => Ledger::Refused("no ledger is configured (LEDGER_TABLE): nothing is deleted without it".into()),
            Some(store) => match store.previous_run().await {
                Ok(previous_run) => Ledger::Ready { store, previous_run },
                Err(err) => {
                    Ledger::Refused(format!("the ledger could not be read ({err}): nothing is deleted without it"))
                }
            },
        }
    }
}

/// What every region of one invocation shares.
pub(crate) struct Run<'a, L> {
    pub config: &'a Config,
    pub account_id: &'a str,
    pub dry_run: bool,
    pub invocation: &'a Invocation,
    /// Lambda's deadline on the monotonic clock (`None`: unknown, not time-bounded).
    pub deadline: Option<tokio::time::Instant>,
    pub ledger: Ledger<'a, L>,
    /// Set when the ledger failed: from then on no region deletes or deregisters anything more.
    ledger_failed: std::sync::Mutex<Option<String>>,
    /// The EBS direct APIs of each region, for exact savings (`None`: bounds only).
    pub ebs: Option<&'a EbsRegions>,
}

impl<'a, L: Records> Run<'a, L> {
    /// The run of a sweep of `account_id` through `ports`, and the warnings it starts with (a
    /// read-only ledger, a deadline already past, Recycle Bin rules elsewhere, no ledger).
    pub async fn start<E, P>(
        config: &'a Config,
        ports: &Ports<'a, E, P, L>,
        account_id: &'a str,
        detail: &ScheduledDetail,
        invocation: &'a Invocation,
    ) -> (Self, Vec<String>) {
        let dry_run = config.dry_run || detail.dry_run == Some(true);
        let mut warnings = Vec::new();
        if config.ledger_read_only && ports.ledger.is_some() {
            warnings.push(
                "LEDGER_READ_ONLY: the ledger was read, not written (an orphan it has no clock for counts as first seen now, and no run summary was kept)"
                    .to_string(),
            );
        }
        let deadline = deadline(invocation, &mut warnings);
        if config.recycle_bin.is_on() && !dry_run {
            warnings.extend(rules_elsewhere(config, ports.regions));
        }
        let ledger = Ledger::open(ports.ledger, dry_run, &mut warnings).await;
        let run = Run {
            config,
            account_id,
            dry_run,
            invocation,
            deadline,
            ledger,
            ledger_failed: Default::default(),
            ebs: None,
        };
        (run, warnings)
    }

    /// The EBS direct APIs of `region`, if the run has them.
    pub fn ebs_in(&self, region: &str) -> Option<&'a dyn Ebs> {
        let regions = self.ebs?;
        regions.iter().find(|(name, _)| name == region).map(|(_, ebs)| ebs.as_ref())
    }

    /// Whether less than [`DEADLINE_MARGIN`] is left: no listing or deregistration starts.
    pub fn deadline_is_near(&self) -> bool {
        self.deadline.is_some_and(|at| tokio::time::Instant::now() + DEADLINE_MARGIN >= at)
    }

    /// Whether less than [`DELETION_MARGIN`] is left: no deletion starts.
    pub fn deletion_deadline_is_near(&self) -> bool {
        self.deadline.is_some_and(|at| tokio::time::Instant::now() + DELETION_MARGIN >= at)
    }

    /// Whether `step` may start in this region; if not, the region is aborted (nothing more is
    /// deleted in it) and says which step the deadline stopped.
    pub fn time_for(&self, report: &mut RegionReport, step: &str) -> bool {
        if self.deadline_is_near() {
            tracing::warn!(region = %report.region, step, "the deadline is near: region stopped");
            report.aborted =
                Some(format!("the invocation's deadline was near before {step}: nothing more done in this region"));
            return false;
        }
        true
    }

    /// Runs `call` (any call of a region's sweep) until [`DELETION_CUTOFF`] before the deadline at
    /// most; cut, it fails with code `Timeout`.
    pub async fn until_cutoff<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, AwsError>>,
    ) -> Result<T, AwsError> {
        let Some(at) = self.deadline else { return call.await };
        let cut = at.checked_sub(DELETION_CUTOFF).unwrap_or(at);
        tokio::time::timeout_at(cut, call).await.unwrap_or_else(|_| {
            Err(AwsError::new(
                operation,
                "Timeout",
                format!(
                    "cut {} s before the invocation's deadline (a change it asked for may still have happened)",
                    DELETION_CUTOFF.as_secs()
                ),
            ))
        })
    }

    /// Runs `call` (a ledger write, the summary's publish) only while the deadline has not passed,
    /// and no longer than until then: the report is already logged, these may be lost, never the
    /// invocation.
    pub async fn before_deadline<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, AwsError>>,
    ) -> Result<T, AwsError> {
        let Some(at) = self.deadline else { return call.await };
        let cut = || AwsError::new("Deadline", "DeadlineReached", "the invocation's deadline was reached");
        // A second short of the deadline: Lambda stops the invocation at it.
        let until = at.checked_sub(Duration::from_secs(1)).unwrap_or(at);
        if tokio::time::Instant::now() >= until {
            return Err(cut());
        }
        tokio::time::timeout_at(until, call).await.unwrap_or_else(|_| Err(cut()))
    }

    pub fn store(&self) -> Option<&'a L> {
        match self.ledger {
            Ledger::Ready { store, .. } => Some(store),
            _ => None,
        }
    }

    /// The ledger, unless `LEDGER_READ_ONLY` keeps this run from writing it.
    pub fn writable_store(&self) -> Option<&'a L> {
        self.store().filter(|_| !self.config.ledger_read_only)
    }

    /// Remembers that the ledger failed, so that no later region deletes without it.
    pub fn ledger_broke(&self, err: &AwsError) {
        if let Ok(mut failed) = self.ledger_failed.lock() {
            failed.get_or_insert_with(|| err.to_string());
        }
    }

    pub fn ledger_failure(&self) -> Option<String> {
        self.ledger_failed.lock().ok().and_then(|failed| failed.clone())
    }

    /// The Recycle Bin rules of `region` (none in a dry run: nothing is deleted, nothing tagged).
    pub fn recycle_bin(&self, region: &str) -> RecycleBin {
        if self.dry_run {
            RecycleBin::default()
        } else {
            self.config.recycle_bin_in(region)
        }
    }

    /// A journal entry of this run, now.
    pub fn journal(&self, region: &str, resource: Resource, resource_id: &str, rule: &'static str) -> JournalEntry {
        let time = self.invocation.clock();
        JournalEntry::new(&self.invocation.request_id, FUNCTION, region, resource, resource_id, rule, time)
    }
}

/// Lambda's deadline, read once into the monotonic clock (the wall clock may be stepped during a
/// run); `None` for a deadline already past at start, said in `warnings`.
fn deadline(invocation: &Invocation, warnings: &mut Vec<String>) -> Option<tokio::time::Instant> {
    match invocation.deadline {
        Some(at) if at <= SystemTime::now() => {
            // Lambda never hands out a deadline already past; local emulators do (cargo lambda
            // watch sends a fixed one in 1970). Such a run is bounded by the function timeout only.
            warnings.push("the invocation deadline was already past at start (a local emulator?): deletions were not time-bounded".to_string());
            None
        }
        other => other.map(|at| tokio::time::Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()),
    }
}

/// The warning for the regions swept outside the stack's own, where its Recycle Bin rules are
/// not: what is deleted there is tagged, but final unless a rule there selects the tag.
fn rules_elsewhere<E>(config: &Config, regions: &[(String, E)]) -> Option<String> {
    let elsewhere: Vec<&str> = regions
        .iter()
        .map(|(region, _)| region.as_str())
        .filter(|region| !config.recycle_bin_in(region).rules_here())
        .collect();
    (!elsewhere.is_empty()).then(|| {
        format!(
            "the stack's Recycle Bin rules are in its own region: deletions in {} are tagged but final unless a rule there selects the tag {}={}",
            elsewhere.join(", "),
            amiguard::recycle_bin::TAG_KEY,
            amiguard::recycle_bin::TAG_VALUE
        )
    })
}
