//! The ledger: amiguard's own memory, one DynamoDB table that only amiguard's roles write.
//!
//! Tags, names and descriptions are written by anyone with `ec2:CreateTags` and carried by
//! copies: they may make amiguard keep something, never delete, retire or stay silent. What
//! causes an action comes from EC2's own fields or from here: what amiguard made (the images of
//! stopped instances), saw (each own image's snapshots, when a snapshot was first seen orphaned,
//! AMI state events), did (every deletion and deregistration, each run) and sent (one alert per
//! instance and image).
//!
//! The port is [`LedgerStore`], a narrow item store with conditional writes; the key layout is
//! [`keys`]. Each function's own records live in its crate, written through this port.

pub mod dynamo;
pub mod journal;
pub mod keys;
pub mod lease;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod store;

pub use store::{Condition, Item, LedgerStore, Value, Written};

/// The environment variable naming the table, the same for every function.
pub const LEDGER_TABLE: &str = "LEDGER_TABLE";

/// The attribute DynamoDB's time to live reads (epoch seconds): items that may expire carry it.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// `LEDGER_TABLE`, validated: `None` when unset (each function then says what it does without
/// its memory). A DynamoDB table name is 3 to 255 of `a-z A-Z 0-9 _ - .`.
pub fn table_name(source: &dyn crate::config::VarSource) -> Result<Option<String>, crate::config::ConfigError> {
    let Some(name) = crate::config::optional(source, LEDGER_TABLE) else { return Ok(None) };
    let valid = (3..=255).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(crate::config::ConfigError::new(
            LEDGER_TABLE,
            name,
            "a DynamoDB table name: 3 to 255 letters, digits, _ - or .",
        ));
    }
    Ok(Some(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_table_name_is_optional_and_checked() {
        let env = |value: &'static str| move |name: &str| (name == LEDGER_TABLE).then(|| value.to_string());
        assert_eq!(table_name(&env("amiguard-Ledger_1.x")).unwrap().as_deref(), Some("amiguard-Ledger_1.x"));
        assert_eq!(table_name(&env(" ")).unwrap(), None);
        for bad in ["ab", "a b c", "ledger/1"] {
            let err = table_name(&env(bad)).unwrap_err();
            assert_eq!(err.variable, LEDGER_TABLE);
        }
    }
}
