//! Retention's decisions: which of an instance's images the launch template's default launches,
//! and which retention retires.

use chrono::{DateTime, Utc};

/// One of the images snapshot-on-stop made of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedImage {
    pub image_id: String,
    /// The stop it was made for (the ledger's record); `None` when unknown.
    pub stopped_at: Option<DateTime<Utc>>,
    pub creation_date: Option<DateTime<Utc>>,
    pub snapshot_ids: Vec<String>,
    /// EC2 says it is `available` (not pending, failed, disabled or unknown).
    pub available: bool,
    /// The protect tag is on it or on one of its snapshots.
    pub protected: bool,
    /// EC2 says it failed (`failed`, `error`, `invalid`), with EC2's reason when it gives one.
    pub failed: Option<String>,
    /// EC2's deregistration protection is on: counted like any available image, never retired
    /// (`DeregisterImage` would fail).
    pub deregistration_protected: bool,
    /// EC2's own words for it (`enabled-without-cooldown`, `enabled-with-cooldown`, ...).
    pub deregistration_protection: Option<String>,
}

/// The newest available image (by stop, then creation date): the one the launch template's
/// default launches. Protected images count (they are good images); a pending or failed one never.
pub fn newest_available(images: &[ManagedImage]) -> Option<&ManagedImage> {
    images
        .iter()
        .filter(|i| i.available && i.stopped_at.is_some())
        .max_by(|a, b| (a.stopped_at, a.creation_date, &a.image_id).cmp(&(b.stopped_at, b.creation_date, &b.image_id)))
}

