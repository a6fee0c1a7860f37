//! An in-memory ledger with DynamoDB's semantics for amiguard's conditions, for handler tests
//! (feature `test-util`). The integration tests prove the same behaviour against DynamoDB on
//! moto, so the two cannot drift apart unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::store::{Condition, Item, LedgerStore, Value, Written};
use crate::error::AwsError;

#[derive(Debug, Default)]
pub struct MemoryLedger {
    items: Mutex<BTreeMap<(String, String), Item>>,
    /// Operations (`PutItem`, `Query`, ...) that fail with `InternalServerError`.
    failing: Mutex<BTreeSet<&'static str>>,
    calls: Mutex<Vec<&'static str>>,
    /// Items put or deleted, one by one or in batches (conditional writes that applied only).
    items_written: AtomicUsize,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `operation` fails (`PutItem`, `DeleteItem`, `Query`, `BatchWriteItem`).
    pub fn fail(&self, operation: &'static str) {
        self.lock_failing().insert(operation);
    }

    /// Every operation fails: the ledger is unreachable.
    pub fn fail_everything(&self) {
        for operation in ["PutItem", "DeleteItem", "Query", "BatchWriteItem"] {
            self.fail(operation);
        }
    }

    pub fn heal(&self) {
        self.lock_failing().clear();
    }

    pub fn items(&self) -> Vec<Item> {
        self.lock_items().values().cloned().collect()
    }

    /// The items of partition `pk`, in sort-key order.
    pub fn partition(&self, pk: &str) -> Vec<Item> {
        self.lock_items().values().filter(|i| i.pk == pk).cloned().collect()
    }

    pub fn get(&self, pk: &str, sk: &str) -> Option<Item> {
        self.lock_items().get(&(pk.to_string(), sk.to_string())).cloned()
    }

    /// Puts an item as it is, for a test's starting state.
    pub fn insert(&self, item: Item) {
        self.lock_items().insert((item.pk.clone(), item.sk.clone()), item);
    }

    /// The operations called so far, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Items written so far: each applied put or delete, alone or in a batch.
    pub fn writes(&self) -> usize {
        self.items_written.load(Ordering::Relaxed)
    }

    fn lock_items(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Item>> {
        self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_failing(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(&self, operation: &'static str) -> Result<(), AwsError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(operation);
        }
        if self.lock_failing().contains(operation) {
            return Err(AwsError::new(operation, "InternalServerError", "the in-memory ledger was told to fail"));
        }
        Ok(())
    }
}

/// Whether `condition` holds for `existing` (the item under the key, if any).
pub fn holds(condition: &Condition, existing: Option<&Item>) -> bool {
    match condition {
        Condition::Always => true,
        Condition::Absent => existing.is_none(),
        Condition::AbsentOrBelow { attribute, value } => match existing {
            None => true,
            Some(item) => matches!(item.attrs.get(*attribute), Some(Value::N(n)) if n < value),
        },
        Condition::Equals { attribute, value } => {
            existing.is_some_and(|item| matches!(item.attrs.get(*attribute), Some(Value::S(s)) if s == value))
        }
    }
}

impl LedgerStore for MemoryLedger {
    fn table(&self) -> &str {
        "memory"
    }

    async fn put(&self, item: &Item, condition: &Condition) -> Result<Written, AwsError> {
        self.enter("PutItem")?;
        let mut items = self.lock_items();
        let key = (item.pk.clone(), item.sk.clone());
        if !holds(condition, items.get(&key)) {
            return Ok(Written::ConditionFailed);
        }
        items.insert(key, item.clone());
        self.items_written.fetch_add(1, Ordering::Relaxed);
        Ok(Written::Yes)
    }

    async fn delete(&self, pk: &str, sk: &str, condition: &Condition) -> Result<Written, AwsError> {
        self.enter("DeleteItem")?;
        let mut items = self.lock_items();
        let key = (pk.to_string(), sk.to_string());
        if !holds(condition, items.get(&key)) {
            return Ok(Written::ConditionFailed);
        }
        items.remove(&key);
        self.items_written.fetch_add(1, Ordering::Relaxed);
        Ok(Written::Yes)
    }

    async fn query(&self, pk: &str, sk_prefix: &str, each: &mut (dyn FnMut(Item) + Send)) -> Result<(), AwsError> {
        self.enter("Query")?;
        let found: Vec<Item> = self
            .lock_items()
            .values()
            .filter(|item| item.pk == pk && item.sk.starts_with(sk_prefix))
            .cloned()
            .collect();
        found.into_iter().for_each(each);
        Ok(())
    }

    async fn last(&self, pk: &str) -> Result<Option<Item>, AwsError> {
        self.enter("Query")?;
        Ok(self.lock_items().values().rfind(|item| item.pk == pk).cloned())
    }

    async fn write_batch(&self, puts: Vec<Item>, deletes: Vec<(String, String)>) -> Result<(), AwsError> {
        self.enter("BatchWriteItem")?;
        // As the adapter sends it: the last write of a key wins, deletes after puts.
        let mut last: BTreeMap<(String, String), Option<Item>> = BTreeMap::new();
        for item in puts {
            last.insert((item.pk.clone(), item.sk.clone()), Some(item));
        }
        for key in deletes {
            last.insert(key, None);
        }
        self.items_written.fetch_add(last.len(), Ordering::Relaxed);
        let mut items = self.lock_items();
        for (key, write) in last {
            match write {
                Some(item) => items.insert(key, item),
                None => items.remove(&key),
            };
        }
        Ok(())
    }
}
