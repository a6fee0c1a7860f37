//! What every step of one delivery reads: the configuration, the ports, the account (`self`) and
//! the invocation's clock.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use amiguard::error::AwsError;
use amiguard::invocation::Invocation;
use amiguard::paging::REPEATED_NEXT_TOKEN;

use crate::config::Config;
use crate::ports::Ports;
use crate::FUNCTION;

pub struct Context<'a, E, P, I, L> {
    pub config: &'a Config,
    pub ports: &'a Ports<E, P, I, L>,
    pub account: &'a str,
    pub invocation: &'a Invocation,
    /// A dry run's launch alerts per image so far in this invocation: they take no slot in the
    /// ledger, so the next launch of the same image counts them to say whether it would fold.
    previewed_alerts: Mutex<HashMap<String, u32>>,
}

impl<'a, E, P, I, L> Context<'a, E, P, I, L> {
    pub fn new(config: &'a Config, ports: &'a Ports<E, P, I, L>, account: &'a str, invocation: &'a Invocation) -> Self {
        Self { config, ports, account, invocation, previewed_alerts: Default::default() }
    }

    /// Counts a dry run's launch alert of `image_id`, and answers how many this invocation
    /// previewed before it.
    pub fn previewed_before(&self, image_id: &str) -> u32 {
        let mut previewed = self.previewed_alerts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = previewed.entry(image_id.to_string()).or_default();
        *count += 1;
        *count - 1
    }
}

/// What a best-effort lookup found, or nothing (logged): it only loses detail, or leaves a verdict
/// unverifiable (never trusted). A listing that repeated a page token is the exception: it is an
/// error, so that a partial answer is never taken for a whole one without saying so.
pub fn best_effort<T>(result: Result<Vec<T>, AwsError>, what: &str) -> Result<Vec<T>, AwsError> {
    match result {
        Ok(found) => Ok(found),
        Err(err) if err.has_code(REPEATED_NEXT_TOKEN) => Err(err),
        Err(err) => {
            tracing::warn!(function = FUNCTION, error = %err, "{what} could not be read");
            Ok(Vec::new())
        }
    }
}
