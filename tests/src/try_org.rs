//! For `make try TRY_ROLE_NAME=<role>`'s test (tests/tests/make_try_org.rs): an organisation on
//! moto (Organizations has no SDK crate in this workspace: its JSON calls are made by hand). The
//! run-and-compare helpers both `make try` tests use are in `try_run`.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::moto;

/// moto's answer to the Organizations action `action` with `body`, as the account of the default
/// credentials (moto's 123456789012, the management account here). Panics on an error answer.
pub fn organizations(action: &str, body: &Value) -> Value {
    let port = moto().upstream.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let body = body.to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: AWSOrganizationsV20161128.{action}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20261207/us-east-1/organizations/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{action}: {head}\n{body}");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A new member account of the organisation: its id.
pub fn create_account(name: &str) -> String {
    let made = organizations(
        "CreateAccount",
        &serde_json::json!({"Email": format!("{name}@example.com"), "AccountName": name}),
    );
    made["CreateAccountStatus"]["AccountId"].as_str().unwrap().to_string()
}
