//! The ledger's IAM as `template.yaml` grants it, and the partitions a function's DynamoDB
//! requests really name: each role's `dynamodb:LeadingKeys` patterns (`ForAllValues:StringLike`),
//! the partition keys of one request the proxy recorded, and IAM's `StringLike` match. The
//! least-privilege tests hold every recorded request of a function to its role's patterns.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::proxy::Call;
use crate::template::function_for;

/// The condition key DynamoDB sets to the partition key values a request names.
pub const LEADING_KEYS: &str = "dynamodb:LeadingKeys";
/// The operator the roles use on it: every partition the request names matches a pattern.
pub const FOR_ALL_VALUES_LIKE: &str = "ForAllValues:StringLike";

/// The DynamoDB actions that set `dynamodb:LeadingKeys` (the Service Authorization Reference's
/// "Actions defined by Amazon DynamoDB": item reads and writes, batches and queries). An action
/// outside this list (`Scan`, the `Transact*` calls, anything on a table as a whole) gives the
/// condition no value to check, and `ForAllValues` holds over no values: a role must never be
/// granted one on the ledger.
pub const ACTIONS_WITH_LEADING_KEYS: [&str; 8] = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
];

/// The patterns a role grants for a crate's `LEDGER_PARTITIONS`: `<prefix>*` each.
pub fn patterns(prefixes: &[&str]) -> BTreeSet<String> {
    prefixes.iter().map(|prefix| format!("{prefix}*")).collect()
}

/// The ledger's partition key attribute: the `HASH` key of the `AWS::DynamoDB::Table` in the
/// template.
pub fn partition_key_attribute(template: &Value) -> String {
    let tables: Vec<&Value> = template["Resources"]
        .as_object()
        .expect("Resources")
        .values()
        .filter(|r| r["Type"] == "AWS::DynamoDB::Table")
        .collect();
    assert_eq!(tables.len(), 1, "one ledger table");
    let schema = tables[0]["Properties"]["KeySchema"].as_array().expect("KeySchema");
    let hash = schema.iter().find(|k| k["KeyType"] == "HASH").expect("a HASH key");
    hash["AttributeName"].as_str().expect("AttributeName").to_string()
}

/// Every statement of the inline policies of the function resource `logical_id`, under every
/// template condition (both branches of each `!If`).
pub fn statements(template: &Value, logical_id: &str) -> Vec<Value> {
    let mut found = Vec::new();
    collect_statements(&template["Resources"][logical_id]["Properties"]["Policies"], &mut found);
    found
}

fn collect_statements(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(map) if map.contains_key("Effect") => found.push(value.clone()),
        Value::Object(map) => map.values().for_each(|v| collect_statements(v, found)),
        Value::Array(items) => items.iter().for_each(|v| collect_statements(v, found)),
        _ => {}
    }
}

/// A statement's `Action` as a list.
pub fn actions(statement: &Value) -> Vec<String> {
    strings(&statement["Action"])
}

/// A string or a list of strings, as a list (anything else: empty).
pub fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The `dynamodb:LeadingKeys` patterns of a statement (`None`: it has no such condition).
pub fn leading_keys(statement: &Value) -> Option<Vec<String>> {
    let patterns = statement["Condition"][FOR_ALL_VALUES_LIKE].get(LEADING_KEYS)?;
    Some(strings(patterns))
}

/// IAM's `StringLike`: `*` matches any run of characters (none included), `?` any one; the rest
/// literally, the whole value.
pub fn string_like(pattern: &str, value: &str) -> bool {
    let (pattern, value): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // matches[j]: pattern[..i] matches value[..j], row by row.
    let mut matches = vec![false; value.len() + 1];
    matches[0] = true;
    for p in &pattern {
        let mut next = vec![false; value.len() + 1];
        if *p == '*' {
            let mut any = false;
            for j in 0..=value.len() {
                any |= matches[j];
                next[j] = any;
            }
        } else {
            for j in 1..=value.len() {
                next[j] = matches[j - 1] && (*p == '?' || *p == value[j - 1]);
            }
        }
        matches = next;
    }
    matches[value.len()]
}

