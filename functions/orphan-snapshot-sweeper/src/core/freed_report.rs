//! A region report's savings figures (`freed`, and its sums): beside the report's struct
//! (`summary`), whose file holds the rest of the report.

use super::savings::FreedSnapshot;
use super::summary::{cents, RegionReport};

impl RegionReport {
    /// What the planned deletions free, each and in sum (exact figures and bounds apart).
    pub fn set_freed(&mut self, freed: Vec<FreedSnapshot>) {
        if freed.is_empty() {
            return;
        }
        let (mut exact, mut at_most, mut exact_usd, mut at_most_usd) = (0, 0, 0.0, 0.0);
        for entry in &freed {
            match (entry.freed_bytes, entry.freed_bytes_at_most) {
                (Some(bytes), _) => (exact, exact_usd) = (exact + bytes, exact_usd + entry.monthly_usd),
                (None, Some(bytes)) => (at_most, at_most_usd) = (at_most + bytes, at_most_usd + entry.monthly_usd),
                (None, None) => {}
            }
        }
        self.freed_bytes = Some(exact);
        self.freed_monthly_usd = Some(cents(exact_usd));
        self.freed_bytes_at_most = Some(at_most);
        self.freed_monthly_usd_at_most = Some(cents(at_most_usd));
        self.freed = freed;
    }
}
