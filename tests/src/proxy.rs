//! A small HTTP proxy between the SDK and moto that records every call (service, action,
//! account) and injects faults: throttle a share of calls, fail a chosen call with an error
//! answer, cut the connection, or delay. It serves the fault-injection tests, the request counts
//! of the benchmarks and the least-privilege proof (the actions each function really calls).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One call that reached the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Call {
    /// The signing name: `ec2`, `sns`, `sqs`, `sts`.
    pub service: String,
    /// `DescribeImages`, `Publish`, ...
    pub action: String,
    pub account: Option<String>,
    /// Whether the proxy answered it with a fault instead of forwarding it.
    pub faulted: bool,
    /// The request's body (EC2's form parameters, DynamoDB's JSON).
    pub body: String,
    /// The HTTP status it was answered with (`None`: no answer, or not yet).
    pub status: Option<u16>,
    /// The region it was signed for (the SigV4 credential scope's).
    pub region: String,
    /// The request's path and query (`/snapshots/snap-1/blocks?maxResults=10000`): what names
    /// the resource of a REST call (the EBS direct APIs).
    pub path: String,
}

impl Call {
    /// Whether the service (not a fault of the proxy) answered it with success.
    pub fn succeeded(&self) -> bool {
        !self.faulted && self.status.is_some_and(|status| status < 400)
    }

    /// The value of the form parameter `name` (EC2's query protocol), decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params().into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
    }

    /// The values of the numbered list `prefix.1`, `prefix.2`, ... (e.g. `ResourceId`), in order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        (1..).map_while(|n| self.param(&format!("{prefix}.{n}"))).collect()
    }

    /// Every form parameter of the body, decoded.
    pub fn params(&self) -> Vec<(String, String)> {
        self.body
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (form_decode(key), form_decode(value)))
            .collect()
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What to do to the calls of `action` (every action when `None`).
#[derive(Debug, Clone)]
pub struct Fault {
    pub action: Option<String>,
    /// Only calls whose body contains this text (e.g. one snapshot id).
    pub body_contains: Option<String>,
    pub kind: FaultKind,
    /// How many matching calls to fault; `None`: all of them.
    pub times: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer `RequestLimitExceeded` (HTTP 503) to this share of the matching calls, spread evenly.
    Throttle(f64),
    /// Answer with this HTTP status and AWS error code.
    Error { status: u16, code: String },
    /// Close the connection without an answer.
    Cut,
    /// Forward after this delay.
    Delay(Duration),
    /// Answer this XML (or JSON) body with HTTP 200 instead of forwarding: an action moto lacks.
    Respond(String),
    /// Forward, then replace `from` by `to` in the answer: a field moto cannot set.
    Rewrite { from: String, to: String },
    /// Forward, then pass the answer's body through this function: a field moto cannot set, where
    /// it depends on the answer (the state of one image among many).
    RewriteWith(BodyRewrite),
    /// Answer (HTTP 200) what this function makes of the request's body instead of forwarding:
    /// an action moto lacks, whose answer or effect depends on the request.
    AnswerWith(BodyRewrite),
    /// AWS's `CreateImage` with a `snapshot` TagSpecification, which moto 5.2 answers with an
    /// HTML 500: the call is forwarded without that specification, then the new image's
    /// snapshots are tagged with its tags through moto's `CreateTags`, so that the tests see what
    /// AWS does (the snapshots carry the tags from the moment they exist). A call without one is
    /// forwarded as it is.
    SnapshotTagsOnCreateImage,
    /// Answer what this function makes of the whole call (its account and body), with the status
    /// it says; it may forward requests of its own first ([`Upstream`]): an emulation of actions
    /// whose answer or effect depends on the calling account or on moto's state.
    Handle(CallHandler),
}

/// An answer: its HTTP status and body.
pub type Answer = (u16, String);

/// A function from a call to its answer, for [`FaultKind::Handle`].
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct CallHandler(
    Arc<dyn Fn(Call, Upstream) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>> + Send + Sync>,
);

