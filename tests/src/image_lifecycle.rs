//! What EC2 does to an image's lifecycle and moto 5.2.5 does not, as a small in-memory model on a
//! proxy of its own in front of moto (tests put their recording proxy in front of it):
//!
//! - **AMI usage reports** (`CreateImageUsageReport`, `DescribeImageUsageReports`,
//!   `DescribeImageUsageReportEntries`, `DeleteImageUsageReport`), which moto lacks: a report is
//!   `pending` until the test makes it `available` (with entries it gives, or read from moto's real
//!   state across accounts: [`ImageLifecycle::complete_reports_from`]) or `error`; its
//!   `CreationTime` is the model's clock, its `ExpirationTime` 30 days later, after which EC2
//!   deletes it (it is listed no more). Entries are paged (`MaxResults`, `NextToken`).
//! - **Deprecation** (`EnableImageDeprecation`, `DisableImageDeprecation`), which moto lacks: a time
//!   in the past (by the model's clock) is refused, seconds are rounded to the nearest minute, and
//!   `DescribeImages` shows `deprecationTime`.
//! - **Disabling as EC2 does it**: moto's `DisableImage` only flips the state. EC2 also removes every
//!   launch permission (accounts, organisations, OUs, public), which `EnableImage` does not bring
//!   back; a disabled image cannot be shared; `DescribeImages` lists a disabled image only with
//!   `IncludeDisabled=true`. moto's `ModifyImageAttribute` keeps only the first organisation and OU
//!   of the `OperationType` form: the model hands moto each one, as EC2 applies them all.
//!
//! Error codes EC2 does not document for these calls are the model's choice, named here:
//! `InvalidImageUsageReportId.NotFound`, `InvalidParameterValue` (a deprecation time in the past),
//! `OperationNotPermitted` (sharing a disabled image).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::proxy::{Answer, Call, Fault, Proxy, Upstream};
use crate::{ec2_answer, TestAccount};

/// Days EC2 keeps a usage report.
pub const REPORT_DAYS: i64 = 30;
/// EC2's default launch-template version depth of a usage report.
pub const DEFAULT_VERSION_DEPTH: u32 = 20;

/// One entry of a usage report: an account's resources of one type that use the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    pub account_id: String,
    /// `ec2:Instance` or `ec2:LaunchTemplate`.
    pub resource_type: String,
    pub usage_count: u64,
}

impl UsageEntry {
    pub fn new(account_id: &str, resource_type: &str, usage_count: u64) -> Self {
        Self { account_id: account_id.into(), resource_type: resource_type.into(), usage_count }
    }
}

/// A usage report as the model holds it.
#[derive(Debug, Clone)]
pub struct UsageReport {
    pub report_id: String,
    /// The account that asked for it (the image's owner).
    pub owner: String,
    pub region: String,
    pub image_id: String,
    /// The accounts asked for; empty: every account.
    pub account_ids: Vec<String>,
    /// Each resource type asked for, with its version depth (launch templates).
    pub resource_types: Vec<(String, Option<u32>)>,
    /// `pending`, `available` or `error`.
    pub state: String,
    pub state_reason: Option<String>,
    pub creation_time: DateTime<Utc>,
    pub entries: Vec<UsageEntry>,
    client_token: Option<String>,
}

impl UsageReport {
    pub fn expiration_time(&self) -> DateTime<Utc> {
        self.creation_time + Duration::days(REPORT_DAYS)
    }

    /// The version depth asked for launch templates (`None`: not asked).
    pub fn version_depth(&self) -> Option<u32> {
        self.resource_types
            .iter()
            .find(|(kind, _)| kind == "ec2:LaunchTemplate")
            .map(|(_, depth)| depth.unwrap_or(DEFAULT_VERSION_DEPTH))
    }

    fn covers(&self, account_id: &str) -> bool {
        self.account_ids.is_empty() || self.account_ids.iter().any(|a| a == account_id)
    }
}

#[derive(Default)]
struct Model {
    /// The model's clock (`None`: the wall clock).
    now: Option<DateTime<Utc>>,
    reports: BTreeMap<String, UsageReport>,
    /// Deprecation time by image id.
    deprecations: BTreeMap<String, DateTime<Utc>>,
    /// The largest page the describes answer (`None`: `MaxResults`, else 1000).
    page_size: Option<usize>,
}

