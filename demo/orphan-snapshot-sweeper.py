"""orphan-snapshot-sweeper in the demo: a small account with three orphans (AMIs created, witnessed by
the sweeper through their `available` AMI events, then deregistered), a protected orphan, an orphan
left before amiguard was installed (nothing witnessed it: kept `unwitnessed` and listed), a
snapshot an AMI still uses and a manual snapshot; then a dry run (the event's detail asks for it: a
detail can only make a run drier) and a real sweep.

demo/run.sh serves the functions with DRY_RUN=false MIN_AGE_HOURS=0 RECYCLE_BIN_CHECK=false
(moto cannot backdate snapshots and has no Recycle Bin). After the sweep, the demo reads the run's
journal from the ledger with the one query docs/ledger.md shows."""

import os

from common import ACCOUNT, client, heading, invoke, sample_event, sweep_summary

ec2 = client("ec2")
AMI = "ami-0a1b2c3d4e5f00001"  # the fixture Amazon Linux AMI


def make_image(name):
    """An AMI of a fresh instance; returns (image id, its snapshot id)."""
    run = ec2.run_instances(ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1)
    image_id = ec2.create_image(InstanceId=run["Instances"][0]["InstanceId"], Name=name)["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    return image_id, image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]


def witness(image_id):
    """What EventBridge delivers when EC2 says the image became available: the sweeper records the
    image's snapshot mapping as EC2 lists it (the image is then witnessed)."""
    event = sample_event("orphan-snapshot-sweeper.ami-available.json")
    event["account"] = ACCOUNT
    event["detail"]["ImageId"] = image_id
    event["resources"] = [f"arn:aws:ec2:us-east-1::image/{image_id}"]
    answer, error = invoke("orphan-snapshot-sweeper", event)
    if error or answer["outcome"] != "recorded":
        raise SystemExit(f"orphan-snapshot-sweeper did not record {image_id}: {error or answer}")


def scheduled(name):
    event = sample_event(name)
    event["account"] = ACCOUNT
    return event


heading("orphan-snapshot-sweeper: delete what deregistered AMIs left behind, safely")
for n in range(1, 4):
    image_id, snapshot_id = make_image(f"release-{n}")
    witness(image_id)
    ec2.deregister_image(ImageId=image_id)
    print(f"orphan      {snapshot_id}  (its AMI {image_id} was witnessed, then deregistered)")
image_id, snapshot_id = make_image("before-amiguard")
ec2.deregister_image(ImageId=image_id)
print(f"unwitnessed {snapshot_id}  (its AMI {image_id} was deregistered before amiguard saw it: "
      "listed, kept until ADOPT_UNWITNESSED_ORPHANS=true)")
image_id, snapshot_id = make_image("legal-hold")
witness(image_id)
ec2.deregister_image(ImageId=image_id)
ec2.create_tags(Resources=[snapshot_id], Tags=[{"Key": "amiguard:keep", "Value": "legal hold"}])
print(f"protected   {snapshot_id}  (an orphan tagged amiguard:keep)")
image_id, snapshot_id = make_image("release-current")
print(f"referenced  {snapshot_id}  (its AMI {image_id} is still registered)")
volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=20)["VolumeId"]
snapshot_id = ec2.create_snapshot(VolumeId=volume, Description="before the database upgrade")["SnapshotId"]
print(f"manual      {snapshot_id}  (20 GiB, not made for an AMI)")

for title, event_file in [("Dry run", "orphan-snapshot-sweeper.dry-run.json"),
                          ("Sweep", "orphan-snapshot-sweeper.scheduled.json")]:
    report, error = invoke("orphan-snapshot-sweeper", scheduled(event_file))
    if error:
        raise SystemExit(f"orphan-snapshot-sweeper failed: {error}")
    sweep_summary(title, report)

# The journal: every deletion of the run, under its run id, in one query (docs/ledger.md).
journal = client("dynamodb").query(
    TableName=os.environ["LEDGER_TABLE"],
    KeyConditionExpression="pk = :run",
    ExpressionAttributeValues={":run": {"S": f"run#{report['run_id']}"}},
)["Items"]
print(f"\njournal of run {report['run_id']} in the ledger ({len(journal)} entries):")
for entry in journal:
    print(f"  {entry['resource']['S']} {entry['resource_id']['S']}  {entry['size_gib']['N']} GiB, "
          f"{entry['rule']['S']} of {entry['source_image_id']['S']}")