impl std::fmt::Debug for CallHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallHandler(..)")
    }
}

/// Where a handled call would have gone: forwards a body of the handler's choosing with the
/// call's own headers (its account, its signing scope).
#[derive(Debug, Clone)]
pub struct Upstream {
    upstream: String,
    head: String,
}

impl Upstream {
    /// Sends `body` instead of the call's and answers what came back (its body de-chunked);
    /// status 0 when the upstream could not be reached.
    pub async fn forward(&self, body: &str) -> Answer {
        let head = with_content_length(&self.head, body.len());
        match forward(&self.upstream, &head, body.as_bytes()).await {
            Ok(response) => split_answer(&response),
            Err(e) => (0, e.to_string()),
        }
    }
}

/// The status and the (de-chunked) body of an HTTP answer.
fn split_answer(response: &[u8]) -> Answer {
    let status = status_of(response).unwrap_or(0);
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return (status, String::new()) };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut body = response[split + 4..].to_vec();
    if header(&format!("{head}\r\n"), "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A function over an answer's body, for [`FaultKind::RewriteWith`].
#[derive(Clone)]
pub struct BodyRewrite(Arc<dyn Fn(&str) -> String + Send + Sync>);

impl std::fmt::Debug for BodyRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyRewrite(..)")
    }
}

impl Fault {
    pub fn throttle(share: f64) -> Self {
        Self { action: None, body_contains: None, kind: FaultKind::Throttle(share), times: None }
    }
    pub fn error(action: &str, status: u16, code: &str) -> Self {
        Self::on(action, FaultKind::Error { status, code: code.into() })
    }
    pub fn cut(action: &str) -> Self {
        Self::on(action, FaultKind::Cut)
    }
    pub fn delay(action: &str, delay: Duration) -> Self {
        Self::on(action, FaultKind::Delay(delay))
    }
    /// Answers `action` with `body` (status 200) instead of forwarding it.
    pub fn respond(action: &str, body: impl Into<String>) -> Self {
        Self::on(action, FaultKind::Respond(body.into()))
    }
    /// Forwards `action` and replaces every `from` by `to` in moto's answer.
    pub fn rewrite(action: &str, from: impl Into<String>, to: impl Into<String>) -> Self {
        Self::on(action, FaultKind::Rewrite { from: from.into(), to: to.into() })
    }
    /// Forwards `action` and passes moto's answer through `edit`.
    pub fn rewrite_with(action: &str, edit: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        Self::on(action, FaultKind::RewriteWith(BodyRewrite(Arc::new(edit))))
    }
    /// Answers `action` with what `answer` makes of the request's body, instead of forwarding it.
    pub fn answer_with(action: &str, answer: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        Self::on(action, FaultKind::AnswerWith(BodyRewrite(Arc::new(answer))))
    }
    /// AWS's snapshot TagSpecifications on `CreateImage`, which moto lacks
    /// ([`FaultKind::SnapshotTagsOnCreateImage`]).
    pub fn snapshot_tags_on_create_image() -> Self {
        Self::on("CreateImage", FaultKind::SnapshotTagsOnCreateImage)
    }
    /// Answers `action` with what `handle` makes of the call ([`FaultKind::Handle`]).
    pub fn handle_with<F, Fut>(action: &str, handle: F) -> Self
    where
        F: Fn(Call, Upstream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Answer> + Send + 'static,
    {
        Self::on(
            action,
            FaultKind::Handle(CallHandler(Arc::new(move |call, upstream| Box::pin(handle(call, upstream))))),
        )
    }
    fn on(action: &str, kind: FaultKind) -> Self {
        Self { action: Some(action.into()), body_contains: None, kind, times: None }
    }
    /// Only the calls whose body (or for a call without one, its path) contains `text`.
    pub fn when_body_contains(mut self, text: &str) -> Self {
        self.body_contains = Some(text.into());
        self
    }
    /// Only the first `n` matching calls.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    faults: Vec<(Fault, usize)>,
}

/// A proxy in front of `upstream`, serving on a free loopback port until it is dropped (or its
/// runtime ends).
pub struct Proxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (state, upstream) = (shared.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &state).await;
                });
            }
        });
        Self { endpoint, state, task }
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().expect("proxy state").faults.push((fault, 0));
    }

    pub fn clear_faults(&self) {
        self.state.lock().expect("proxy state").faults.clear();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("proxy state").calls.clone()
    }

    /// How many calls of `action` reached the proxy (faulted or not).
    pub fn count(&self, action: &str) -> usize {
        self.calls().iter().filter(|c| c.action == action).count()
    }
}

