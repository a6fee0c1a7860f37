//! The integration-test harness: one moto server per test binary, started on loopback by the
//! tests themselves, and a fresh AWS account on it for every test (the `x-moto-account-id`
//! header), so tests run in parallel without seeing each other's resources.
//!
//! moto is found at `$MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server` (what `make test`
//! installs), else `moto_server` on `PATH`. When none can be started the tests fail with a
//! message saying how to get it: they never skip silently.
//!
//! The server loads two public AMIs from `fixtures/amis.json` (Amazon Linux, owner
//! `137112412989`, and RHEL, owner `309956199498`; moto gives every loaded AMI the alias
//! `amazon`) instead of moto's ~1,300 defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failure here should panic.

pub mod event_pattern;
pub mod image_lifecycle;
pub mod inbox;
pub mod ledger;
pub mod ledger_iam;
pub mod proxy;
pub mod recycle_bin;
pub mod savings;
pub mod template;
pub mod try_org;
pub mod try_run;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

pub const REGION: &str = "us-east-1";

/// The sweeper's configuration for moto: `DRY_RUN=false`, `MIN_AGE_HOURS=0`, no Recycle Bin check,
/// no circuit breaker and one-step retirement (`RETIRE_STAGES=deregister`), unless `overrides` says
/// otherwise.
pub fn sweeper_config(overrides: &[(&str, &str)]) -> orphan_snapshot_sweeper::Config {
    let mut vars: std::collections::HashMap<String, String> = [
        ("AWS_REGION", REGION),
        ("DRY_RUN", "false"),
        ("MIN_AGE_HOURS", "0"),
        ("RECYCLE_BIN_CHECK", "false"),
        ("MAX_DELETE_FRACTION", "1.0"),
        // Retirement in one step (today's): the staged one is asked for by name.
        ("RETIRE_STAGES", "deregister"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    orphan_snapshot_sweeper::Config::from_env(&move |name: &str| vars.get(name).cloned()).unwrap()
}
pub const AMAZON_LINUX_AMI: &str = "ami-0a1b2c3d4e5f00001";
pub const AMAZON_OWNER_ID: &str = "137112412989";
pub const RHEL_AMI: &str = "ami-0a1b2c3d4e5f00002";
pub const RED_HAT_OWNER_ID: &str = "309956199498";

/// The moto server of this test binary, behind a proxy that answers the EC2 actions moto lacks
/// ([`MOTO_GAPS`]) with empty answers, as an account without locks, Fast Snapshot Restores or
/// image references would: every test (and every proxy a test puts in front) reaches moto
/// through it. A test that needs other answers injects them in its own proxy.
pub struct Moto {
    /// Where tests send their calls: the gap-filling proxy.
    pub endpoint: String,
    /// moto itself.
    pub upstream: String,
    // Holding the wrapper's stdin: when this process exits, the pipe closes and the wrapper
    // kills moto, so no server outlives its tests (statics are never dropped).
    _guard: Mutex<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The server, started on first use.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(start_moto)
}

fn moto_command() -> String {
    if let Ok(path) = std::env::var("MOTO_SERVER") {
        return path;
    }
    let venv = workspace_root().join(".venv/bin/moto_server");
    if venv.exists() {
        return venv.display().to_string();
    }
    "moto_server".to_string()
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn start_moto() -> Moto {
    let command = moto_command();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let amis = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/amis.json");
    let log = std::env::temp_dir().join(format!("amiguard-moto-{port}.log"));
    // `read` returns when our end of the pipe closes (this process exited): then kill moto.
    let script = r#""$0" -H 127.0.0.1 -p "$1" >"$2" 2>&1 & child=$!; read -r _; kill $child"#;
    let mut child = Command::new("sh")
        .args(["-c", script, &command, &port.to_string(), &log.display().to_string()])
        .env("MOTO_AMIS_PATH", &amis)
        .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sh to start moto: {e}"));
    let upstream = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get_status(port, "/moto-api/") == Some(200) {
            let endpoint = fill_gaps(&upstream);
            return Moto { endpoint, upstream, _guard: Mutex::new(child) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    panic!(
        "moto server could not be started with `{command}` (its output: {output:?}).\n\
         Run `make test` (it installs moto[server] into .venv), or install it with \
         `pip install 'moto[server]==5.2.5'`, or set MOTO_SERVER to the moto_server executable."
    );
}

/// EC2 actions moto 5.2 does not implement (it answers an HTML 500), and the empty answer an
/// account without any of them gets from AWS.
pub const MOTO_GAPS: [(&str, &str); 4] = [
    ("DescribeLockedSnapshots", "<snapshotSet/>"),
    ("DescribeFastSnapshotRestores", "<fastSnapshotRestoreSet/>"),
    ("DescribeImageReferences", "<imageReferenceSet/>"),
    // An image EC2 records no lineage for (not copied or built from another).
    ("GetImageAncestry", "<imageAncestryEntrySet/>"),
];

/// An EC2 answer of `action` with `content` inside, as EC2 writes it.
pub fn ec2_answer(action: &str, content: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>amiguard-tests</requestId>{content}</{action}Response>"
    )
}

/// A DescribeImages answer with the state of the image named `name` set to `state` (moto makes
/// every image `available` at once). Each image is one `<item>` of `<imagesSet>` (items nest:
/// block device mappings and tags are items too).
pub fn with_image_state(answer: &str, name: &str, state: &str) -> String {
    let named = format!("<name>{name}</name>");
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    let Some(set) = rest.find("<imagesSet>") else { return answer.to_string() };
    out.push_str(&rest[..set + "<imagesSet>".len()]);
    rest = &rest[set + "<imagesSet>".len()..];
    while let Some(start) = rest.find("<item>").filter(|start| rest.find("</imagesSet>").is_some_and(|e| *start < e)) {
        out.push_str(&rest[..start]);
        let (mut depth, mut at) = (0usize, start);
        let end = loop {
            let open = rest[at..].find("<item>").map(|i| i + at);
            let close = rest[at..].find("</item>").map(|i| i + at).unwrap_or(rest.len());
            match open {
                Some(open) if open < close => {
                    depth += 1;
                    at = open + "<item>".len();
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
        let item = &rest[start..end];
        if item.contains(&named) {
            let from = ["available", "pending", "failed"]
                .iter()
                .map(|s| format!("<imageState>{s}</imageState>"))
                .find(|tag| item.contains(tag.as_str()));
            match from {
                Some(from) => out.push_str(&item.replacen(&from, &format!("<imageState>{state}</imageState>"), 1)),
                None => out.push_str(item),
            }
        } else {
            out.push_str(item);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// EC2's deregistration protection, which moto lacks, emulated at `proxy`: it answers
/// `EnableImageDeregistrationProtection` and `DisableImageDeregistrationProtection` and shows the
/// protection in every DescribeImages answer, as EC2 words it (`enabled-without-cooldown`,
/// `enabled-with-cooldown`; disabling one with a cooldown leaves `disabled after <time>`, still
/// protected). Answers the protection of each image protected now.
pub fn emulate_deregistration_protection(proxy: &proxy::Proxy) -> Arc<Mutex<BTreeMap<String, String>>> {
    let protected: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    for (action, on) in [("EnableImageDeregistrationProtection", true), ("DisableImageDeregistrationProtection", false)]
    {
        let protected = protected.clone();
        proxy.inject(proxy::Fault::answer_with(action, move |request| {
            let param = |name: &str| request.split('&').find_map(|pair| pair.strip_prefix(name)).unwrap_or_default();
            let image = param("ImageId=").to_string();
            let mut protections = protected.lock().unwrap();
            let with_cooldown = protections.get(&image).is_some_and(|p| p == "enabled-with-cooldown");
            match (on, param("WithCooldown=") == "true") {
                (true, true) => protections.insert(image, "enabled-with-cooldown".into()),
                (true, false) => protections.insert(image, "enabled-without-cooldown".into()),
                (false, _) if with_cooldown => protections.insert(image, "disabled after 2026-12-31T00:00:00Z".into()),
                (false, _) => protections.remove(&image),
            };
            ec2_answer(action, "<return>true</return>")
        }));
    }
    let shown = protected.clone();
    proxy.inject(proxy::Fault::rewrite_with("DescribeImages", move |answer| {
        shown.lock().unwrap().iter().fold(answer.to_string(), |answer, (image, protection)| {
            let id = format!("<imageId>{image}</imageId>");
            answer.replace(&id, &format!("{id}<deregistrationProtection>{protection}</deregistrationProtection>"))
        })
    }));
    protected
}

/// The `StateTransitionReason` EC2 states for an instance, by instance id, when a test says so
/// ([`ec2_says_stopped_at`], [`ec2_states_transition_reason`]).
static STATED_REASONS: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();

fn stated_reasons() -> std::sync::MutexGuard<'static, BTreeMap<String, String>> {
    STATED_REASONS.get_or_init(Mutex::default).lock().unwrap()
}

/// EC2 says, from now on, that `instance_id` last stopped at `time` (RFC 3339): its
/// `StateTransitionReason` reads `User initiated (2026-11-27 01:00:00 GMT)`, as AWS writes it,
/// instead of what moto says (the moment `StopInstances` ran, as `User initiated (… UTC)`).
/// Every test reaches moto through the gap-filling proxy, which writes it.
pub fn ec2_says_stopped_at(instance_id: &str, time: &str) {
    let at = chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
    let reason = format!("User initiated ({} GMT)", at.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S"));
    ec2_states_transition_reason(instance_id, &reason);
}

/// EC2 says, from now on, that `instance_id`'s `StateTransitionReason` is `reason` (`""`: EC2
/// states no time of the stop, as for some stops AWS makes).
pub fn ec2_states_transition_reason(instance_id: &str, reason: &str) {
    stated_reasons().insert(instance_id.to_string(), reason.to_string());
}

/// A DescribeInstances answer with the `<reason>` of each instance a test named set to what
/// the test said EC2 states (the first `<reason>` after the instance's `<instanceId>` is its own).
pub fn with_stated_stop_reasons(answer: &str) -> String {
    let reasons = stated_reasons().clone();
    let mut out = answer.to_string();
    for (instance, reason) in reasons {
        let id = format!("<instanceId>{instance}</instanceId>");
        let Some(at) = out.find(&id).map(|at| at + id.len()) else { continue };
        let tail = &out[at..];
        let next_instance = tail.find("<instanceId>").unwrap_or(tail.len());
        let element = ["<reason>", "<reason/>"].iter().filter_map(|open| tail.find(open).map(|i| (i, *open))).min();
        let Some((start, open)) = element.filter(|(start, _)| *start < next_instance) else { continue };
        let end = if open == "<reason/>" {
            start + open.len()
        } else {
            match tail[start..].find("</reason>") {
                Some(close) => start + close + "</reason>".len(),
                None => continue,
            }
        };
        let escaped = reason.replace('&', "&amp;").replace('<', "&lt;");
        out.replace_range(at + start..at + end, &format!("<reason>{escaped}</reason>"));
    }
    out
}

/// Starts the gap-filling proxy in front of `upstream` on a thread (and runtime) of its own, so
/// that it outlives every test's runtime; answers its endpoint.
fn fill_gaps(upstream: &str) -> String {
    let upstream = upstream.to_string();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let proxy = proxy::Proxy::start(&upstream).await;
            for (action, content) in MOTO_GAPS {
                proxy.inject(proxy::Fault::respond(action, ec2_answer(action, content)));
            }
            proxy.inject(proxy::Fault::snapshot_tags_on_create_image());
            proxy.inject(proxy::Fault::rewrite_with("DescribeInstances", with_stated_stop_reasons));
            sender.send(proxy.endpoint.clone()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    receiver.recv().expect("the gap-filling proxy starts")
}

fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Sends `x-moto-account-id` on every request: moto keeps each account's resources apart.
#[derive(Debug)]
struct MotoAccount(String);

impl Intercept for MotoAccount {
    fn name(&self) -> &'static str {
        "MotoAccount"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context.request_mut().headers_mut().insert("x-moto-account-id", self.0.clone());
        Ok(())
    }
}

static NEXT_ACCOUNT: AtomicU64 = AtomicU64::new(0);

/// A fresh, empty AWS account on the test binary's moto server.
#[derive(Clone)]
pub struct TestAccount {
    pub account_id: String,
    pub region: String,
    sdk_config: SdkConfig,
}

impl TestAccount {
    /// A new account, in `us-east-1`.
    pub async fn new() -> Self {
        // 2xxxxxxxxxxx: never moto's default 123456789012, never a fixture owner.
        let n = NEXT_ACCOUNT.fetch_add(1, Ordering::SeqCst);
        Self::with_id(&format!("2{:05}{:06}", std::process::id() % 100_000, n)).await
    }

    /// The account `account_id` (another party, e.g. a publisher of AMIs).
    pub async fn with_id(account_id: &str) -> Self {
        let endpoint = moto().endpoint.clone();
        let sdk_config = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "amiguard-tests"))
            .retry_config(amiguard::sdk::retry_config())
            .timeout_config(amiguard::sdk::timeout_config())
            .load()
            .await;
        Self { account_id: account_id.to_string(), region: REGION.to_string(), sdk_config }
    }

    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk_config
    }

    /// The same account, its calls going through `proxy` (to record them or inject faults).
    pub fn through(&self, proxy: &proxy::Proxy) -> Self {
        let sdk_config = self.sdk_config.to_builder().endpoint_url(&proxy.endpoint).build();
        Self { sdk_config, ..self.clone() }
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        self.ec2_in(&self.region)
    }

    pub fn ec2_in(&self, region: &str) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::config::Builder::from(&self.sdk_config)
            .region(Region::new(region.to_string()))
            .interceptor(MotoAccount(self.account_id.clone()))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    pub fn sns(&self) -> aws_sdk_sns::Client {
        let config = aws_sdk_sns::config::Builder::from(&self.sdk_config)
            .interceptor(MotoAccount(self.account_id.clone()))
            .build();
        aws_sdk_sns::Client::from_conf(config)
    }

    /// STS as this account (moto answers `GetCallerIdentity` with the account of the request).
    pub fn sts(&self) -> aws_sdk_sts::Client {
        let config = aws_sdk_sts::config::Builder::from(&self.sdk_config)
            .interceptor(MotoAccount(self.account_id.clone()))
            .build();
        aws_sdk_sts::Client::from_conf(config)
    }

    /// Security Hub as this account (moto keeps each account's findings apart).
    pub fn securityhub(&self) -> aws_sdk_securityhub::Client {
        let config = aws_sdk_securityhub::config::Builder::from(&self.sdk_config)
            .interceptor(MotoAccount(self.account_id.clone()))
            .build();
        aws_sdk_securityhub::Client::from_conf(config)
    }

    /// The EBS direct APIs as this account.
    pub fn ebs(&self) -> aws_sdk_ebs::Client {
        let config = aws_sdk_ebs::config::Builder::from(&self.sdk_config)
            .interceptor(MotoAccount(self.account_id.clone()))
            .build();
        aws_sdk_ebs::Client::from_conf(config)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config)
            .interceptor(MotoAccount(self.account_id.clone()))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::from(&self.sdk_config)
            .interceptor(MotoAccount(self.account_id.clone()))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// Runs one instance of `image_id` tagged `tags` and returns its id (moto accepts any image id).
    pub async fn run_instance(&self, image_id: &str, tags: &[(&str, &str)]) -> String {
        let mut request = self
            .ec2()
            .run_instances()
            .image_id(image_id)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1);
        if !tags.is_empty() {
            let spec = aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .set_tags(Some(
                    tags.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build()).collect(),
                ))
                .build();
            request = request.tag_specifications(spec);
        }
        let output = request.send().await.expect("RunInstances");
        output.instances()[0].instance_id().unwrap().to_string()
    }

    /// Runs one untagged instance of `image_id` in `region` and returns its id.
    pub async fn run_instance_in(&self, region: &str, image_id: &str) -> String {
        let output = self
            .ec2_in(region)
            .run_instances()
            .image_id(image_id)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances");
        output.instances()[0].instance_id().unwrap().to_string()
    }

    /// Runs an instance and stops it (moto stops at once).
    pub async fn stopped_instance(&self, tags: &[(&str, &str)]) -> String {
        let id = self.run_instance(AMAZON_LINUX_AMI, tags).await;
        self.ec2().stop_instances().instance_ids(&id).send().await.expect("StopInstances");
        id
    }

    /// `copy-image` of `source` (in this region) into this account, named `name`: the copy's id.
    pub async fn copy_image(&self, source: &str, name: &str) -> String {
        let copied = self
            .ec2()
            .copy_image()
            .source_image_id(source)
            .source_region(&self.region)
            .name(name)
            .send()
            .await
            .expect("CopyImage");
        copied.image_id().expect("CopyImage answers an image id").to_string()
    }
}

/// Loads `events/<name>` from the workspace as JSON.
pub fn sample_event(name: &str) -> serde_json::Value {
    let path = workspace_root().join("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_reason_a_test_states_is_written_for_that_instance_only() {
        let answer = "<instancesSet><item><instanceId>i-0stated</instanceId><reason>User initiated (2026-12-07 13:54:12 UTC)</reason></item>\
            <item><instanceId>i-0other</instanceId><reason>User initiated (2026-12-07 13:54:12 UTC)</reason></item>\
            <item><instanceId>i-0empty</instanceId><reason/></item></instancesSet>";
        ec2_says_stopped_at("i-0stated", "2026-11-27T01:00:00Z");
        ec2_states_transition_reason("i-0empty", "Server.ScheduledStop: Stopped due to scheduled retirement");
        let edited = with_stated_stop_reasons(answer);
        assert!(
            edited.contains(
                "<instanceId>i-0stated</instanceId><reason>User initiated (2026-11-27 01:00:00 GMT)</reason>"
            ),
            "{edited}"
        );
        assert!(
            edited
                .contains("<instanceId>i-0other</instanceId><reason>User initiated (2026-12-07 13:54:12 UTC)</reason>"),
            "{edited}"
        );
        assert!(edited.contains("<instanceId>i-0empty</instanceId><reason>Server.ScheduledStop: Stopped due to scheduled retirement</reason>"), "{edited}");
    }

    #[test]
    fn one_images_state_is_set_by_its_name_whatever_the_order_of_its_fields() {
        let answer = "<DescribeImagesResponse><imagesSet>\
            <item><blockDeviceMapping><item><deviceName>/dev/xvda</deviceName></item></blockDeviceMapping><name>a</name><imageId>ami-1</imageId><imageState>available</imageState><tagSet><item><key>k</key></item></tagSet></item>\
            <item><name>b</name><imageId>ami-2</imageId><imageState>available</imageState></item>\
            </imagesSet></DescribeImagesResponse>";
        let edited = with_image_state(answer, "b", "pending");
        assert!(
            edited.contains("<name>a</name><imageId>ami-1</imageId><imageState>available</imageState>"),
            "{edited}"
        );
        assert!(edited.contains("<name>b</name><imageId>ami-2</imageId><imageState>pending</imageState>"), "{edited}");
        assert_eq!(edited.len(), answer.len() + "pending".len() - "available".len());
        assert_eq!(with_image_state(answer, "c", "failed"), answer);
    }
}
