//! One delivery's hold on the ledger: the instance's lease (one delivery per instance at a time)
//! and its records. When the ledger cannot be read or written the delivery goes on without it:
//! the image is still made, nothing is retired, and a warning says so.

use std::time::Duration as StdDuration;

use amiguard::invocation::Invocation;
use amiguard::ledger::journal;
use amiguard::ledger::lease::{self, Acquired, Lease};
use amiguard::ledger::{keys, Item};
use amiguard::tags::Tag;
use amiguard::AwsError;
use chrono::{DateTime, Duration, Utc};

use crate::core::records::{adopted_into, made_by_create_image, to_adopt};
use crate::core::{ImageRecord, InstanceRecords, MadeImage};
use crate::error::Error;
use crate::ports::{Ec2, Records};

/// A lease outlives the function's timeout (120 s), so a delivery that dies holding it blocks
/// the instance for at most this long.
pub const LEASE_DURATION: Duration = Duration::seconds(150);
/// How long a delivery waits for another one of the same instance before it fails retryably.
const LEASE_WAIT: StdDuration = StdDuration::from_secs(30);
const LEASE_POLL: StdDuration = StdDuration::from_secs(2);

pub struct Session<'a, L> {
    store: Option<&'a L>,
    region: &'a str,
    instance_id: &'a str,
    lease: Option<Lease>,
    /// The records as read at the start and kept up to date by this delivery's writes.
    pub records: InstanceRecords,
    /// False once the ledger failed (or when there is none): nothing is retired then.
    healthy: bool,
    /// A dry run's: the records are read, nothing is written (no lease either).
    read_only: bool,
    pub warnings: Vec<String>,
}

impl<'a, L: Records> Session<'a, L> {
    /// Takes the instance's lease, waiting a little for a concurrent delivery, and reads its
    /// records. Only a lease held by another delivery is an error (Lambda retries it later).
    pub async fn open(
        store: Option<&'a L>,
        region: &'a str,
        instance_id: &'a str,
        invocation: &Invocation,
    ) -> Result<Self, Error> {
        let mut session = Self {
            store,
            region,
            instance_id,
            lease: None,
            records: InstanceRecords::default(),
            healthy: false,
            read_only: false,
            warnings: Vec::new(),
        };
        let Some(store) = store else {
            session
                .warnings
                .push("no ledger is configured (LEDGER_TABLE): the image is made, nothing is retired".into());
            return Ok(session);
        };
        let pk = keys::instance(region, instance_id);
        let started = tokio::time::Instant::now();
        loop {
            match lease::acquire(store, &pk, keys::LEASE, &invocation.request_id, invocation.clock(), LEASE_DURATION)
                .await
            {
                Ok(Acquired::Held(lease)) => {
                    session.lease = Some(lease);
                    break;
                }
                Ok(Acquired::Busy) if started.elapsed() < LEASE_WAIT => tokio::time::sleep(LEASE_POLL).await,
                Ok(Acquired::Busy) => return Err(Error::Busy(instance_id.to_string())),
                Err(err) => {
                    session.lost("taken (lease)", &err);
                    return Ok(session);
                }
            }
        }
        match store.read_records(region, instance_id).await {
            Ok(read) => {
                session.records = read;
                session.healthy = true;
            }
            Err(err) => session.lost("read", &err),
        }
        Ok(session)
    }

    /// A dry run's session: the instance's records, read without a lease; every write is
    /// refused. A ledger that cannot be read is an error (a dry run has nothing else to show).
    pub async fn read_only(store: &'a L, region: &'a str, instance_id: &'a str) -> Result<Self, Error> {
        Ok(Self {
            store: Some(store),
            region,
            instance_id,
            lease: None,
            records: store.read_records(region, instance_id).await?,
            healthy: true,
            read_only: true,
            warnings: Vec::new(),
        })
    }

    pub fn region(&self) -> &str {
        self.region
    }

