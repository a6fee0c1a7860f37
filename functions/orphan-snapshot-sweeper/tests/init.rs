//! The binary Lambda runs (its `main.rs`): a bad setting stops it at init with a message naming
//! the variable, before it polls for any event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// Runs the binary with only `vars` set (and a Runtime API nobody answers on) and answers
/// whether it exited successfully, and what it printed.
fn init(vars: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orphan-snapshot-sweeper"))
        .env_clear()
        .env("AWS_REGION", "us-east-1")
        .env("ALERT_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:alerts")
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .envs(vars.iter().copied())
        .output()
        .expect("the binary runs");
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

#[test]
fn a_bad_setting_stops_the_binary_at_init_naming_the_variable() {
    for (vars, variable) in
        [(&[("MIN_AGE_HOURS", "-1")][..], "MIN_AGE_HOURS"), (&[("LEDGER_TABLE", "a b")][..], "LEDGER_TABLE")]
    {
        let (succeeded, printed) = init(vars);
        assert!(!succeeded, "{variable}: {printed}");
        assert!(printed.contains(variable) && printed.contains("invalid configuration"), "{printed}");
    }
}
