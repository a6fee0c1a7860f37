//! The ledger port: a narrow item store. Every item has a partition key `pk` and a sort key `sk`
//! (strings) and a few plain attributes; writes can be conditional, which is what gives
//! exactly-once (`attribute_not_exists`) and leases (an expiry compared with the clock).

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::AwsError;

/// An attribute value: the few shapes amiguard's records use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    S(String),
    /// A whole number (epoch seconds, counts, sizes).
    N(i64),
    /// A list of strings (snapshot ids), in order; may be empty.
    List(Vec<String>),
    Bool(bool),
}

/// One item of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    pub attrs: BTreeMap<String, Value>,
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self { pk: pk.into(), sk: sk.into(), attrs: BTreeMap::new() }
    }

    /// Sets `name` (builder style).
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.attrs.insert(name.to_string(), value);
        self
    }

    pub fn with_s(self, name: &str, value: impl Into<String>) -> Self {
        self.with(name, Value::S(value.into()))
    }

    pub fn with_n(self, name: &str, value: i64) -> Self {
        self.with(name, Value::N(value))
    }

    /// A time, as RFC 3339 text (readable in the console; sorts as time).
    pub fn with_time(self, name: &str, time: DateTime<Utc>) -> Self {
        self.with_s(name, format_time(time))
    }

    pub fn with_list(self, name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.with(name, Value::List(values.into_iter().map(Into::into).collect()))
    }

    /// Sets `name` when `value` is some.
    pub fn with_opt_s(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(value) => self.with_s(name, value),
            None => self,
        }
    }

    pub fn s(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Value::S(s)) => Some(s),
            _ => None,
        }
    }

    pub fn n(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(Value::N(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn time(&self, name: &str) -> Option<DateTime<Utc>> {
        self.s(name).and_then(parse_time)
    }

    pub fn list(&self, name: &str) -> Option<&[String]> {
        match self.attrs.get(name) {
            Some(Value::List(list)) => Some(list),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.attrs.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
}

/// Times are written in one fixed form (UTC, seconds, `Z`), so that sort keys made of them sort
/// as the times do.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// When a write applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// No item with this key exists (`attribute_not_exists(pk)`): the first writer wins.
    Absent,
    /// No item exists, or its number `attribute` is below `value` (an expired lease). An item
    /// without the attribute does not qualify.
    AbsentOrBelow {
        attribute: &'static str,
        value: i64,
    },
    /// The item exists and its string `attribute` equals `value` (the lease holder).
    Equals {
        attribute: &'static str,
        value: String,
    },
}

/// Whether a conditional write happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// The condition did not hold: nothing was written.
    ConditionFailed,
}

/// The table's operations, as amiguard uses them. Reads are strongly consistent: a record just
/// written by one delivery is seen by the next.
pub trait LedgerStore: Sync {
    /// The table's name (for reports that say where the full lists are).
    fn table(&self) -> &str;

    fn put(&self, item: &Item, condition: &Condition) -> impl Future<Output = Result<Written, AwsError>> + Send;

    fn delete(
        &self,
        pk: &str,
        sk: &str,
        condition: &Condition,
    ) -> impl Future<Output = Result<Written, AwsError>> + Send;

    /// Every item of partition `pk` whose sort key starts with `sk_prefix` (all when empty), in
    /// sort-key order, handed to `each` page by page so that only what the caller keeps stays in
    /// memory. A failed or repeating page fails the whole query.
    fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        each: &mut (dyn FnMut(Item) + Send),
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// The newest item of partition `pk` (the greatest sort key), if any.
    fn last(&self, pk: &str) -> impl Future<Output = Result<Option<Item>, AwsError>> + Send;

    /// Unconditional puts and deletes, batched (DynamoDB takes 25 a call); a key named twice gets
    /// its last write. Not atomic: when a call fails, the batches before it stay applied (callers
    /// write so that a partial batch is safe: the journal's `intended` entries).
    fn write_batch(
        &self,
        puts: Vec<Item>,
        deletes: Vec<(String, String)>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Every item of a query, collected (for partitions known to be small).
pub async fn query_all(store: &impl LedgerStore, pk: &str, sk_prefix: &str) -> Result<Vec<Item>, AwsError> {
    let mut items = Vec::new();
    store.query(pk, sk_prefix, &mut |item| items.push(item)).await?;
    Ok(items)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_are_written_in_one_sortable_form() {
        let t = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        assert_eq!(format_time(t), "2026-03-04T05:06:07Z");
        assert_eq!(parse_time("2026-03-04T05:06:07Z"), Some(t));
        assert_eq!(parse_time("2026-03-04T06:06:07+01:00"), Some(t));
        assert_eq!(parse_time("yesterday"), None);
        let later = Utc.with_ymd_and_hms(2026, 11, 4, 5, 6, 7).unwrap();
        assert!(format_time(t) < format_time(later));
    }

    #[test]
    fn typed_reads_answer_only_their_own_shape() {
        let item = Item::new("p", "s").with_s("a", "x").with_n("b", 5).with_list("c", ["1", "2"]);
        assert_eq!((item.s("a"), item.n("b"), item.list("c").map(<[String]>::len)), (Some("x"), Some(5), Some(2)));
        assert_eq!((item.s("b"), item.n("a"), item.list("a"), item.bool("a")), (None, None, None, None));
    }
}
