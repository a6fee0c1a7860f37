//! Sending the alert of a failed image once: the ledger's claim (`amiguard::alert::once`, keyed
//! by the image), then SNS through the alert publisher. A failed publish gives the claim back, so
//! the next try alerts; a ledger that cannot be used sends anyway (a duplicate beats silence).

use amiguard::alert::once::{self as sent, AlertKey, Turn};
use amiguard::alert::AlertPublisher;
use amiguard::invocation::Invocation;
use amiguard::ledger::LedgerStore;
use amiguard::AwsError;

use crate::core::failed_alert::{self, FailedImage};

/// What became of one alert.
#[derive(Debug)]
pub enum Alerted {
    /// Published now; with a warning when the ledger could not be used (it may repeat).
    Sent(Option<String>),
    /// An earlier delivery sent it.
    AlreadySent,
    /// Another delivery claimed it and has not said whether it sent it.
    InProgress,
    /// `ALERT_TOPIC_ARN` is not set.
    NoTopic,
    /// SNS refused it: the claim was given back.
    Failed(AwsError),
}

impl Alerted {
    /// The report's warning for an alert that was not sent.
    pub fn warning(&self, image_id: &str) -> String {
        match self {
            Self::Sent(_) | Self::AlreadySent => format!("image {image_id} failed: alerted"),
            Self::InProgress => format!("image {image_id} failed: another delivery is sending its alert"),
            Self::NoTopic => format!("image {image_id} failed: not alerted (ALERT_TOPIC_ARN is not set)"),
            Self::Failed(err) => format!("image {image_id} failed: its alert could not be sent ({err})"),
        }
    }
}

pub async fn once<L: LedgerStore, P: AlertPublisher>(
    publisher: Option<&P>,
    store: Option<&L>,
    failed: &FailedImage,
    invocation: &Invocation,
) -> Alerted {
    let Some(publisher) = publisher else { return Alerted::NoTopic };
    let key = AlertKey::failed_image(&failed.region, &failed.image_id);
    let claim = match sent::turn(store, &key, invocation).await {
        Turn::AlreadySent => return Alerted::AlreadySent,
        Turn::InProgress => return Alerted::InProgress,
        Turn::Send(claim, ledger_warning) => (claim, ledger_warning),
    };
    let (claim, ledger_warning) = claim;
    match publisher.publish(&failed_alert::compose(failed)).await {
        Ok(message_id) => {
            if let (Some(claim), Some(store)) = (&claim, store) {
                // Not recorded as sent: the claim expires and a later delivery repeats the alert.
                let _ = sent::confirm(store, claim, &failed.image_id, &message_id, invocation.clock()).await;
            }
            Alerted::Sent(ledger_warning.map(|w| format!("the alert of {} may repeat: {w}", failed.image_id)))
        }
        Err(err) => {
            if let (Some(claim), Some(store)) = (&claim, store) {
                let _ = sent::release(store, claim).await;
            }
            Alerted::Failed(err)
        }
    }
}