    /// The ledger, for the claims of alerts (whose records are not the instance's); none in a
    /// dry run.
    pub fn store(&self) -> Option<&'a L> {
        self.store.filter(|_| !self.read_only)
    }

    /// The ledger can be trusted for this delivery: what it holds is all snapshot-on-stop made.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    fn lost(&mut self, what: &str, err: &AwsError) {
        if self.healthy || self.warnings.is_empty() {
            self.warnings.push(format!(
                "the ledger could not be {what} ({err}): the image is made, nothing is retired in this delivery"
            ));
        }
        self.healthy = false;
    }

    /// Writes the record of a stop, and keeps it in `records`.
    pub async fn record(&mut self, made: &MadeImage) {
        match self.records.images.iter_mut().find(|i| i.stopped_at == made.stopped_at) {
            Some(known) => *known = made.clone(),
            None => {
                self.records.images.push(made.clone());
                self.records.images.sort_by_key(|i| i.stopped_at);
            }
        }
        if !self.healthy || self.read_only {
            return;
        }
        if let Some(store) = self.store {
            if let Err(err) = store.write_record(self.region, self.instance_id, made).await {
                self.lost("written", &err);
            }
        }
    }

    /// Says in the ledger which instance `image_id` was made of, so that its AMI state-change
    /// event (which names only the image) finds the instance's records.
    pub async fn record_made_of(&mut self, image_id: &str, now: DateTime<Utc>) {
        let Some(store) = self.store.filter(|_| self.healthy && !self.read_only) else { return };
        if let Err(err) = store.write_made_of(self.region, image_id, self.instance_id, now).await {
            self.lost("written", &err);
        }
    }

    /// Adopts the images snapshot-on-stop made that the ledger does not hold: on the instance's
    /// first healthy delivery (of the stop at `stopped_at`), those made before the ledger existed;
    /// on every later one, those of that stop and later ones, made while the ledger failed
    /// ([`to_adopt`]). Each only when EC2's own words
    /// say CreateImage made it of this instance, for that very image.
    pub async fn adopt(
        &mut self,
        ec2: &impl Ec2,
        ownership: &[Tag],
        stopped_at: DateTime<Utc>,
        invocation: &Invocation,
    ) -> Vec<String> {
        if !self.healthy || self.read_only {
            return Vec::new();
        }
        let Some(store) = self.store else { return Vec::new() };
        let candidates = match ec2.list_own_images_tagged(ownership).await {
            Ok(images) => images,
            Err(err) => {
                self.warnings.push(format!(
                    "images made before the ledger could not be listed ({err}): adoption waits for the next stop"
                ));
                return Vec::new();
            }
        };
        let named: Vec<(&ImageRecord, DateTime<Utc>)> = to_adopt(self.instance_id, &self.records, &candidates);
        let snapshot_ids: Vec<String> = named.iter().flat_map(|(image, _)| image.snapshot_ids.clone()).collect();
        let descriptions = if snapshot_ids.is_empty() {
            Vec::new()
        } else {
            match ec2.snapshot_descriptions(&snapshot_ids).await {
                Ok(descriptions) => descriptions,
                Err(err) => {
                    self.warnings.push(format!(
                        "images made before the ledger could not be verified ({err}): adoption waits for the next stop"
                    ));
                    return Vec::new();
                }
            }
        };
        let mut adopted = Vec::new();
        for (image, stopped_at) in named {
            // The name and the tags say snapshot-on-stop; EC2's own words must say CreateImage too.
            if !made_by_create_image(self.instance_id, image, &descriptions) {
                continue;
            }
            let record = adopted_into(self.records.for_stop(stopped_at), image, stopped_at, invocation.now);
            self.record(&record).await;
            self.record_made_of(&image.image_id, invocation.now).await;
            adopted.push(image.image_id.clone());
        }
        if self.healthy && !self.records.adopted {
            match store.mark_adopted(self.region, self.instance_id, invocation.now, stopped_at).await {
                Ok(()) => {
                    self.records.adopted = true;
                    self.records.adopted_since = Some(stopped_at);
                }
                Err(err) => self.lost("written", &err),
            }
        }
        adopted
    }

    /// Journals what retention is about to deregister and delete (`intended`). Answers whether
    /// it may go ahead: a journal that cannot be written stops retention (the ledger is lost).
    pub async fn journal_ahead(&mut self, entries: Vec<Item>) -> bool {
        let Some(store) = self.store.filter(|_| self.healthy && !self.read_only) else { return false };
        match journal::write(store, entries).await {
            Ok(()) => true,
            Err(err) => {
                self.lost("written (journal)", &err);
                false
            }
        }
    }

    /// Journals how each call ended. A failure loses only that detail (the entries stay
    /// `intended`): a warning.
    pub async fn journal_end(&mut self, entries: Vec<Item>) {
        let Some(store) = self.store.filter(|_| !self.read_only) else { return };
        if let Err(err) = journal::write(store, entries).await {
            self.warnings.push(format!("the journal of this delivery's deletions stays `intended`: {err}"));
        }
    }

    /// Gives the lease back; the warnings gathered on the way are the session's report.
    pub async fn close(mut self) -> Vec<String> {
        if let (Some(store), Some(lease)) = (self.store, self.lease.take()) {
            if let Err(err) = lease::release(store, &lease).await {
                self.warnings.push(format!("the instance's lease could not be released ({err}): it expires by itself"));
            }
        }
        self.warnings
    }
}
