"""Creates amiguard's ledger on the local emulator from template.yaml's own `Ledger` resource (its
key schema, attribute definitions, indexes and time to live), as the integration tests do: the
demo and the stack can never disagree on the schema."""

import os
import sys

from cfnlint.decode import cfn_yaml

from common import ROOT, client

TABLE = os.environ.get("LEDGER_TABLE", "amiguard-ledger")


def table_definition():
    template = cfn_yaml.load(os.path.join(ROOT, "template.yaml"))
    tables = [r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
    if len(tables) != 1:
        sys.exit(f"error: template.yaml must define exactly one DynamoDB table, it defines {len(tables)}")
    return tables[0]["Properties"]


def create(dynamodb, table=TABLE):
    """Creates the ledger table `table` through the boto3 DynamoDB client `dynamodb`."""
    props = table_definition()
    request = {
        "TableName": table,
        "BillingMode": props["BillingMode"],
        "AttributeDefinitions": [dict(a) for a in props["AttributeDefinitions"]],
        "KeySchema": [dict(k) for k in props["KeySchema"]],
    }
    indexes = [
        {"IndexName": i["IndexName"], "KeySchema": [dict(k) for k in i["KeySchema"]],
         "Projection": {"ProjectionType": i.get("Projection", {}).get("ProjectionType", "ALL")}}
        for i in props.get("GlobalSecondaryIndexes", [])
    ]
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    dynamodb.create_table(**request)
    ttl = props["TimeToLiveSpecification"]
    dynamodb.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": bool(ttl["Enabled"])},
    )
    keys = ", ".join(k["AttributeName"] for k in props["KeySchema"])
    return f"ledger: table {table} created from template.yaml (keys {keys}; time to live on {ttl['AttributeName']})"


if __name__ == "__main__":
    print(create(client("dynamodb")))
