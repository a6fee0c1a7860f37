//! What both `make try` tests (tests/tests/make_try.rs, make_try_org.rs) run and compare: the
//! function binaries beside the tests, `demo/try.sh` with only the given AWS settings, and moto's
//! whole state dump, before and after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use crate::{moto, workspace_root};

/// Where `cargo test --workspace` put the function binaries (beside this test's own `deps/`),
/// checked to be there and newer than every source they are built from: a stale binary would
/// prove nothing about the code under test.
pub fn bin_dir(functions: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).expect("the test runs from <target>/<profile>/deps").to_path_buf();
    let root = workspace_root();
    let mut sources = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    newest_files(&root.join("shared"), &mut sources);
    for function in functions {
        newest_files(&root.join("functions").join(function), &mut sources);
    }
    let newest = sources.iter().filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).max().unwrap();
    for function in functions {
        let binary = dir.join(function);
        let built = std::fs::metadata(&binary).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
        assert!(
            built >= newest,
            "{} is missing or older than its sources: `cargo test --workspace` (make test) builds it; \
             to run this suite alone, `cargo test --workspace --no-run --locked` first",
            binary.display()
        );
    }
    dir
}

/// Every file under `dir` but build output and the function's own tests.
fn newest_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !matches!(path.file_name().and_then(|n| n.to_str()), Some("target" | "tests" | "benches")) {
                newest_files(&path, into);
            }
        } else {
            into.push(path);
        }
    }
}

/// `bash demo/try.sh` with only the given AWS settings (none of the caller's own).
pub fn try_command(aws: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("bash");
    command.arg(workspace_root().join("demo/try.sh")).current_dir(workspace_root());
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") || name == "LEDGER_TABLE" || name == "AMIGUARD_BIN_DIR" || name == "TRY_ROLE_NAME" {
            command.env_remove(name);
        }
    }
    let nowhere = std::env::temp_dir().join("amiguard-make-try-no-aws-config");
    command
        .env("AWS_CONFIG_FILE", &nowhere)
        .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(aws.iter().copied());
    command
}

/// The command's output, and all of it as text for assertion messages.
pub async fn run(mut command: tokio::process::Command) -> (std::process::Output, String) {
    let output = command.output().await.expect("bash runs demo/try.sh");
    let text = format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// The emulator's whole state, as moto dumps it (`/moto-api/data.json`: every model of every
/// backend, every account), without: the backends' empty lists (a first read of a service makes
/// its backend appear, empty); IAM's account summaries (an IAM backend's first use, STS
/// GetCallerIdentity included, adds one: bookkeeping, no resource); DynamoDB's `Item` objects
/// (moto dumps every one it ever made, the copies a Query answers with included: a read adds to
/// that list; compare the ledger's items themselves instead); STS's `AssumedRole`s and the session
/// keys they hold. A region's EC2 backend appears (with its default VPC and the fixture
/// AMIs) at an account's first call there: a test touches every account and region first.
pub fn emulator_state() -> Value {
    let port = moto().upstream.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    let mut state: Value = serde_json::from_str(body).unwrap();
    for models in state.as_object_mut().unwrap().values_mut() {
        models.as_object_mut().unwrap().retain(|_, list| list.as_array().is_none_or(|l| !l.is_empty()));
    }
    for (service, model) in [("iam", "AccountSummary"), ("dynamodb", "Item"), ("sts", "AssumedRole")] {
        if let Some(models) = state.get_mut(service).and_then(Value::as_object_mut) {
            models.remove(model);
        }
    }
    // moto keeps each session's keys that AssumeRole handed out as an IAM `AccessKey` naming the
    // role: credentials, no resource. An IAM user's access key has no `role_arn`, and stays.
    if let Some(keys) = state.pointer_mut("/iam/AccessKey").and_then(Value::as_array_mut) {
        keys.retain(|key| key.get("role_arn").is_none_or(Value::is_null));
    }
    for models in state.as_object_mut().unwrap().values_mut() {
        models.as_object_mut().unwrap().retain(|_, list| list.as_array().is_none_or(|l| !l.is_empty()));
    }
    state.as_object_mut().unwrap().retain(|_, models| models.as_object().is_some_and(|m| !m.is_empty()));
    state
}

/// Fails naming every path of moto's dump that differs between `before` and `after`.
pub fn assert_same_state(before: &Value, after: &Value, text: &str) {
    fn differences(path: String, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                    let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                    differences(format!("{path}/{key}"), x, y, out);
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (n, (x, y)) in a.iter().zip(b).enumerate() {
                    differences(format!("{path}[{n}]"), x, y, out);
                }
            }
            (a, b) if a != b => out.push(format!("{path}: {:.200} -> {:.200}", a.to_string(), b.to_string())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    differences(String::new(), before, after, &mut out);
    assert!(out.is_empty(), "the emulator's state changed: {out:#?}\n{text}");
}