impl Model {
    fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }

    /// EC2 deletes a report 30 days after its creation.
    fn expire(&mut self) {
        let now = self.now();
        self.reports.retain(|_, report| report.expiration_time() > now);
    }
}

static NEXT_REPORT: AtomicU64 = AtomicU64::new(0);

/// The model, and the proxy that serves it. Calls of every other action go on to moto.
pub struct ImageLifecycle {
    proxy: Proxy,
    model: Arc<Mutex<Model>>,
}

impl ImageLifecycle {
    /// A model on a proxy of its own in front of the test binary's moto.
    pub async fn start() -> Self {
        let proxy = Proxy::start(&crate::moto().endpoint).await;
        let model: Arc<Mutex<Model>> = Arc::default();
        type Handler = fn(
            Arc<Mutex<Model>>,
            Call,
            Upstream,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;
        let handlers: [(&str, Handler); 9] = [
            ("CreateImageUsageReport", |m, c, u| Box::pin(create_report(m, c, u))),
            ("DescribeImageUsageReports", |m, c, _| Box::pin(async move { describe_reports(&m, &c) })),
            ("DescribeImageUsageReportEntries", |m, c, _| Box::pin(async move { describe_entries(&m, &c) })),
            ("DeleteImageUsageReport", |m, c, _| Box::pin(async move { delete_report(&m, &c) })),
            ("EnableImageDeprecation", |m, c, u| Box::pin(enable_deprecation(m, c, u))),
            ("DisableImageDeprecation", |m, c, u| Box::pin(disable_deprecation(m, c, u))),
            ("DescribeImages", |m, c, u| Box::pin(describe_images(m, c, u))),
            ("DisableImage", |_, c, u| Box::pin(disable_image(c, u))),
            ("ModifyImageAttribute", |_, c, u| Box::pin(modify_image_attribute(c, u))),
        ];
        for (action, handler) in handlers {
            let model = model.clone();
            proxy.inject(Fault::handle_with(action, move |call, upstream| {
                // `DryRun=true`: EC2 checks the permission and changes nothing (moto's own answer
                // for the actions it has; the model's for the others).
                if call.param("DryRun").is_some_and(|v| v == "true") {
                    let body = error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.").1;
                    return Box::pin(std::future::ready((412u16, body)))
                        as std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;
                }
                handler(model.clone(), call, upstream)
            }));
        }
        Self { proxy, model }
    }

    /// The proxy to send calls to (`account.through(model.proxy())`, or a recording proxy in
    /// front: `Proxy::start(&model.proxy().endpoint)`).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Sets the model's clock (report creation times, deprecation checks, expiry): the sweeper's
    /// injected clock.
    pub fn set_now(&self, now: DateTime<Utc>) {
        self.model.lock().unwrap().now = Some(now);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.model.lock().unwrap().now()
    }

    /// The largest page the describes answer, whatever `MaxResults` asks (paging in tests).
    pub fn set_page_size(&self, size: usize) {
        self.model.lock().unwrap().page_size = Some(size.max(1));
    }

    /// Every report EC2 still keeps (not expired by the model's clock), oldest first.
    pub fn reports(&self) -> Vec<UsageReport> {
        let mut model = self.model.lock().unwrap();
        model.expire();
        let mut reports: Vec<UsageReport> = model.reports.values().cloned().collect();
        reports.sort_by_key(|r| (r.creation_time, r.report_id.clone()));
        reports
    }

    /// The reports of `image_id` EC2 still keeps.
    pub fn reports_of(&self, image_id: &str) -> Vec<UsageReport> {
        self.reports().into_iter().filter(|r| r.image_id == image_id).collect()
    }

    /// The deprecation time EC2 holds for `image_id`.
    pub fn deprecation(&self, image_id: &str) -> Option<DateTime<Utc>> {
        self.model.lock().unwrap().deprecations.get(image_id).copied()
    }

    /// Report `report_id` becomes `available` with `entries`.
    pub fn complete_report(&self, report_id: &str, entries: Vec<UsageEntry>) {
        let mut model = self.model.lock().unwrap();
        let report = model.reports.get_mut(report_id).unwrap_or_else(|| panic!("no report {report_id}"));
        report.state = "available".into();
        report.entries = entries;
    }

    /// Report `report_id` goes to `error`.
    pub fn fail_report(&self, report_id: &str, reason: &str) {
        let mut model = self.model.lock().unwrap();
        let report = model.reports.get_mut(report_id).unwrap_or_else(|| panic!("no report {report_id}"));
        report.state = "error".into();
        report.state_reason = Some(reason.into());
    }

    /// Every `pending` report becomes `available` with what moto holds now in `accounts` (those the
    /// report covers): per account, the instances not terminated that run the image, and the launch
    /// templates one of whose newest `version-depth` versions names it (a template counts once,
    /// as EC2 counts it). Answers the reports completed.
    pub async fn complete_reports_from(&self, accounts: &[&TestAccount]) -> Vec<String> {
        let pending: Vec<UsageReport> =
            self.model.lock().unwrap().reports.values().filter(|r| r.state == "pending").cloned().collect();
        let mut completed = Vec::new();
        for report in pending {
            let mut entries = Vec::new();
            for account in accounts.iter().filter(|a| report.covers(&a.account_id)) {
                let ec2 = account.ec2_in(&report.region);
                if report.resource_types.iter().any(|(kind, _)| kind == "ec2:Instance") {
                    let count = instances_running(&ec2, &report.image_id).await;
                    if count > 0 {
                        entries.push(UsageEntry::new(&account.account_id, "ec2:Instance", count));
                    }
                }
                if let Some(depth) = report.version_depth() {
                    let count = templates_naming(&ec2, &report.image_id, depth).await;
                    if count > 0 {
                        entries.push(UsageEntry::new(&account.account_id, "ec2:LaunchTemplate", count));
                    }
                }
            }
            self.complete_report(&report.report_id, entries);
            completed.push(report.report_id);
        }
        completed
    }
}

/// Instances of `image_id` not terminated.
async fn instances_running(ec2: &aws_sdk_ec2::Client, image_id: &str) -> u64 {
    let filter = aws_sdk_ec2::types::Filter::builder().name("image-id").values(image_id).build();
    let listed = ec2.describe_instances().filters(filter).send().await.expect("DescribeInstances");
    let terminated = |i: &&aws_sdk_ec2::types::Instance| {
        i.state().and_then(|s| s.name()).is_some_and(|n| *n == aws_sdk_ec2::types::InstanceStateName::Terminated)
    };
    listed
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.image_id() == Some(image_id) && !terminated(i))
        .count() as u64
}