/// The images to retire so that the newest `keep_last` *available* images remain ("newest" by
/// the stop they were made for, ties broken by creation date). Never retired, and never counted
/// among the `keep_last`: an image that is not available (a pending one may never become
/// available, a failed one is evidence), a protected one, and one whose stop cannot be read (it
/// cannot be ordered, and a wrong guess would delete a newer image). So a pending image never
/// displaces the last good one. `current` (the image of this stop) is never retired, even when a
/// late redelivery makes it older than the others. An image EC2 protects from deregistration
/// counts among the `keep_last` but is never retired.
pub fn images_to_retire<'a>(images: &'a [ManagedImage], keep_last: usize, current: &str) -> Vec<&'a ManagedImage> {
    let mut ordered: Vec<&ManagedImage> =
        images.iter().filter(|i| i.stopped_at.is_some() && i.available && !i.protected).collect();
    ordered.sort_by(|a, b| {
        (b.stopped_at, b.creation_date, &b.image_id).cmp(&(a.stopped_at, a.creation_date, &a.image_id))
    });
    ordered.into_iter().skip(keep_last).filter(|i| i.image_id != current && !i.deregistration_protected).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, h, m, 5).unwrap()
    }

    fn managed(id: &str, stopped: Option<DateTime<Utc>>, created: Option<DateTime<Utc>>) -> ManagedImage {
        ManagedImage {
            image_id: id.into(),
            stopped_at: stopped,
            creation_date: created,
            snapshot_ids: vec![format!("snap-{id}")],
            available: true,
            protected: false,
            failed: None,
            deregistration_protected: false,
            deregistration_protection: None,
        }
    }

    fn ids(images: Vec<&ManagedImage>) -> Vec<&str> {
        images.into_iter().map(|i| i.image_id.as_str()).collect()
    }

    #[test]
    fn retires_all_but_the_newest_by_stop_time() {
        let images = [
            managed("ami-a", Some(at(1, 0)), Some(at(9, 0))),
            managed("ami-c", Some(at(3, 0)), Some(at(3, 0))),
            managed("ami-b", Some(at(2, 0)), Some(at(2, 0))),
        ];
        assert_eq!(ids(images_to_retire(&images, 2, "ami-c")), ["ami-a"]);
        assert_eq!(ids(images_to_retire(&images, 1, "ami-c")), ["ami-b", "ami-a"]);
        assert!(images_to_retire(&images, 3, "ami-c").is_empty());
    }

    #[test]
    fn ties_in_stop_time_are_broken_by_creation_date() {
        let images =
            [managed("ami-old", Some(at(1, 0)), Some(at(1, 0))), managed("ami-new", Some(at(1, 0)), Some(at(2, 0)))];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-x")), ["ami-old"]);
    }

    #[test]
    fn never_retires_the_current_image_or_one_it_cannot_order() {
        let images = [
            managed("ami-late", Some(at(1, 0)), None),
            managed("ami-b", Some(at(3, 0)), None),
            managed("ami-c", Some(at(4, 0)), None),
            managed("ami-unknown", None, None),
        ];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-late")), ["ami-b"]);
    }

    #[test]
    fn a_pending_or_failed_image_never_displaces_an_available_one() {
        let pending = ManagedImage { available: false, ..managed("ami-new", Some(at(2, 0)), Some(at(2, 0))) };
        let images = [managed("ami-old", Some(at(1, 0)), Some(at(1, 0))), pending.clone()];
        // KEEP_LAST=1 while this stop's image is still pending: the last good image stays.
        assert!(images_to_retire(&images, 1, "ami-new").is_empty());
        // Once it is available (the next stop's view), the old one goes.
        let available = ManagedImage { available: true, ..pending };
        let images = [managed("ami-old", Some(at(1, 0)), Some(at(1, 0))), available];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-newer")), ["ami-old"]);
        // A failed image is never retired and never counted.
        let failed = ManagedImage { available: false, ..managed("ami-failed", Some(at(0, 0)), None) };
        let images = [failed, managed("ami-ok", Some(at(1, 0)), None)];
        assert!(images_to_retire(&images, 1, "ami-x").is_empty());
    }

    #[test]
    fn an_image_ec2_protects_from_deregistration_counts_but_is_never_retired() {
        let guarded = ManagedImage { deregistration_protected: true, ..managed("ami-a", Some(at(1, 0)), None) };
        let images = [guarded, managed("ami-b", Some(at(2, 0)), None), managed("ami-c", Some(at(3, 0)), None)];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-c")), ["ami-b"]);
        assert_eq!(ids(images_to_retire(&images, 2, "ami-c")), Vec::<&str>::new());
    }

    #[test]
    fn the_template_launches_the_newest_available_image_only() {
        let pending = ManagedImage { available: false, ..managed("ami-pending", Some(at(3, 0)), None) };
        let failed = ManagedImage {
            available: false,
            failed: Some("KMS".into()),
            ..managed("ami-failed", Some(at(4, 0)), None)
        };
        let protected = ManagedImage { protected: true, ..managed("ami-kept", Some(at(2, 0)), None) };
        let images = [managed("ami-old", Some(at(1, 0)), None), protected, pending.clone(), failed];
        assert_eq!(newest_available(&images).map(|i| i.image_id.as_str()), Some("ami-kept"));
        assert_eq!(newest_available(&[pending]), None);
        let unordered = managed("ami-unknown", None, None);
        assert_eq!(newest_available(&[unordered]), None, "an image whose stop is unknown cannot be ordered");
    }

    #[test]
    fn a_protected_image_is_never_retired_nor_counted() {
        let protected = ManagedImage { protected: true, ..managed("ami-kept", Some(at(1, 0)), None) };
        let images = [protected, managed("ami-b", Some(at(2, 0)), None), managed("ami-c", Some(at(3, 0)), None)];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-c")), ["ami-b"]);
        assert_eq!(ids(images_to_retire(&images, 2, "ami-c")), Vec::<&str>::new());
    }

    proptest! {
        #[test]
        fn retention_keeps_the_newest_and_current(stops in proptest::collection::vec((0i64..50, 0i64..50, any::<bool>(), any::<bool>(), any::<bool>()), 0..12), keep in 1usize..6, current in 0usize..12) {
            let images: Vec<ManagedImage> = stops.iter().enumerate().map(|(n, (s, c, available, protected, guarded))| ManagedImage {
                available: *available,
                protected: *protected,
                deregistration_protected: *guarded,
                ..managed(
                    &format!("ami-{n}"),
                    Some(at(0, 0) + chrono::Duration::minutes(*s)),
                    Some(at(0, 0) + chrono::Duration::minutes(*c)),
                )
            }).collect();
            let current_id = format!("ami-{current}");
            let retired = images_to_retire(&images, keep, &current_id);
            let kept: Vec<&ManagedImage> = images.iter().filter(|i| !retired.iter().any(|r| r.image_id == i.image_id)).collect();
            // only available, unprotected images are retired, and never the current one
            prop_assert!(retired.iter().all(|r| r.available && !r.protected && r.image_id != current_id));
            prop_assert!(retired.iter().all(|r| !r.deregistration_protected));
            // at least min(keep, n) of the available, unprotected images are kept
            let counted = images.iter().filter(|i| i.available && !i.protected).count();
            let kept_counted = kept.iter().filter(|i| i.available && !i.protected).count();
            prop_assert!(kept_counted >= keep.min(counted));
            // no retired image is newer than a kept available, unprotected one other than the current
            for r in &retired {
                for k in kept.iter().filter(|k| k.image_id != current_id && k.available && !k.protected && !k.deregistration_protected) {
                    prop_assert!((r.stopped_at, r.creation_date) <= (k.stopped_at, k.creation_date));
                }
            }
            // the same whatever the input order
            let mut reversed = images.clone();
            reversed.reverse();
            let mut a = ids(retired.clone()); a.sort();
            let mut b = ids(images_to_retire(&reversed, keep, &current_id)); b.sort();
            prop_assert_eq!(a, b);
        }
    }
}