/// Serves one request of a client connection, then closes it: every answer says `Connection:
/// close`, and a client that waits for the end of the answer (another proxy in front of this
/// one) must see it.
async fn serve(client: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    {
        let Some((head, body)) = read_request(&mut client).await? else { return Ok(()) };
        let call = Call {
            service: signing_service(&head).unwrap_or_default(),
            action: action(&head, &body).unwrap_or_default(),
            account: header(&head, "x-moto-account-id"),
            faulted: false,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: None,
            region: signing_region(&head).unwrap_or_default(),
            path: head.lines().next().and_then(|line| line.split(' ').nth(1)).unwrap_or_default().to_string(),
        };
        // A call without a body (a REST GET) is matched by its path instead.
        let matched = if body.is_empty() { call.path.clone() } else { String::from_utf8_lossy(&body).into_owned() };
        let fault = take_fault(state, &call.action, &matched);
        let service = call.service.clone();
        let handled = call.clone();
        let recorded = {
            let mut state = state.lock().expect("proxy state");
            state.calls.push(Call {
                faulted: matches!(fault, Some(FaultKind::Throttle(_) | FaultKind::Error { .. } | FaultKind::Cut)),
                ..call
            });
            state.calls.len() - 1
        };
        let response = match fault {
            Some(FaultKind::Throttle(_)) => error_response(&service, 503, "RequestLimitExceeded"),
            Some(FaultKind::Error { status, code }) => error_response(&service, status, &code),
            Some(FaultKind::Cut) => return Ok(()),
            Some(FaultKind::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                forward(upstream, &head, &body).await?
            }
            Some(FaultKind::Respond(answer)) => ok_response(&service, &answer),
            Some(FaultKind::Rewrite { from, to }) => {
                rewrite(forward(upstream, &head, &body).await?, &|answer| answer.replace(&from, &to))
            }
            Some(FaultKind::RewriteWith(BodyRewrite(edit))) => rewrite(forward(upstream, &head, &body).await?, &*edit),
            Some(FaultKind::AnswerWith(BodyRewrite(answer))) => {
                ok_response(&service, &answer(&String::from_utf8_lossy(&body)))
            }
            Some(FaultKind::SnapshotTagsOnCreateImage) => {
                create_image_tagging_snapshots(upstream, &head, &body).await?
            }
            Some(FaultKind::Handle(CallHandler(handle))) => {
                let (status, answer) =
                    handle(handled, Upstream { upstream: upstream.to_string(), head: head.clone() }).await;
                response_with(&service, status, &answer)
            }
            None => forward(upstream, &head, &body).await?,
        };
        if let Some(call) = state.lock().expect("proxy state").calls.get_mut(recorded) {
            call.status = status_of(&response);
        }
        client.get_mut().write_all(&response).await?;
        client.get_mut().flush().await?;
    }
    client.get_mut().shutdown().await
}

