//! The steps of a delivery, over the decisions (`core`) and the ports only: an instance's state
//! change (`stop`: the image of a stop, a termination, a dry run), an AMI's state change
//! (`ami_event`), what follows an image's settling (`follow`: the template's default, retention,
//! the alerts of failed images), making the image and its template version (`image`), retiring
//! images (`retention`), alerting once (`alerts`) and one delivery's hold on the ledger
//! (`session`).

pub mod alerts;
pub mod ami_event;
pub mod follow;
pub mod image;
pub mod retention;
pub mod session;
pub mod stop;

use amiguard::invocation::Invocation;

use crate::config::Config;
use crate::ports::Ports;

/// One delivery: what it acts through and for whom.
pub struct Delivery<'a, E, L, P> {
    pub ports: &'a Ports<E, L, P>,
    pub config: &'a Config,
    pub invocation: &'a Invocation,
    /// The event's account (named in alerts).
    pub account: Option<&'a str>,
}
