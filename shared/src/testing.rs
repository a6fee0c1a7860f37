//! Test helpers shared by the functions' hostile-input tests (feature `test-util`, enabled only
//! by dev-dependencies).

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, nested up to four levels. `hints` are offered as strings and object keys
/// besides random ones, so that payloads also come close to what a handler accepts
/// (`"Scheduled Event"`, `"detail-type"`, ...).
pub fn any_json(hints: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        text(hints, ".{0,12}").prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(text(hints, ".{0,8}"), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn text(hints: &'static [&'static str], pattern: &'static str) -> BoxedStrategy<String> {
    if hints.is_empty() {
        pattern.boxed()
    } else {
        prop_oneof![pattern, prop::sample::select(hints).prop_map(str::to_string)].boxed()
    }
}