/// Launch templates one of whose newest `depth` versions names `image_id` (moto answers at most
/// `MaxResults` versions, the oldest first, and pages nothing: each window is asked by number).
async fn templates_naming(ec2: &aws_sdk_ec2::Client, image_id: &str, depth: u32) -> u64 {
    let templates = ec2.describe_launch_templates().max_results(200).send().await.expect("DescribeLaunchTemplates");
    let mut count = 0;
    for template in templates.launch_templates() {
        let id = template.launch_template_id().unwrap_or_default();
        let latest = template.latest_version_number().unwrap_or(1);
        let oldest = (latest - i64::from(depth) + 1).max(1);
        let mut names = false;
        let mut from = oldest;
        while from <= latest && !names {
            let to = (from + 199).min(latest);
            let versions = ec2
                .describe_launch_template_versions()
                .launch_template_id(id)
                .min_version(from.to_string())
                .max_version(to.to_string())
                .max_results(200)
                .send()
                .await
                .expect("DescribeLaunchTemplateVersions");
            names = versions.launch_template_versions().iter().any(|v| {
                v.version_number().is_some_and(|n| (oldest..=latest).contains(&n))
                    && v.launch_template_data().and_then(|d| d.image_id()) == Some(image_id)
            });
            from = to + 1;
        }
        count += u64::from(names);
    }
    count
}

// ---- the calls ----

fn error(code: &str, message: &str) -> Answer {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>image-lifecycle-model</RequestID></Response>");
    (400, body)
}

fn ok(action: &str, content: &str) -> Answer {
    (200, ec2_answer(action, content))
}

/// EC2's timestamps: milliseconds, UTC.
pub fn ec2_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn param(call: &Call, name: &str) -> Option<String> {
    call.param(name).filter(|v| !v.is_empty())
}

