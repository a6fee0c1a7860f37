//! A sweep: every region of `REGIONS` (one planning at a time, in order; their deletions side by
//! side), then the report; and, once the report is logged, its delivery: the run's summary to
//! the ledger, the summary in words to `REPORT_TOPIC_ARN`.

use futures::stream::StreamExt;

use super::region::{sweep_region, Swept};
use super::run::Run;
use crate::core::summary::{summary_subject, summary_text, totals};
use crate::ports::{Ec2, Records, SummaryPublisher};
use crate::report::{Delivery, RegionReport, Report};

/// Regions whose deletions run at once. EC2 paces each region with request-rate buckets of its
/// own, so regions side by side delete up to this many times as much in one run.
pub const REGION_CONCURRENCY: usize = 4;

/// Sweeps every region of `regions` in `run`, and reports (with the run's `warnings` so far),
/// every list cut to fit one log event; answers too the warnings the report had no room for.
pub(crate) async fn sweep<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    regions: &[(String, E)],
    mut warnings: Vec<String>,
) -> (Report, Vec<String>) {
    let mut region_reports = Vec::new();
    let mut retired_images = Vec::new();
    for region in in_turn(run, regions).await {
        region_reports.push(region.report);
        retired_images.extend(region.retired);
        warnings.extend(region.warnings);
    }
    region_reports.iter_mut().for_each(RegionReport::count);
    let request_id = &run.invocation.request_id;
    let mut report = Report {
        dry_run: run.dry_run,
        account_id: run.account_id.to_string(),
        run_id: request_id.clone(),
        started_at: run.invocation.now,
        totals: totals(&region_reports, &retired_images, run.config.price_per_gb_month),
        regions: region_reports,
        retired_images,
        recycle_bin_retention_days: run.config.recycle_bin.retention_days(),
        warnings,
        // A read-only run writes no list to point at.
        full_lists: run.writable_store().map(|store| store.full_lists(request_id)),
        summary_published: None,
    };
    let unshown = report.bound();
    (report, unshown)
}

/// Every region's share, in `REGIONS` order. Regions are planned one at a time, in that order:
/// each waits for the one before it to finish planning (so one region's listing is in memory at
/// a time, and `MAX_DELETIONS` is taken in that order without a race); their deletions then run
/// side by side, a region that is done making room for the next.
async fn in_turn<E: Ec2, L: Records>(run: &Run<'_, L>, regions: &[(String, E)]) -> Vec<Swept> {
    let budget = tokio::sync::Mutex::new(u64::from(run.config.max_deletions));
    let (mut turns, mut previous) = (Vec::new(), None);
    for _ in regions {
        let (done, next) = tokio::sync::oneshot::channel::<()>();
        turns.push((previous.replace(next), done));
    }
    let mut swept: Vec<(usize, Swept)> = futures::stream::iter(regions.iter().zip(turns).enumerate())
        .map(|(index, ((region, ec2), (my_turn, planned)))| {
            let budget = &budget;
            async move {
                if let Some(my_turn) = my_turn {
                    // An error means the region before has gone: its turn is over either way.
                    let _ = my_turn.await;
                }
                (index, sweep_region(run, region, ec2, budget, planned).await)
            }
        })
        .buffer_unordered(REGION_CONCURRENCY)
        .collect()
        .await;
    swept.sort_by_key(|(index, _)| *index);
    swept.into_iter().map(|(_, region)| region).collect()
}

/// Delivers the logged `report`: the run's summary to the ledger (unless it is read-only or
/// absent), the summary to the topic (with `REPORT_TOPIC_ARN`). Either may be lost to the
/// deadline or a failure, never the invocation: the report is already in the log.
pub(crate) async fn deliver<P: SummaryPublisher, L: Records>(
    run: &Run<'_, L>,
    publisher: &P,
    report: &Report,
) -> Delivery {
    let mut delivery =
        Delivery { run_id: report.run_id.clone(), run_recorded: None, summary_published: None, warnings: Vec::new() };
    if let Some(store) = run.writable_store() {
        let written = run.before_deadline(store.record_run(report)).await;
        if let Err(err) = &written {
            delivery.warnings.push(format!("the run's summary could not be written to the ledger: {err}"));
        }
        delivery.run_recorded = Some(written.is_ok());
    }
    if let Some(topic) = &run.config.report_topic_arn {
        let summary = (summary_subject(report), summary_text(report));
        let published = run.before_deadline(publisher.publish(topic, &summary.0, &summary.1)).await;
        if let Err(err) = &published {
            delivery.warnings.push(format!("the summary could not be published to {topic}: {err}"));
        }
        delivery.summary_published = Some(published.is_ok());
    }
    delivery
}