/// The fault for this call: the first that applies. Rewrites compose instead: every rewrite that
/// applies edits the answer, in the order they were injected.
fn take_fault(state: &Mutex<State>, action: &str, body: &str) -> Option<FaultKind> {
    let mut state = state.lock().expect("proxy state");
    let mut rewrites: Vec<BodyRewrite> = Vec::new();
    for (fault, seen) in state.faults.iter_mut() {
        if fault.action.as_deref().is_some_and(|a| a != action) {
            continue;
        }
        if fault.body_contains.as_deref().is_some_and(|text| !body.contains(text)) {
            continue;
        }
        if fault.times.is_some_and(|limit| *seen >= limit) {
            continue;
        }
        let is_rewrite = matches!(fault.kind, FaultKind::Rewrite { .. } | FaultKind::RewriteWith(_));
        if !rewrites.is_empty() && !is_rewrite {
            // After a rewrite that applies, only rewrites do (and only they count as seen).
            continue;
        }
        let n = *seen;
        *seen += 1;
        let applies = match fault.kind {
            // Evenly spread: call n is throttled when the running share crosses a whole number.
            FaultKind::Throttle(share) => ((n + 1) as f64 * share).floor() > (n as f64 * share).floor(),
            _ => true,
        };
        match &fault.kind {
            _ if !applies => {}
            FaultKind::Rewrite { from, to } => {
                let (from, to) = (from.clone(), to.clone());
                rewrites.push(BodyRewrite(Arc::new(move |answer: &str| answer.replace(&from, &to))));
            }
            FaultKind::RewriteWith(edit) => rewrites.push(edit.clone()),
            other => return Some(other.clone()),
        }
    }
    match rewrites.len() {
        0 => None,
        _ => Some(FaultKind::RewriteWith(BodyRewrite(Arc::new(move |answer: &str| {
            rewrites.iter().fold(answer.to_string(), |answer, BodyRewrite(edit)| edit(&answer))
        })))),
    }
}

async fn read_request(client: &mut BufReader<TcpStream>) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if client.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let length: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    client.read_exact(&mut body).await?;
    Ok(Some((head, body)))
}

/// Forwards one request with `Connection: close` and returns moto's whole answer, which is then
/// relayed with its own framing (moto closes after each answer, which the SDK handles).
async fn forward(upstream: &str, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).await?;
    let mut request = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    server.write_all(request.as_bytes()).await?;
    server.write_all(body).await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;
    Ok(close_after(response))
}

/// `CreateImage` as AWS does it with a `snapshot` TagSpecification (moto answers an HTML 500):
/// forwarded without that specification, then the new image's snapshots (from moto's
/// `DescribeImages`) tagged with its tags by moto's `CreateTags`. The answer is CreateImage's;
/// a tagging moto refuses is answered as its error, as AWS fails the whole call.
async fn create_image_tagging_snapshots(upstream: &str, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let params = form_params(&String::from_utf8_lossy(body));
    let (rest, snapshot_tags) = without_snapshot_tag_specifications(&params);
    if snapshot_tags.is_none() {
        return forward(upstream, head, body).await;
    }
    let call = |body: String| {
        let head = with_content_length(head, body.len());
        async move { forward(upstream, &head, body.as_bytes()).await }
    };
    let created = call(form_body(&rest)).await?;
    let text = String::from_utf8_lossy(&created).into_owned();
    let (Some(200), Some(image_id)) = (status_of(&created), element(&text, "imageId")) else { return Ok(created) };
    let tags = snapshot_tags.unwrap_or_default();
    let described = call(form_body(&[
        ("Action".into(), "DescribeImages".into()),
        ("Version".into(), "2016-11-15".into()),
        ("ImageId.1".into(), image_id.to_string()),
    ]))
    .await?;
    let described = String::from_utf8_lossy(&described).into_owned();
    let snapshots: Vec<&str> =
        described.split("<snapshotId>").skip(1).filter_map(|s| s.split_once('<')).map(|(id, _)| id).collect();
    if snapshots.is_empty() || tags.is_empty() {
        return Ok(created);
    }
    let mut tagging: Vec<(String, String)> =
        vec![("Action".into(), "CreateTags".into()), ("Version".into(), "2016-11-15".into())];
    tagging.extend(snapshots.iter().enumerate().map(|(n, id)| (format!("ResourceId.{}", n + 1), id.to_string())));
    for (n, (key, value)) in tags.iter().enumerate() {
        tagging.push((format!("Tag.{}.Key", n + 1), key.clone()));
        tagging.push((format!("Tag.{}.Value", n + 1), value.clone()));
    }
    let tagged = call(form_body(&tagging)).await?;
    Ok(if status_of(&tagged) == Some(200) { created } else { tagged })
}