/// The partition key values one recorded DynamoDB request names, as IAM sets
/// `dynamodb:LeadingKeys` from it; an error for a request this reading does not know (it
/// must then be taught, or the function must not send it).
pub fn request_partitions(call: &Call, pk: &str) -> Result<Vec<String>, String> {
    let body: Value = serde_json::from_str(&call.body).map_err(|e| format!("{}: body not JSON: {e}", call.action))?;
    let value_of = |key: &Value| -> Result<String, String> {
        key[pk]["S"].as_str().map(str::to_string).ok_or_else(|| format!("{}: no string `{pk}` in {key}", call.action))
    };
    let each_table = |field: &str| -> Vec<Value> {
        body[field].as_object().map(|tables| tables.values().cloned().collect()).unwrap_or_default()
    };
    match call.action.as_str() {
        "PutItem" => Ok(vec![value_of(&body["Item"])?]),
        "GetItem" | "DeleteItem" | "UpdateItem" => Ok(vec![value_of(&body["Key"])?]),
        "Query" => Ok(vec![query_partition(&body, pk).map_err(|e| format!("Query: {e}"))?]),
        "BatchWriteItem" => {
            let mut keys = Vec::new();
            for request in each_table("RequestItems").iter().flat_map(|t| t.as_array().cloned().unwrap_or_default()) {
                if let Some(put) = request.get("PutRequest") {
                    keys.push(value_of(&put["Item"])?);
                } else if let Some(delete) = request.get("DeleteRequest") {
                    keys.push(value_of(&delete["Key"])?);
                } else {
                    return Err(format!("BatchWriteItem: a request neither put nor delete: {request}"));
                }
            }
            Ok(keys)
        }
        "BatchGetItem" => each_table("RequestItems")
            .iter()
            .flat_map(|t| t["Keys"].as_array().cloned().unwrap_or_default())
            .map(|key| value_of(&key))
            .collect(),
        other => Err(format!("a DynamoDB action whose partition keys this check cannot read: {other}")),
    }
}

/// The partition key value of a query: the placeholder its `KeyConditionExpression` compares
/// the partition key to for equality (names resolved through `ExpressionAttributeNames`), or
/// the legacy `KeyConditions`.
fn query_partition(body: &Value, pk: &str) -> Result<String, String> {
    if let Some(legacy) = body["KeyConditions"].get(pk) {
        return legacy["AttributeValueList"][0]["S"].as_str().map(str::to_string).ok_or(format!("{legacy}"));
    }
    let expression = body["KeyConditionExpression"].as_str().ok_or("no KeyConditionExpression")?;
    let name = |token: &str| -> String {
        match token.strip_prefix('#') {
            Some(_) => body["ExpressionAttributeNames"][token].as_str().unwrap_or_default().to_string(),
            None => token.to_string(),
        }
    };
    let mut found = Vec::new();
    for clause in expression.split(" AND ").flat_map(|c| c.split(" and ")) {
        let clause = clause.trim().trim_start_matches('(').trim_end_matches(')');
        let Some((left, right)) = clause.split_once('=') else { continue };
        if left.ends_with(['<', '>', '!']) || right.starts_with('=') {
            continue;
        }
        let (left, right) = (left.trim(), right.trim());
        let placeholder = match (name(left) == pk, name(right) == pk) {
            (true, false) => right,
            (false, true) => left,
            _ => continue,
        };
        let value = body["ExpressionAttributeValues"][placeholder]["S"]
            .as_str()
            .ok_or(format!("{placeholder} is no string value in {body}"))?;
        found.push(value.to_string());
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("not one partition key equality in {expression:?}: {found:?}")),
    }
}

