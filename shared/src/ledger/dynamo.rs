//! The ledger port's DynamoDB adapter: one table, strongly consistent reads, conditional writes
//! as condition expressions, batches of 25 with their unprocessed items sent again.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};

use super::store::{Condition, Item, LedgerStore, Value, Written};
use crate::error::AwsError;

/// BatchWriteItem's limit of requests per call.
const BATCH_SIZE: usize = 25;
/// How often unprocessed items are sent again (with a growing pause) before the batch fails.
const UNPROCESSED_ATTEMPTS: u32 = 8;

/// The ledger table, through the DynamoDB API.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Built from the shared SDK configuration (callers need not depend on aws-sdk-dynamodb).
    pub fn from_conf(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(aws_sdk_dynamodb::Client::new(config), table)
    }
}

fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::S(s) => AttributeValue::S(s.clone()),
        Value::N(n) => AttributeValue::N(n.to_string()),
        Value::List(list) => AttributeValue::L(list.iter().map(|s| AttributeValue::S(s.clone())).collect()),
        Value::Bool(b) => AttributeValue::Bool(*b),
    }
}

/// An attribute of a shape amiguard never writes is left out: someone else wrote it.
fn from_attribute(value: &AttributeValue) -> Option<Value> {
    match value {
        AttributeValue::S(s) => Some(Value::S(s.clone())),
        AttributeValue::N(n) => n.parse().ok().map(Value::N),
        AttributeValue::L(list) => {
            list.iter().map(|v| v.as_s().ok().cloned()).collect::<Option<Vec<String>>>().map(Value::List)
        }
        AttributeValue::Bool(b) => Some(Value::Bool(*b)),
        _ => None,
    }
}

fn to_map(item: &Item) -> HashMap<String, AttributeValue> {
    let mut map: HashMap<String, AttributeValue> =
        item.attrs.iter().map(|(name, value)| (name.clone(), to_attribute(value))).collect();
    map.insert("pk".into(), AttributeValue::S(item.pk.clone()));
    map.insert("sk".into(), AttributeValue::S(item.sk.clone()));
    map
}

fn from_map(map: &HashMap<String, AttributeValue>) -> Option<Item> {
    let key = |name: &str| map.get(name).and_then(|v| v.as_s().ok()).cloned();
    let mut item = Item::new(key("pk")?, key("sk")?);
    for (name, value) in map {
        if name != "pk" && name != "sk" {
            if let Some(value) = from_attribute(value) {
                item.attrs.insert(name.clone(), value);
            }
        }
    }
    Some(item)
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_string(), AttributeValue::S(pk.into())), ("sk".to_string(), AttributeValue::S(sk.into()))])
}

/// A condition as DynamoDB's expression, names and values (`None` for [`Condition::Always`]).
/// Names always go through placeholders: `owner` or `state` are DynamoDB reserved words.
type Expression = (String, HashMap<String, String>, HashMap<String, AttributeValue>);

fn expression(condition: &Condition) -> Option<Expression> {
    let pk = ("#pk".to_string(), "pk".to_string());
    match condition {
        Condition::Always => None,
        Condition::Absent => Some(("attribute_not_exists(#pk)".into(), HashMap::from([pk]), HashMap::new())),
        Condition::AbsentOrBelow { attribute, value } => Some((
            "attribute_not_exists(#pk) OR #a < :v".into(),
            HashMap::from([pk, ("#a".to_string(), attribute.to_string())]),
            HashMap::from([(":v".to_string(), AttributeValue::N(value.to_string()))]),
        )),
        Condition::Equals { attribute, value } => Some((
            "#a = :v".into(),
            HashMap::from([("#a".to_string(), attribute.to_string())]),
            HashMap::from([(":v".to_string(), AttributeValue::S(value.clone()))]),
        )),
    }
}

/// DynamoDB's answer to a condition that did not hold.
const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

fn written<T>(operation: &'static str, result: Result<T, AwsError>) -> Result<Written, AwsError> {
    match result {
        Ok(_) => Ok(Written::Yes),
        Err(err) if err.has_code(CONDITION_FAILED) => Ok(Written::ConditionFailed),
        Err(err) => Err(AwsError { operation, ..err }),
    }
}

impl LedgerStore for DynamoLedger {
    fn table(&self) -> &str {
        &self.table
    }

    async fn put(&self, item: &Item, condition: &Condition) -> Result<Written, AwsError> {
        let mut request = self.client.put_item().table_name(&self.table).set_item(Some(to_map(item)));
        if let Some((text, names, values)) = expression(condition) {
            request = request
                .condition_expression(text)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values((!values.is_empty()).then_some(values));
        }
        written("PutItem", request.send().await.map_err(|e| AwsError::from_sdk("PutItem", e)))
    }