/// The form parameters of a query-protocol body, decoded, in order.
fn form_params(body: &str) -> Vec<(String, String)> {
    body.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (form_decode(k), form_decode(v))).collect()
}

/// `params` encoded as a form body.
fn form_body(params: &[(String, String)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// A request's form parameters, or a resource's tags: `(name, value)` pairs, in order.
type Pairs = Vec<(String, String)>;

/// `params` without their `snapshot` TagSpecifications (the others renumbered from 1), and the
/// tags those specified (`None`: there was none).
fn without_snapshot_tag_specifications(params: &[(String, String)]) -> (Pairs, Option<Pairs>) {
    let spec_of = |key: &str| -> Option<(u32, String)> {
        let rest = key.strip_prefix("TagSpecification.")?;
        let (n, field) = rest.split_once('.')?;
        Some((n.parse().ok()?, field.to_string()))
    };
    let snapshot_specs: Vec<u32> = params
        .iter()
        .filter_map(|(k, v)| spec_of(k).filter(|(_, field)| field == "ResourceType" && v == "snapshot").map(|(n, _)| n))
        .collect();
    if snapshot_specs.is_empty() {
        return (params.to_vec(), None);
    }
    let mut kept_specs: Vec<u32> =
        params.iter().filter_map(|(k, _)| spec_of(k)).map(|(n, _)| n).filter(|n| !snapshot_specs.contains(n)).collect();
    kept_specs.sort_unstable();
    kept_specs.dedup();
    let mut rest = Vec::new();
    let mut tags: Vec<(u32, String, String)> = Vec::new();
    for (key, value) in params {
        match spec_of(key) {
            None => rest.push((key.clone(), value.clone())),
            Some((n, field)) if snapshot_specs.contains(&n) => {
                // `Tag.<m>.Key` / `Tag.<m>.Value`
                if let Some((m, part)) = field.strip_prefix("Tag.").and_then(|f| f.split_once('.')) {
                    let m: u32 = m.parse().unwrap_or(0);
                    match tags.iter_mut().find(|(i, _, _)| *i == m) {
                        Some(tag) if part == "Key" => tag.1 = value.clone(),
                        Some(tag) => tag.2 = value.clone(),
                        None if part == "Key" => tags.push((m, value.clone(), String::new())),
                        None => tags.push((m, String::new(), value.clone())),
                    }
                }
            }
            Some((n, field)) => {
                let renumbered = kept_specs.iter().position(|k| *k == n).unwrap_or(0) + 1;
                rest.push((format!("TagSpecification.{renumbered}.{field}"), value.clone()));
            }
        }
    }
    tags.sort_by_key(|(m, _, _)| *m);
    (rest, Some(tags.into_iter().map(|(_, k, v)| (k, v)).collect()))
}

/// The request `head` with its `Content-Length` set to `length`.
fn with_content_length(head: &str, length: usize) -> String {
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("content-length:"))
        .map(str::to_string)
        .collect();
    lines.push(format!("Content-Length: {length}"));
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

/// The text of the first `<name>` element of an XML answer.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find('<')? + start;
    Some(&xml[start..end])
}

/// The status code of an HTTP answer (`HTTP/1.1 200 OK`).
fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\r').next()?;
    std::str::from_utf8(line).ok()?.split(' ').nth(1)?.parse().ok()
}

/// Marks an answer `Connection: close` so the client opens a new connection for the next call.
fn close_after(response: Vec<u8>) -> Vec<u8> {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return response };
    let head = String::from_utf8_lossy(&response[..split]);
    let mut out: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    out.push_str("\r\nConnection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&response[split + 4..]);
    bytes
}