/// Every DynamoDB request among `calls`, each held to the `dynamodb:LeadingKeys` patterns of the
/// statements of the role of `binary`'s function that allow its action: it panics naming every
/// request that names a partition outside them (or that no statement with the condition
/// allows). Answers the patterns the requests used, so that a caller can say which it expects.
pub fn assert_requests_within_leading_keys(template: &Value, binary: &str, calls: &[Call]) -> BTreeSet<String> {
    let function = function_for(template, binary);
    let pk = partition_key_attribute(template);
    let statements: Vec<Value> =
        statements(template, &function.logical_id).into_iter().filter(|s| s["Effect"] == "Allow").collect();
    let mut used = BTreeSet::new();
    let mut outside = BTreeSet::new();
    let requests: Vec<&Call> = calls.iter().filter(|c| c.service == "dynamodb").collect();
    assert!(!requests.is_empty(), "{binary}: no DynamoDB request recorded: the check would prove nothing");
    for call in requests {
        let action = format!("dynamodb:{}", call.action);
        let granting: Vec<&Value> = statements.iter().filter(|s| actions(s).contains(&action)).collect();
        let mut patterns = Vec::new();
        for statement in &granting {
            match leading_keys(statement) {
                Some(list) => patterns.extend(list),
                None => {
                    outside.insert(format!("{action} is granted without {LEADING_KEYS}: {statement}"));
                }
            }
        }
        if granting.is_empty() {
            outside.insert(format!("{action} is not granted at all"));
        }
        match request_partitions(call, &pk) {
            Ok(partitions) => {
                for partition in partitions {
                    match patterns.iter().find(|p| string_like(p, &partition)) {
                        Some(pattern) => {
                            used.insert(pattern.clone());
                        }
                        None => {
                            outside.insert(format!("{action} on `{partition}`, outside {patterns:?}"));
                        }
                    }
                }
            }
            Err(e) => {
                outside.insert(e);
            }
        }
    }
    assert!(
        outside.is_empty(),
        "{binary}: requests outside its role's ledger partitions:\n{}",
        outside.into_iter().collect::<Vec<_>>().join("\n")
    );
    used
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(action: &str, body: Value) -> Call {
        Call { service: "dynamodb".into(), action: action.into(), body: body.to_string(), ..Default::default() }
    }

    #[test]
    fn string_like_is_iams() {
        assert!(string_like("alert#*", "alert#us-east-1#i-0"));
        assert!(string_like("alert#*", "alert#"));
        assert!(!string_like("alert#*", "alerts#x") && !string_like("alert#*", "xalert#y"));
        assert!(!string_like("run#*", "runs#f") && string_like("runs#*", "runs#f"));
        assert!(string_like("a?c*d", "abcxxd") && !string_like("a?c*d", "acxxd"));
        assert!(string_like("*", "") && !string_like("a", "ab"));
    }

    #[test]
    fn the_partitions_of_each_request_shape_are_read() {
        let s = |v: &str| json!({"S": v});
        let put = call("PutItem", json!({"TableName": "t", "Item": {"pk": s("orphans#r"), "sk": s("snap-1")}}));
        assert_eq!(request_partitions(&put, "pk").unwrap(), ["orphans#r"]);
        let delete = call("DeleteItem", json!({"Key": {"pk": s("alert#r#i"), "sk": s("image#a")}}));
        assert_eq!(request_partitions(&delete, "pk").unwrap(), ["alert#r#i"]);
        let query = call(
            "Query",
            json!({"KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
                   "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
                   "ExpressionAttributeValues": {":pk": s("launch-alerts#r#ami-1"), ":prefix": s("2026")}}),
        );
        assert_eq!(request_partitions(&query, "pk").unwrap(), ["launch-alerts#r#ami-1"]);
        let reversed = call(
            "Query",
            json!({"KeyConditionExpression": ":v = pk", "ExpressionAttributeValues": {":v": s("runs#f")}}),
        );
        assert_eq!(request_partitions(&reversed, "pk").unwrap(), ["runs#f"]);
        let batch = call(
            "BatchWriteItem",
            json!({"RequestItems": {"t": [
                {"PutRequest": {"Item": {"pk": s("images#r"), "sk": s("ami-1")}}},
                {"DeleteRequest": {"Key": {"pk": s("ami-events#r"), "sk": s("ami-2")}}}]}}),
        );
        assert_eq!(request_partitions(&batch, "pk").unwrap(), ["images#r", "ami-events#r"]);
        let scan = call("Scan", json!({"TableName": "t"}));
        assert!(request_partitions(&scan, "pk").unwrap_err().contains("Scan"));
        let no_key = call("Query", json!({"KeyConditionExpression": "#sk = :v"}));
        assert!(request_partitions(&no_key, "pk").is_err());
    }
}