/// Filters of a describe call: `Filter.N.Name` and its `Filter.N.Value.M`.
fn filters(call: &Call) -> Vec<(String, Vec<String>)> {
    (1..)
        .map_while(|n| {
            call.param(&format!("Filter.{n}.Name")).map(|name| (name, call.list(&format!("Filter.{n}.Value"))))
        })
        .collect()
}

/// One page of `items` by `NextToken` (an index) and `MaxResults`, and the next token.
fn page<T: Clone>(model: &Model, call: &Call, items: &[T]) -> (Vec<T>, Option<String>) {
    let start: usize = call.param("NextToken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let asked: usize = call.param("MaxResults").and_then(|m| m.parse().ok()).unwrap_or(1000);
    let size = model.page_size.map_or(asked, |cap| cap.min(asked)).max(1);
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    (items.get(start.min(items.len())..end).unwrap_or_default().to_vec(), next)
}

/// The image as its owner `call.account` sees it (moto's answer), or the error to answer.
async fn own_image(call: &Call, upstream: &Upstream, image_id: &str) -> Result<String, Answer> {
    let body = format!("Action=DescribeImages&Version=2016-11-15&ImageId.1={image_id}");
    let (status, answer) = upstream.forward(&body).await;
    if status != 200 {
        return Err((status, answer));
    }
    let owner = element(&answer, "imageOwnerId");
    match owner {
        Some(owner) if Some(owner) == call.account.as_deref() => Ok(answer),
        _ => Err(error("InvalidAMIID.NotFound", &format!("The image id '[{image_id}]' does not exist"))),
    }
}

async fn create_report(model: Arc<Mutex<Model>>, call: Call, upstream: Upstream) -> Answer {
    let Some(image_id) = param(&call, "ImageId") else { return error("MissingParameter", "ImageId") };
    let mut resource_types = Vec::new();
    for n in 1.. {
        let Some(kind) = call.param(&format!("ResourceType.{n}.ResourceType")) else { break };
        if kind != "ec2:Instance" && kind != "ec2:LaunchTemplate" {
            return error("InvalidParameterValue", &format!("resource type {kind}"));
        }
        let mut depth = None;
        for m in 1.. {
            let prefix = format!("ResourceType.{n}.ResourceTypeOption.{m}");
            let Some(name) = call.param(&format!("{prefix}.OptionName")) else { break };
            let values = call.list(&format!("{prefix}.OptionValue"));
            if name != "version-depth" || kind != "ec2:LaunchTemplate" {
                return error("InvalidParameterValue", &format!("option {name} of {kind}"));
            }
            match values.first().and_then(|v| v.parse::<u32>().ok()).filter(|d| (1..=10_000).contains(d)) {
                Some(d) if values.len() == 1 => depth = Some(d),
                _ => return error("InvalidParameterValue", "version-depth: an integer from 1 to 10000"),
            }
        }
        resource_types.push((kind, depth));
    }
    if resource_types.is_empty() {
        return error("MissingParameter", "ResourceType");
    }
    let account_ids = call.list("AccountId");
    if account_ids.len() > 200 {
        return error("InvalidParameterValue", "AccountId: at most 200");
    }
    if let Err(answer) = own_image(&call, &upstream, &image_id).await {
        return answer;
    }
    let owner = call.account.clone().unwrap_or_default();
    let client_token = param(&call, "ClientToken");
    let mut model = model.lock().unwrap();
    model.expire();
    if let Some(token) = &client_token {
        if let Some(report) =
            model.reports.values().find(|r| r.client_token.as_ref() == Some(token) && r.owner == owner)
        {
            return ok("CreateImageUsageReport", &format!("<reportId>{}</reportId>", report.report_id));
        }
    }
    let report_id = format!("amiur-{:017x}", 0x0a1b_0000_0000_0000 + NEXT_REPORT.fetch_add(1, Ordering::SeqCst));
    let report = UsageReport {
        report_id: report_id.clone(),
        owner,
        region: call.region.clone(),
        image_id,
        account_ids,
        resource_types,
        state: "pending".into(),
        state_reason: None,
        creation_time: model.now(),
        entries: Vec::new(),
        client_token,
    };
    model.reports.insert(report_id.clone(), report);
    ok("CreateImageUsageReport", &format!("<reportId>{report_id}</reportId>"))
}

/// The caller's reports (its account and region) that `ImageId.N` and `ReportId.N` name.
fn callers_reports(model: &mut Model, call: &Call) -> Vec<UsageReport> {
    model.expire();
    let (images, ids) = (call.list("ImageId"), call.list("ReportId"));
    let mut reports: Vec<UsageReport> = model
        .reports
        .values()
        .filter(|r| Some(&r.owner) == call.account.as_ref() && r.region == call.region)
        .filter(|r| images.is_empty() || images.contains(&r.image_id))
        .filter(|r| ids.is_empty() || ids.contains(&r.report_id))
        .cloned()
        .collect();
    reports.sort_by_key(|r| (r.creation_time, r.report_id.clone()));
    reports
}

/// `creation-time` values: an exact time or a prefix ending in `*`.
fn time_matches(time: DateTime<Utc>, values: &[String]) -> bool {
    let text = ec2_time(time);
    values.iter().any(|v| match v.strip_suffix('*') {
        Some(prefix) => text.starts_with(prefix),
        None => DateTime::parse_from_rfc3339(v).is_ok_and(|t| t == time),
    })
}

fn describe_reports(model: &Mutex<Model>, call: &Call) -> Answer {
    let mut model = model.lock().unwrap();
    let mut reports = callers_reports(&mut model, call);
    for (name, values) in filters(call) {
        match name.as_str() {
            "state" => reports.retain(|r| values.contains(&r.state)),
            "creation-time" => reports.retain(|r| time_matches(r.creation_time, &values)),
            other => return error("InvalidParameterValue", &format!("filter {other}")),
        }
    }
    let (reports, next) = page(&model, call, &reports);
    let items: String = reports.iter().map(report_xml).collect();
    let next = next.map(|t| format!("<nextToken>{t}</nextToken>")).unwrap_or_default();
    ok("DescribeImageUsageReports", &format!("<imageUsageReportSet>{items}</imageUsageReportSet>{next}"))
}

fn report_xml(report: &UsageReport) -> String {
    let types: String = report
        .resource_types
        .iter()
        .map(|(kind, depth)| {
            let options = match (kind.as_str(), depth) {
                ("ec2:LaunchTemplate", depth) => format!(
                    "<resourceTypeOptionSet><item><optionName>version-depth</optionName><optionValueSet><item>{}</item></optionValueSet></item></resourceTypeOptionSet>",
                    depth.unwrap_or(DEFAULT_VERSION_DEPTH)
                ),
                _ => String::new(),
            };
            format!("<item><resourceType>{kind}</resourceType>{options}</item>")
        })
        .collect();
    let accounts = match report.account_ids.is_empty() {
        true => String::new(),
        false => format!(
            "<accountIdSet>{}</accountIdSet>",
            report.account_ids.iter().map(|a| format!("<item>{a}</item>")).collect::<String>()
        ),
    };
    let reason = report.state_reason.as_ref().map(|r| format!("<stateReason>{r}</stateReason>")).unwrap_or_default();
    format!(
        "<item><imageId>{}</imageId><reportId>{}</reportId><resourceTypeSet>{types}</resourceTypeSet>{accounts}<state>{}</state>{reason}<creationTime>{}</creationTime><expirationTime>{}</expirationTime><tagSet/></item>",
        report.image_id,
        report.report_id,
        report.state,
        ec2_time(report.creation_time),
        ec2_time(report.expiration_time())
    )
}

/// The entries of the caller's `available` reports named (a report still `pending` or in `error`
/// has none to show).
fn describe_entries(model: &Mutex<Model>, call: &Call) -> Answer {
    let mut model = model.lock().unwrap();
    let reports = callers_reports(&mut model, call);
    let mut entries: Vec<(UsageReport, UsageEntry)> = reports
        .iter()
        .filter(|r| r.state == "available")
        .flat_map(|r| r.entries.iter().map(move |e| (r.clone(), e.clone())))
        .collect();
    for (name, values) in filters(call) {
        match name.as_str() {
            "account-id" => entries.retain(|(_, e)| values.contains(&e.account_id)),
            "resource-type" => entries.retain(|(_, e)| values.contains(&e.resource_type)),
            "creation-time" => entries.retain(|(r, _)| time_matches(r.creation_time, &values)),
            other => return error("InvalidParameterValue", &format!("filter {other}")),
        }
    }
    let (entries, next) = page(&model, call, &entries);
    let items: String = entries
        .iter()
        .map(|(r, e)| {
            format!(
                "<item><resourceType>{}</resourceType><reportId>{}</reportId><usageCount>{}</usageCount><accountId>{}</accountId><imageId>{}</imageId><reportCreationTime>{}</reportCreationTime></item>",
                e.resource_type, r.report_id, e.usage_count, e.account_id, r.image_id, ec2_time(r.creation_time)
            )
        })
        .collect();
    let next = next.map(|t| format!("<nextToken>{t}</nextToken>")).unwrap_or_default();
    ok(
        "DescribeImageUsageReportEntries",
        &format!("<imageUsageReportEntrySet>{items}</imageUsageReportEntrySet>{next}"),
    )
}

fn delete_report(model: &Mutex<Model>, call: &Call) -> Answer {
    let Some(report_id) = param(call, "ReportId") else { return error("MissingParameter", "ReportId") };
    let mut model = model.lock().unwrap();
    model.expire();
    let owned = model.reports.get(&report_id).is_some_and(|r| Some(&r.owner) == call.account.as_ref());
    if !owned {
        return error("InvalidImageUsageReportId.NotFound", &format!("The report '{report_id}' does not exist"));
    }
    model.reports.remove(&report_id);
    ok("DeleteImageUsageReport", "<return>true</return>")
}

/// `time` rounded to the nearest minute, as EC2 rounds a deprecation time.
pub fn to_nearest_minute(time: DateTime<Utc>) -> DateTime<Utc> {
    time.duration_round(Duration::minutes(1)).expect("a time rounds to the minute")
}

async fn enable_deprecation(model: Arc<Mutex<Model>>, call: Call, upstream: Upstream) -> Answer {
    let Some(image_id) = param(&call, "ImageId") else { return error("MissingParameter", "ImageId") };
    let Some(at) = param(&call, "DeprecateAt") else { return error("MissingParameter", "DeprecateAt") };
    let Ok(at) = DateTime::parse_from_rfc3339(&at) else { return error("InvalidParameterValue", "DeprecateAt") };
    if let Err(answer) = own_image(&call, &upstream, &image_id).await {
        return answer;
    }
    let at = to_nearest_minute(at.with_timezone(&Utc));
    let mut model = model.lock().unwrap();
    let now = model.now();
    if at < now {
        return error("InvalidParameterValue", "You can't specify a date in the past for DeprecateAt");
    }
    if at > now + Duration::days(3653) {
        return error("InvalidParameterValue", "DeprecateAt: at most 10 years from now");
    }
    model.deprecations.insert(image_id, at);
    ok("EnableImageDeprecation", "<return>true</return>")
}

async fn disable_deprecation(model: Arc<Mutex<Model>>, call: Call, upstream: Upstream) -> Answer {
    let Some(image_id) = param(&call, "ImageId") else { return error("MissingParameter", "ImageId") };
    if let Err(answer) = own_image(&call, &upstream, &image_id).await {
        return answer;
    }
    model.lock().unwrap().deprecations.remove(&image_id);
    ok("DisableImageDeprecation", "<return>true</return>")
}

/// moto's answer, without the disabled images unless `IncludeDisabled=true`, with each deprecated
/// image's `deprecationTime`.
async fn describe_images(model: Arc<Mutex<Model>>, call: Call, upstream: Upstream) -> Answer {
    let (status, answer) = upstream.forward(&call.body).await;
    if status != 200 {
        return (status, answer);
    }
    let include_disabled = call.param("IncludeDisabled").is_some_and(|v| v == "true");
    let deprecations = model.lock().unwrap().deprecations.clone();
    let edited = edit_image_items(&answer, |item| {
        if !include_disabled && item.contains("<imageState>disabled</imageState>") {
            return None;
        }
        let id = element(item, "imageId").unwrap_or_default().to_string();
        match deprecations.get(&id) {
            Some(at) if !item.contains("<deprecationTime>") => {
                let tag = format!("<imageId>{id}</imageId>");
                Some(item.replacen(&tag, &format!("{tag}<deprecationTime>{}</deprecationTime>", ec2_time(*at)), 1))
            }
            _ => Some(item.to_string()),
        }
    });
    (200, edited)
}

/// `answer` with each image (a top-level `<item>` of `<imagesSet>`) replaced by what `edit` makes
/// of it (`None`: left out).
pub fn edit_image_items(answer: &str, edit: impl Fn(&str) -> Option<String>) -> String {
    let open = "<imagesSet>";
    let Some(set) = answer.find(open).map(|at| at + open.len()) else { return answer.to_string() };
    let Some(set_end) = answer.rfind("</imagesSet>") else { return answer.to_string() };
    let mut out = answer[..set].to_string();
    let inner = &answer[set..set_end];
    let mut rest = inner;
    while let Some(start) = rest.find("<item>") {
        out.push_str(&rest[..start]);
        let (mut depth, mut at) = (0usize, start);
        let end = loop {
            let next_open = rest[at..].find("<item>").map(|i| i + at);
            let close = rest[at..].find("</item>").map(|i| i + at).unwrap_or(rest.len());
            match next_open {
                Some(o) if o < close => {
                    depth += 1;
                    at = o + "<item>".len();
                }
                _ => {
                    depth = depth.saturating_sub(1);
                    at = (close + "</item>".len()).min(rest.len());
                    if depth == 0 {
                        break at;
                    }
                }
            }
        };
        if let Some(item) = edit(&rest[start..end]) {
            out.push_str(&item);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.push_str(&answer[set_end..]);
    out
}

/// One launch permission: `(field, value)`, the field one of `UserId`, `Group`,
/// `OrganizationArn`, `OrganizationalUnitArn`.
pub type LaunchPermission = (String, String);

/// The launch permissions of an `DescribeImageAttribute` answer.
pub fn launch_permissions(answer: &str) -> Vec<LaunchPermission> {
    let Some(section) = answer.split("<launchPermission>").nth(1).and_then(|s| s.split("</launchPermission>").next())
    else {
        return Vec::new();
    };
    let fields = [
        ("userId", "UserId"),
        ("group", "Group"),
        ("organizationArn", "OrganizationArn"),
        ("organizationalUnitArn", "OrganizationalUnitArn"),
    ];
    section
        .split("<item>")
        .skip(1)
        .filter_map(|item| {
            fields.iter().find_map(|(xml, field)| element(item, xml).map(|v| (field.to_string(), v.to_string())))
        })
        .collect()
}

/// moto's `DisableImage`, then every launch permission removed, as EC2 does.
async fn disable_image(call: Call, upstream: Upstream) -> Answer {
    let image_id = call.param("ImageId").unwrap_or_default();
    let described = upstream
        .forward(&format!(
            "Action=DescribeImageAttribute&Version=2016-11-15&ImageId={image_id}&Attribute=launchPermission"
        ))
        .await;
    let disabled = upstream.forward(&call.body).await;
    if disabled.0 != 200 || described.0 != 200 {
        return disabled;
    }
    let permissions = launch_permissions(&described.1);
    if !permissions.is_empty() {
        let mut body =
            format!("Action=ModifyImageAttribute&Version=2016-11-15&ImageId={image_id}&Attribute=launchPermission");
        for (n, (field, value)) in permissions.iter().enumerate() {
            body.push_str(&format!("&LaunchPermission.Remove.{}.{field}={}", n + 1, encode(value)));
        }
        let removed = upstream.forward(&body).await;
        if removed.0 != 200 {
            return removed;
        }
    }
    disabled
}

/// The launch permissions a `ModifyImageAttribute` call adds and removes, in either of EC2's forms
/// (`LaunchPermission.Add.N.*` / `.Remove.N.*`, or `OperationType` with `UserId.N`,
/// `UserGroup.N`, `OrganizationArn.N`, `OrganizationalUnitArn.N`).
pub fn permission_changes(call: &Call) -> (Vec<LaunchPermission>, Vec<LaunchPermission>) {
    let fields = ["UserId", "Group", "OrganizationArn", "OrganizationalUnitArn"];
    let structured = |side: &str| -> Vec<LaunchPermission> {
        (1..)
            .map_while(|n| {
                let found: Vec<LaunchPermission> = fields
                    .iter()
                    .filter_map(|f| call.param(&format!("LaunchPermission.{side}.{n}.{f}")).map(|v| (f.to_string(), v)))
                    .collect();
                (!found.is_empty()).then_some(found)
            })
            .flatten()
            .collect()
    };
    let (mut add, mut remove) = (structured("Add"), structured("Remove"));
    let listed: Vec<LaunchPermission> = [
        ("UserId", "UserId"),
        ("UserGroup", "Group"),
        ("OrganizationArn", "OrganizationArn"),
        ("OrganizationalUnitArn", "OrganizationalUnitArn"),
    ]
    .iter()
    .flat_map(|(param, field)| call.list(param).into_iter().map(|v| (field.to_string(), v)))
    .collect();
    match call.param("OperationType").as_deref() {
        Some("add") => add.extend(listed),
        Some("remove") => remove.extend(listed),
        _ => {}
    }
    (add, remove)
}

/// A disabled image cannot be shared; each permission listed is applied (moto applies only the
/// first organisation and OU of the `OperationType` form).
async fn modify_image_attribute(call: Call, upstream: Upstream) -> Answer {
    let (add, remove) = permission_changes(&call);
    if add.is_empty() && remove.is_empty() {
        return upstream.forward(&call.body).await;
    }
    let image_id = call.param("ImageId").unwrap_or_default();
    if !add.is_empty() {
        let (status, answer) =
            upstream.forward(&format!("Action=DescribeImages&Version=2016-11-15&ImageId.1={image_id}")).await;
        if status != 200 {
            return (status, answer);
        }
        if answer.contains("<imageState>disabled</imageState>") {
            return error(
                "OperationNotPermitted",
                &format!("The image '{image_id}' is disabled: a disabled AMI can't be shared"),
            );
        }
    }
    let mut body =
        format!("Action=ModifyImageAttribute&Version=2016-11-15&ImageId={image_id}&Attribute=launchPermission");
    for (side, permissions) in [("Add", &add), ("Remove", &remove)] {
        for (n, (field, value)) in permissions.iter().enumerate() {
            body.push_str(&format!("&LaunchPermission.{side}.{}.{field}={}", n + 1, encode(value)));
        }
    }
    upstream.forward(&body).await
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The text of the first `<name>` element.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find('<')? + start;
    Some(&xml[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprecation_times_round_to_the_nearest_minute() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(to_nearest_minute(at("2026-12-07T18:31:29Z")), at("2026-12-07T18:31:00Z"));
        assert_eq!(to_nearest_minute(at("2026-12-07T18:31:30Z")), at("2026-12-07T18:32:00Z"));
        assert_eq!(ec2_time(at("2026-12-07T18:31:00Z")), "2026-12-07T18:31:00.000Z");
    }

    #[test]
    fn image_items_are_edited_whole_with_their_nested_items() {
        let answer = "<DescribeImagesResponse><imagesSet><item><imageId>ami-1</imageId><tagSet><item><key>k</key></item></tagSet><imageState>disabled</imageState></item><item><imageId>ami-2</imageId><imageState>available</imageState></item></imagesSet></DescribeImagesResponse>";
        let kept = edit_image_items(answer, |item| (!item.contains("disabled")).then(|| item.to_string()));
        assert_eq!(kept, "<DescribeImagesResponse><imagesSet><item><imageId>ami-2</imageId><imageState>available</imageState></item></imagesSet></DescribeImagesResponse>");
        assert_eq!(edit_image_items(answer, |item| Some(item.to_string())), answer);
    }

    #[test]
    fn both_forms_of_launch_permission_changes_are_read() {
        let call = |body: &str| Call { body: body.into(), ..Call::default() };
        let (add, remove) = permission_changes(&call(
            "Action=ModifyImageAttribute&OperationType=add&UserId.1=111122223333&OrganizationalUnitArn.1=ou-1&OrganizationalUnitArn.2=ou-2",
        ));
        assert_eq!(add.len(), 3);
        assert!(remove.is_empty());
        let (add, remove) = permission_changes(&call(
            "Action=ModifyImageAttribute&LaunchPermission.Remove.1.Group=all&LaunchPermission.Add.1.OrganizationArn=arn%3Ao",
        ));
        assert_eq!(
            (add, remove),
            (vec![("OrganizationArn".into(), "arn:o".into())], vec![("Group".into(), "all".into())])
        );
        let described = "<launchPermission><item><userId>111122223333</userId></item><item><group>all</group></item><item><organizationalUnitArn>arn:ou</organizationalUnitArn></item></launchPermission>";
        assert_eq!(launch_permissions(described).len(), 3);
    }
}