    async fn delete(&self, pk: &str, sk: &str, condition: &Condition) -> Result<Written, AwsError> {
        let mut request = self.client.delete_item().table_name(&self.table).set_key(Some(key(pk, sk)));
        if let Some((text, names, values)) = expression(condition) {
            request = request
                .condition_expression(text)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values((!values.is_empty()).then_some(values));
        }
        written("DeleteItem", request.send().await.map_err(|e| AwsError::from_sdk("DeleteItem", e)))
    }

    async fn query(&self, pk: &str, sk_prefix: &str, each: &mut (dyn FnMut(Item) + Send)) -> Result<(), AwsError> {
        let (condition, mut values) =
            ("#pk = :pk".to_string(), HashMap::from([(":pk".to_string(), AttributeValue::S(pk.into()))]));
        let mut names = HashMap::from([("#pk".to_string(), "pk".to_string())]);
        let condition = if sk_prefix.is_empty() {
            condition
        } else {
            names.insert("#sk".into(), "sk".into());
            values.insert(":prefix".into(), AttributeValue::S(sk_prefix.into()));
            format!("{condition} AND begins_with(#sk, :prefix)")
        };
        // Paged by hand: a page that hands back the key it was asked from would loop (or, with
        // the SDK's paginator, end quietly on a partial listing); it fails the query instead.
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(&condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.clone())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("Query", e))?;
            for map in page.items() {
                if let Some(item) = from_map(map) {
                    each(item);
                }
            }
            match page.last_evaluated_key() {
                None => return Ok(()),
                Some(next) if start.as_ref() == Some(next) => {
                    return Err(AwsError::new("Query", "RepeatedPageKey", "a page answered the key it started from"))
                }
                Some(next) if next.is_empty() => return Ok(()),
                Some(next) => start = Some(next.clone()),
            }
        }
    }

    async fn last(&self, pk: &str) -> Result<Option<Item>, AwsError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("Query", e))?;
        Ok(page.items().first().and_then(from_map))
    }

    async fn write_batch(&self, puts: Vec<Item>, deletes: Vec<(String, String)>) -> Result<(), AwsError> {
        let construction = |e: aws_smithy_types::error::operation::BuildError| {
            AwsError::new("BatchWriteItem", "ConstructionFailure", e.to_string())
        };
        // DynamoDB refuses a batch that names one key twice (ValidationException): the last write
        // of a key wins, as it would one by one.
        let mut last: std::collections::BTreeMap<(String, String), Option<&Item>> = std::collections::BTreeMap::new();
        for item in &puts {
            last.insert((item.pk.clone(), item.sk.clone()), Some(item));
        }
        for key in deletes {
            last.insert(key, None);
        }
        let mut requests = Vec::with_capacity(last.len());
        for ((pk, sk), write) in &last {
            requests.push(match write {
                Some(item) => {
                    let put = PutRequest::builder().set_item(Some(to_map(item))).build().map_err(construction)?;
                    WriteRequest::builder().put_request(put).build()
                }
                None => {
                    let delete = DeleteRequest::builder().set_key(Some(key(pk, sk))).build().map_err(construction)?;
                    WriteRequest::builder().delete_request(delete).build()
                }
            });
        }
        for chunk in requests.chunks(BATCH_SIZE) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt == UNPROCESSED_ATTEMPTS {
                    return Err(AwsError::new(
                        "BatchWriteItem",
                        "UnprocessedItems",
                        format!("{} writes still unprocessed after {UNPROCESSED_ATTEMPTS} attempts", pending.len()),
                    ));
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                }
                attempt += 1;
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("BatchWriteItem", e))?;
                pending = output.unprocessed_items().and_then(|u| u.get(&self.table)).cloned().unwrap_or_default();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn row(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
        let mut map = key(pk, sk);
        map.insert("n".into(), AttributeValue::N("7".into()));
        map
    }

    #[test]
    fn items_round_trip_and_foreign_shapes_are_left_out() {
        let item =
            Item::new("p", "s").with_s("a", "x").with_n("b", -3).with_list("c", ["1"]).with("d", Value::Bool(true));
        let mut map = to_map(&item);
        assert_eq!(from_map(&map), Some(item.clone()));
        map.insert("m".into(), AttributeValue::M(HashMap::new()));
        map.insert("bad".into(), AttributeValue::N("1.5".into()));
        assert_eq!(from_map(&map), Some(item));
        assert_eq!(from_map(&HashMap::new()), None);
    }

    #[test]
    fn conditions_use_placeholders_for_every_name() {
        assert_eq!(expression(&Condition::Always), None);
        let (text, names, _) = expression(&Condition::Absent).unwrap();
        assert_eq!((text.as_str(), names["#pk"].as_str()), ("attribute_not_exists(#pk)", "pk"));
        let (text, names, values) =
            expression(&Condition::AbsentOrBelow { attribute: "expires_at", value: 10 }).unwrap();
        assert_eq!(text, "attribute_not_exists(#pk) OR #a < :v");
        assert_eq!((names["#a"].as_str(), values[":v"].as_n().unwrap().as_str()), ("expires_at", "10"));
        let (text, names, values) = expression(&Condition::Equals { attribute: "owner", value: "me".into() }).unwrap();
        assert_eq!(
            (text.as_str(), names["#a"].as_str(), values[":v"].as_s().unwrap().as_str()),
            ("#a = :v", "owner", "me")
        );
    }

    #[tokio::test]
    async fn a_failed_condition_is_an_outcome_not_an_error() {
        let refused = mock!(Client::put_item).then_error(|| {
            // As the wire answer parses: the code is in the error's metadata.
            let meta = aws_smithy_types::error::ErrorMetadata::builder().code(CONDITION_FAILED).build();
            PutItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().meta(meta).build())
        });
        let accepted = mock!(Client::put_item)
            .match_requests(|r| r.condition_expression() == Some("attribute_not_exists(#pk)"))
            .then_output(|| PutItemOutput::builder().build());
        let ledger =
            DynamoLedger::new(mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&refused, &accepted]), "t");
        let item = Item::new("p", "s");
        assert_eq!(ledger.put(&item, &Condition::Absent).await.unwrap(), Written::ConditionFailed);
        assert_eq!(ledger.put(&item, &Condition::Absent).await.unwrap(), Written::Yes);
    }

    #[tokio::test]
    async fn queries_read_every_page_and_refuse_a_repeating_one() {
        let first = mock!(Client::query)
            .match_requests(|r| r.exclusive_start_key().is_none() && r.consistent_read() == Some(true))
            .then_output(|| {
                QueryOutput::builder().items(row("p", "a")).set_last_evaluated_key(Some(key("p", "a"))).build()
            });
        let second = mock!(Client::query)
            .match_requests(|r| r.exclusive_start_key() == Some(&key("p", "a")))
            .then_output(|| QueryOutput::builder().items(row("p", "b")).build());
        let ledger = DynamoLedger::new(mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&first, &second]), "t");
        let mut seen = Vec::new();
        ledger.query("p", "", &mut |item| seen.push(item.sk)).await.unwrap();
        assert_eq!(seen, ["a", "b"]);

        let looping = mock!(Client::query).then_output(|| {
            QueryOutput::builder().items(row("p", "a")).set_last_evaluated_key(Some(key("p", "a"))).build()
        });
        let ledger = DynamoLedger::new(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&looping]), "t");
        let err = ledger.query("p", "x", &mut |_| {}).await.unwrap_err();
        assert_eq!((err.operation, err.code.as_str()), ("Query", "RepeatedPageKey"));
        assert_eq!(looping.num_calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_hold_25_and_unprocessed_items_are_sent_again() {
        let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let partial = mock!(Client::batch_write_item)
            .match_requests(move |r| {
                let n = r.request_items().map(|m| m["t"].len()).unwrap_or(0);
                seen.lock().unwrap().push(n);
                n == 25
            })
            .then_output(|| {
                let unprocessed = WriteRequest::builder()
                    .delete_request(DeleteRequest::builder().set_key(Some(key("p", "x"))).build().unwrap())
                    .build();
                BatchWriteItemOutput::builder().unprocessed_items("t", vec![unprocessed]).build()
            });
        let rest = mock!(Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
        let ledger = DynamoLedger::new(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&partial, &rest]), "t");
        let mut puts: Vec<Item> = (0..30).map(|i| Item::new("p", format!("{i:02}"))).collect();
        // A key written twice in one call is sent once (DynamoDB would refuse the batch).
        puts.push(Item::new("p", "00"));
        ledger.write_batch(puts, vec![("p".into(), "01".into())]).await.unwrap();
        // 25, the one left unprocessed, then the last 5.
        assert_eq!(*sizes.lock().unwrap(), [25, 1, 5]);
    }
}