/// A 200 answer with `body`, typed as the service's protocol answers.
fn ok_response(service: &str, body: &str) -> Vec<u8> {
    let content_type = if service == "dynamodb" { "application/x-amz-json-1.0" } else { "text/xml" };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An answer of `status` with `body`, typed as the service's protocol answers.
fn response_with(service: &str, status: u16, body: &str) -> Vec<u8> {
    if status == 200 {
        return ok_response(service, body);
    }
    format!(
        "HTTP/1.1 {status} Handled\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `response` with `from` replaced by `to` in its body (de-chunked, with a fresh length).
fn rewrite(response: Vec<u8>, edit: &(dyn Fn(&str) -> String + Send + Sync)) -> Vec<u8> {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return response };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut body = response[split + 4..].to_vec();
    if header(&format!("{head}\r\n"), "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    let body = edit(&String::from_utf8_lossy(&body));
    let mut out: String = head
        .split("\r\n")
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            !lower.starts_with("content-length:") && !lower.starts_with("transfer-encoding:")
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    out.push_str(&format!("\r\nContent-Length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    out.into_bytes()
}

fn dechunk(mut chunked: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = chunked.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&chunked[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        body.extend_from_slice(&chunked[start..(start + size).min(chunked.len())]);
        chunked = &chunked[(start + size + 2).min(chunked.len())..];
    }
    body
}

/// An error answer in the service's own format: EC2's `<Response><Errors>`, the JSON `__type` of
/// DynamoDB (JSON 1.0), Organizations (JSON 1.1) and Security Hub (REST JSON, the code also in
/// `Code`), or the `<ErrorResponse>` of the other query-protocol services (SNS, STS).
fn error_response(service: &str, status: u16, code: &str) -> Vec<u8> {
    let message = "injected by the test proxy";
    let json = match service {
        "dynamodb" => Some((
            "application/x-amz-json-1.0",
            format!("{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{code}\",\"message\":\"{message}\"}}"),
        )),
        "organizations" => {
            Some(("application/x-amz-json-1.1", format!("{{\"__type\":\"{code}\",\"Message\":\"{message}\"}}")))
        }
        "securityhub" | "ebs" => Some((
            "application/json",
            format!("{{\"__type\":\"{code}\",\"Code\":\"{code}\",\"Message\":\"{message}\"}}"),
        )),
        _ => None,
    };
    if let Some((content_type, body)) = json {
        return format!(
            "HTTP/1.1 {status} Injected\r\nContent-Type: {content_type}\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
    }
    let body = if service == "ec2" {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy</RequestID></Response>")
    } else {
        let kind = if status >= 500 { "Receiver" } else { "Sender" };
        format!("<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy</RequestId></ErrorResponse>")
    };
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn header(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}

/// The service from the SigV4 credential scope: `Credential=AKID/date/region/SERVICE/aws4_request`.
fn signing_service(head: &str) -> Option<String> {
    let authorization = header(head, "authorization")?;
    let scope = authorization.split("Credential=").nth(1)?.split(',').next()?;
    scope.split('/').nth(3).map(str::to_string)
}

/// The region from the SigV4 credential scope: `Credential=AKID/date/REGION/service/aws4_request`.
fn signing_region(head: &str) -> Option<String> {
    let authorization = header(head, "authorization")?;
    let scope = authorization.split("Credential=").nth(1)?.split(',').next()?;
    scope.split('/').nth(2).map(str::to_string)
}

/// The action: the `Action` form field (EC2, SNS, STS: query protocol) or the `X-Amz-Target`
/// header (JSON protocols such as SQS's).
fn action(head: &str, body: &[u8]) -> Option<String> {
    if let Some(target) = header(head, "x-amz-target") {
        return target.rsplit('.').next().map(str::to_string);
    }
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action=").map(str::to_string))
        .or_else(|| rest_action(head))
}

/// The action of a REST call, named by its method and path (Security Hub's REST JSON protocol).
fn rest_action(head: &str) -> Option<String> {
    let mut request_line = head.lines().next()?.split(' ');
    let (method, path) = (request_line.next()?, request_line.next()?.split('?').next()?);
    let action = match (method, path) {
        ("POST", "/findings/import") => "BatchImportFindings",
        ("POST", "/findings") => "GetFindings",
        ("POST", "/accounts") => "EnableSecurityHub",
        ("GET", "/accounts") => "DescribeHub",
        _ => return ebs_action(method, path),
    };
    Some(action.to_string())
}

/// The action of an EBS direct API call (REST JSON), by its method and path.
fn ebs_action(method: &str, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let action = match (method, parts.as_slice()) {
        ("POST", ["snapshots"]) => "StartSnapshot",
        ("POST", ["snapshots", "completion", _]) => "CompleteSnapshot",
        ("GET", ["snapshots", _, "blocks"]) => "ListSnapshotBlocks",
        ("GET", ["snapshots", _, "changedblocks"]) => "ListChangedBlocks",
        ("PUT", ["snapshots", _, "blocks", _]) => "PutSnapshotBlock",
        ("GET", ["snapshots", _, "blocks", _]) => "GetSnapshotBlock",
        _ => return None,
    };
    Some(action.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_action_and_service_of_query_and_json_calls() {
        let head = "POST / HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AK/20261127/us-east-1/ec2/aws4_request, SignedHeaders=host\r\n\r\n";
        assert_eq!(signing_service(head).as_deref(), Some("ec2"));
        assert_eq!(signing_region(head).as_deref(), Some("us-east-1"));
        assert_eq!(action(head, b"Action=DescribeImages&Version=2016-11-15").as_deref(), Some("DescribeImages"));
        let rest = "POST /findings/import HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(action(rest, b"{\"Findings\": []}").as_deref(), Some("BatchImportFindings"));
        let json = "POST / HTTP/1.1\r\nX-Amz-Target: AmazonSQS.ReceiveMessage\r\n\r\n";
        assert_eq!(action(json, b"{}").as_deref(), Some("ReceiveMessage"));
    }

    #[test]
    fn a_rewrite_replaces_text_in_a_plain_or_chunked_answer() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n<a>2026</a>".to_vec();
        let out = String::from_utf8(rewrite(plain, &|body| body.replace("2026", "2024"))).unwrap();
        assert!(out.ends_with("Content-Length: 11\r\n\r\n<a>2024</a>"), "{out}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n<a>2\r\n7\r\n026</a>\r\n0\r\n\r\n".to_vec();
        let out = String::from_utf8(rewrite(chunked, &|body| body.replace("2026", "12024"))).unwrap();
        assert!(out.ends_with("Content-Length: 12\r\n\r\n<a>12024</a>"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("transfer-encoding"));
    }

    #[test]
    fn a_handled_calls_upstream_answer_is_read_whole_and_its_own_answer_keeps_its_status() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n<a>2\r\n7\r\n026</a>\r\n0\r\n\r\n";
        assert_eq!(split_answer(chunked), (200, "<a>2026</a>".to_string()));
        assert_eq!(split_answer(b"HTTP/1.1 400 Bad\r\nContent-Length: 3\r\n\r\n<e>"), (400, "<e>".to_string()));
        assert_eq!(status_of(&response_with("ec2", 412, "<Response/>")), Some(412));
        assert_eq!(status_of(&response_with("ec2", 200, "<ok/>")), Some(200));
    }

    #[test]
    fn dynamodb_errors_are_json_with_the_code_in_type() {
        let out = String::from_utf8(error_response("dynamodb", 400, "ConditionalCheckFailedException")).unwrap();
        assert!(out.contains("\"__type\":\"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException\""));
        assert!(out.contains("application/x-amz-json-1.0"));
    }

    #[test]
    fn an_answers_status_is_read_from_its_first_line() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Some(200));
        assert_eq!(status_of(&error_response("ec2", 400, "InvalidSnapshot.NotFound")), Some(400));
        assert_eq!(status_of(b""), None);
        let answered = |faulted, status| Call { faulted, status, ..Call::default() };
        assert!(answered(false, Some(200)).succeeded());
        assert!(!answered(false, Some(400)).succeeded(), "a 4xx from the service wrote nothing");
        assert!(!answered(true, Some(503)).succeeded());
        assert!(!answered(false, None).succeeded(), "no answer: not known to have happened");
    }

    #[test]
    fn throttling_is_spread_evenly() {
        let state = Mutex::new(State::default());
        state.lock().unwrap().faults.push((Fault::throttle(0.3), 0));
        let throttled = (0..100).filter(|_| take_fault(&state, "X", "").is_some()).count();
        assert_eq!(throttled, 30);
    }

    #[test]
    fn a_fault_for_one_resource_only() {
        let state = Mutex::new(State::default());
        state
            .lock()
            .unwrap()
            .faults
            .push((Fault::error("DeleteSnapshot", 500, "InternalError").when_body_contains("snap-2"), 0));
        assert!(take_fault(&state, "DeleteSnapshot", "Action=DeleteSnapshot&SnapshotId=snap-1").is_none());
        assert!(take_fault(&state, "DeleteSnapshot", "Action=DeleteSnapshot&SnapshotId=snap-2").is_some());
    }

    #[test]
    fn a_snapshot_tag_specification_is_taken_out_of_create_image_and_the_others_renumbered() {
        let body = "Action=CreateImage&InstanceId=i-1&TagSpecification.1.ResourceType=image&TagSpecification.1.Tag.1.Key=amiguard%3Acreated-by&TagSpecification.1.Tag.1.Value=snapshot-on-stop&TagSpecification.2.ResourceType=snapshot&TagSpecification.2.Tag.1.Key=amiguard%3Acreated-by&TagSpecification.2.Tag.1.Value=snapshot-on-stop&TagSpecification.2.Tag.2.Key=team&TagSpecification.2.Tag.2.Value=a+b";
        let (rest, tags) = without_snapshot_tag_specifications(&form_params(body));
        let tags = tags.unwrap();
        assert_eq!(
            tags,
            [("amiguard:created-by".to_string(), "snapshot-on-stop".to_string()), ("team".into(), "a b".into())]
        );
        let rest = form_body(&rest);
        assert!(
            rest.contains("TagSpecification.1.ResourceType=image")
                && !rest.contains("snapshot&")
                && !rest.contains("TagSpecification.2"),
            "{rest}"
        );
        assert!(rest.contains("TagSpecification.1.Tag.1.Key=amiguard%3Acreated-by"), "{rest}");
        // The snapshot's specification first: the image's becomes the first.
        let swapped = "Action=CreateImage&TagSpecification.1.ResourceType=snapshot&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v&TagSpecification.2.ResourceType=image&TagSpecification.2.Tag.1.Key=i&TagSpecification.2.Tag.1.Value=j";
        let (rest, tags) = without_snapshot_tag_specifications(&form_params(swapped));
        assert_eq!(tags.unwrap(), [("k".to_string(), "v".to_string())]);
        assert_eq!(form_body(&rest), "Action=CreateImage&TagSpecification.1.ResourceType=image&TagSpecification.1.Tag.1.Key=i&TagSpecification.1.Tag.1.Value=j");
        let (unchanged, none) = without_snapshot_tag_specifications(&form_params("Action=CreateImage&Name=x"));
        assert!(none.is_none() && unchanged.len() == 2);
        let head = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(with_content_length(head, 7), "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n");
    }

    #[test]
    fn a_fault_for_the_first_calls_only() {
        let state = Mutex::new(State::default());
        state.lock().unwrap().faults.push((Fault::error("DeleteSnapshot", 500, "InternalError").times(1), 0));
        assert!(take_fault(&state, "DescribeImages", "").is_none());
        assert!(take_fault(&state, "DeleteSnapshot", "").is_some());
        assert!(take_fault(&state, "DeleteSnapshot", "").is_none());
    }
}
