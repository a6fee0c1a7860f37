//! The ledger table on moto, created from `template.yaml`'s own `Ledger` resource (its key
//! schema, attribute definitions, indexes and time to live), so that tests and template cannot
//! drift apart.

use amiguard::ledger::dynamo::DynamoLedger;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use serde_json::Value;

use crate::TestAccount;

/// The table name the tests use (the stack names it itself).
pub const TABLE: &str = "amiguard-ledger";

/// The `Properties` of the template's one `AWS::DynamoDB::Table`.
pub fn table_definition() -> Value {
    let template = crate::template::load();
    let tables: Vec<&Value> = template["Resources"]
        .as_object()
        .map(|r| r.values().filter(|r| r["Type"] == "AWS::DynamoDB::Table").collect())
        .unwrap_or_default();
    assert_eq!(tables.len(), 1, "template.yaml must define exactly one DynamoDB table (the ledger)");
    tables[0]["Properties"].clone()
}

fn key_schema(value: &Value) -> Vec<KeySchemaElement> {
    value
        .as_array()
        .expect("KeySchema is a list")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().expect("AttributeName"))
                .key_type(KeyType::from(k["KeyType"].as_str().expect("KeyType")))
                .build()
                .expect("key schema element")
        })
        .collect()
}

/// Creates the ledger in `account` (moto keeps each account's tables apart), unless it exists
/// already, and answers the port's adapter on it (calls go where `account`'s go: through a
/// proxy when it is one).
pub async fn create(account: &TestAccount) -> DynamoLedger {
    let definition = table_definition();
    let client = account.dynamodb();
    if client.describe_table().table_name(TABLE).send().await.is_ok() {
        return DynamoLedger::new(client, TABLE);
    }
    let attributes: Vec<AttributeDefinition> = definition["AttributeDefinitions"]
        .as_array()
        .expect("AttributeDefinitions is a list")
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().expect("AttributeName"))
                .attribute_type(ScalarAttributeType::from(a["AttributeType"].as_str().expect("AttributeType")))
                .build()
                .expect("attribute definition")
        })
        .collect();
    assert_eq!(definition["BillingMode"], "PAY_PER_REQUEST", "the ledger is on demand");
    let mut request = client
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key_schema(&definition["KeySchema"])));
    for index in definition["GlobalSecondaryIndexes"].as_array().into_iter().flatten() {
        let projection = index["Projection"]["ProjectionType"].as_str().unwrap_or("ALL");
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index["IndexName"].as_str().expect("IndexName"))
                .set_key_schema(Some(key_schema(&index["KeySchema"])))
                .projection(Projection::builder().projection_type(ProjectionType::from(projection)).build())
                .build()
                .expect("index"),
        );
    }
    request.send().await.expect("CreateTable on moto");
    let ttl = &definition["TimeToLiveSpecification"];
    client
        .update_time_to_live()
        .table_name(TABLE)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(ttl["AttributeName"].as_str().expect("the ledger has a TTL attribute"))
                .enabled(ttl["Enabled"].as_bool().unwrap_or(false))
                .build()
                .expect("ttl"),
        )
        .send()
        .await
        .expect("UpdateTimeToLive on moto");
    DynamoLedger::new(client, TABLE)
}

/// The port's adapter on the ledger of `account` (made by [`create`]), without creating it:
/// through a recording proxy, only the function's own calls are then recorded.
pub fn on(account: &TestAccount) -> DynamoLedger {
    DynamoLedger::new(account.dynamodb(), TABLE)
}
