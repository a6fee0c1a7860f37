"""snapshot-on-stop in the demo: two instances stop; the tagged one is imaged (three times, so
retention shows), the untagged one is skipped; then the newest image's AMI event."""

import re
import time

from common import client, heading, invoke, sample_event

ec2 = client("ec2")
AMI = "ami-0a1b2c3d4e5f00001"  # the fixture Amazon Linux AMI


def launch(name, tags):
    tags = [{"Key": "Name", "Value": name}] + [{"Key": k, "Value": v} for k, v in tags.items()]
    run = ec2.run_instances(ImageId=AMI, InstanceType="t3.small", MinCount=1, MaxCount=1,
                            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    instance_id = run["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance_id])
    return instance_id


def stop_event(instance_id, time):
    event = sample_event("snapshot-on-stop.stopped.json")
    event["detail"]["instance-id"] = instance_id
    event["time"] = time
    return event


def stop_again(instance_id):
    """Starts and stops the instance again, a second later (EC2 states stop times to the second),
    and answers the stop time EC2 states, as EventBridge's event would carry it: the function
    names and orders images by EC2's time, never by an event's alone."""
    time.sleep(1.1)
    ec2.start_instances(InstanceIds=[instance_id])
    ec2.stop_instances(InstanceIds=[instance_id])
    return stop_time(instance_id)


def stop_time(instance_id):
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    stated = re.fullmatch(r"User initiated \((\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) (?:GMT|UTC)\)",
                          instance["StateTransitionReason"])
    return f"{stated.group(1)}T{stated.group(2)}Z"


heading("snapshot-on-stop: image stopped instances, keep the last 2 per instance")
web = launch("web-1", {"amiguard:snapshot-on-stop": "true", "team": "storefront"})
batch = launch("batch-1", {})
for instance_id, label in [(web, "web-1 (tagged)"), (batch, "batch-1 (untagged)")]:
    for stop in range(3):
        time_ = stop_time(instance_id) if stop == 0 else stop_again(instance_id)
        report, error = invoke("snapshot-on-stop", stop_event(instance_id, time_))
        if error:
            raise SystemExit(f"snapshot-on-stop failed: {error}")
        line = f"{label:20} stop at {time_}: {report['outcome']}"
        if report["outcome"] == "skipped":
            print(f"{line} ({report['reason']})")
            break
        template = report["launch_template"]
        line += f" -> {report['image_id']}, template {template['id']} v{template['version']}"
        if report["retired_images"]:
            line += f"; retired {', '.join(report['retired_images'])} and {len(report['deleted_snapshots'])} snapshot(s)"
        print(line)

last = stop_time(web)
again, _ = invoke("snapshot-on-stop", stop_event(web, last))
print(f"{'web-1 (redelivery)':20} stop at {last}: {again['outcome']} -> {again['image_id']}")
# A direct invoke dated in the future: not what EC2 says, so nothing is done.
forged, _ = invoke("snapshot-on-stop", stop_event(web, "2099-01-01T00:00:00Z"))
print(f"{'web-1 (forged 2099)':20} {forged['outcome']}: {forged['reason']}")
# EC2's AMI event for the newest image (moto sends none; it makes images available at once, so
# the stop already did what the event asks: the event finds nothing left to do).
settled = sample_event("snapshot-on-stop.ami-available.json")
settled["detail"]["ImageId"] = again["image_id"]
report, error = invoke("snapshot-on-stop", settled)
if error:
    raise SystemExit(f"snapshot-on-stop failed on the AMI event: {error}")
template = report["launch_template"]
print(f"{'AMI event':20} {again['image_id']} available: {report['outcome']}, "
      f"template default v{template['version']}, retired {len(report['retired_images'])}")
images = ec2.describe_images(Owners=["self"])["Images"]
print(f"AMIs now: {', '.join(sorted(i['Name'] for i in images))}")
print(f"relaunch web-1: aws ec2 run-instances --launch-template LaunchTemplateName=amiguard-{web}")
