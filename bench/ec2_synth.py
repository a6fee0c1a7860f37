"""A bench-only synthetic EC2 endpoint (issue 23): a generated account of N snapshots and its
images, answered page by page as EC2 does, with a latency per page and EC2's token buckets.

Nothing is held per snapshot: snapshot i (0 <= i < N) is computed from its index when a page
needs it. Its id is `snap-` and 17 hex digits of (i * ODD) mod 2**68 (a bijection, so ids are
distinct and their last hex digits evenly spread). The account:
  - images j < N // 50, each mapping snapshots 2j and 2j+1 (live: they keep their snapshots);
  - snapshots 2M .. 2M + N//10: made by CreateImage for AMIs that are gone (orphans);
  - the rest: manual snapshots ("nightly backup").

Answered (EC2's query protocol, POST form bodies; STS's GetCallerIdentity too):
  DescribeSnapshots      OwnerId.1=self, MaxResults (5..1000, default 1000), NextToken, and the
                         `snapshot-id` filter with EC2's wildcards (`*` zero or more characters,
                         `?` exactly one, backslash escapes; case-sensitive; several values OR'd)
  DescribeImages         Owners self, MaxResults, NextToken (IncludeDisabled/Deprecated accepted)
  DescribeLockedSnapshots, DescribeFastSnapshotRestores, DescribeInstances,
  DescribeLaunchTemplateVersions, DescribeSnapshotAttribute, DescribeImageAttribute: empty answers
With `--filter-after-paging`, a filtered DescribeSnapshots call pages the whole account and filters
each page after: a page holds only the matching snapshots among the next MaxResults of the account,
so it is short, often empty, and still carries a NextToken (EC2's API reference warns that filtered
describe calls may answer so; whether DescribeSnapshots' `snapshot-id` filter does is not measured).
Each page of DescribeSnapshots and DescribeImages is answered after `--latency` seconds. Each action
has EC2's token bucket (`--burst` 100, `--refill` 20 a second); a call finding it empty is answered
at once with HTTP 503 `RequestLimitExceeded`, as EC2 does.

GET /stats answers the calls, throttled answers and pages served so far (JSON).

Usage: ec2_synth.py --snapshots N --latency 3 [--filter-after-paging] [--port 0]   (prints `listening on PORT` when ready)
"""

import argparse
import http.server
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid

ACCOUNT = "123456789012"
ODD = 0x9E3779B97F4A7C15
MASK = (1 << 68) - 1
EPOCH = 1735689600  # 2025-01-01T00:00:00Z
NS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def snapshot_id(i):
    return f"snap-{(i * ODD) & MASK:017x}"


def image_id(j):
    return f"ami-{(j * 0xD6E8FEB86659FD93) & MASK:017x}"


def gone_image_id(j):
    return f"ami-{((j * 0xD6E8FEB86659FD93) ^ (1 << 67)) & MASK:017x}"


def iso(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def wildcard_regex(pattern):
    """EC2's filter wildcards as a regular expression."""
    out, escaped = [], False
    for c in pattern:
        if escaped:
            out.append(re.escape(c))
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out) + r"\Z")


class Bucket:
    def __init__(self, burst, refill):
        self.burst, self.refill, self.tokens, self.at = burst, refill, burst, time.monotonic()
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.refill)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class Account:
    def __init__(self, snapshots):
        self.n = snapshots
        self.images = snapshots // 50
        self.orphans = snapshots // 10
        # The inverse of ODD modulo 16: snapshot i's last hex digit is (i * ODD) mod 16.
        self.inverse = pow(ODD % 16, -1, 16)

    def snapshot_xml(self, i):
        if i < 2 * self.images:
            description = f"Created by CreateImage(i-0123456789abcdef0) for {image_id(i // 2)} from vol-0{i:016x}"
        elif i < 2 * self.images + self.orphans:
            description = f"Created by CreateImage(i-0123456789abcdef0) for {gone_image_id(i // 2)} from vol-0{i:016x}"
        else:
            description = f"nightly backup {i}"
        return (f"<item><snapshotId>{snapshot_id(i)}</snapshotId><volumeId>vol-0{i:016x}</volumeId>"
                f"<status>completed</status><startTime>{iso(EPOCH + i)}</startTime><progress>100%</progress>"
                f"<ownerId>{ACCOUNT}</ownerId><volumeSize>8</volumeSize><description>{description}</description>"
                f"<encrypted>false</encrypted><storageTier>standard</storageTier></item>")

    def image_xml(self, j):
        mappings = "".join(
            f"<item><deviceName>/dev/xvd{chr(97 + k)}</deviceName><ebs><snapshotId>{snapshot_id(2 * j + k)}</snapshotId>"
            f"<volumeSize>8</volumeSize><deleteOnTermination>true</deleteOnTermination><volumeType>gp3</volumeType>"
            f"<encrypted>false</encrypted></ebs></item>" for k in range(2))
        return (f"<item><imageId>{image_id(j)}</imageId><imageLocation>{ACCOUNT}/bench-{j}</imageLocation>"
                f"<imageState>available</imageState><imageOwnerId>{ACCOUNT}</imageOwnerId>"
                f"<creationDate>{iso(EPOCH + j)}</creationDate><isPublic>false</isPublic><architecture>x86_64</architecture>"
                f"<imageType>machine</imageType><name>bench-{j}</name><rootDeviceType>ebs</rootDeviceType>"
                f"<rootDeviceName>/dev/xvda</rootDeviceName><blockDeviceMapping>{mappings}</blockDeviceMapping></item>")

    def snapshot_page(self, patterns, start, size, filter_after_paging=False):
        """Snapshots from index `start` matching any of `patterns` (None: all): up to `size`, and
        the index to go on from (None: the end). `filter_after_paging`: the next `size` of the
        account, then only those matching (a short or empty page, with a token until the end)."""
        if patterns is not None and filter_after_paging:
            end = min(self.n, start + size)
            if len(patterns) == 1 and re.fullmatch(r"snap-\*[0-9a-f]", patterns[0]):
                residue = (int(patterns[0][-1], 16) * self.inverse) % 16
                found = list(range(start + (residue - start) % 16, end, 16))
            else:
                regexes = [wildcard_regex(p) for p in patterns]
                found = [i for i in range(start, end) if any(r.match(snapshot_id(i)) for r in regexes)]
            return found, (end if end < self.n else None)
        if patterns is None:
            end = min(self.n, start + size)
            return list(range(start, end)), (end if end < self.n else None)
        # The partitions' form, `snap-*<hex digit>`: its snapshots are one residue modulo 16.
        if len(patterns) == 1 and re.fullmatch(r"snap-\*[0-9a-f]", patterns[0]):
            residue = (int(patterns[0][-1], 16) * self.inverse) % 16
            first = start + (residue - start) % 16
            found = list(range(first, self.n, 16)[:size])
            after = found[-1] + 1 if len(found) == size else None
            return found, (after if after is not None and after < self.n else None)
        regexes = [wildcard_regex(p) for p in patterns]
        found, i = [], start
        while i < self.n and len(found) < size:
            if any(r.match(snapshot_id(i)) for r in regexes):
                found.append(i)
            i += 1
        return found, (i if i < self.n else None)


def params_of(body):
    return {k: v[0] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}


def snapshot_id_filter(params):
    values = None
    for key, name in params.items():
        m = re.fullmatch(r"Filter\.(\d+)\.Name", key)
        if m and name == "snapshot-id":
            n = m.group(1)
            values = [v for k, v in sorted(params.items()) if re.fullmatch(rf"Filter\.{n}\.Value\.\d+", k)]
    return values


class Server:
    def __init__(self, args):
        self.account = Account(args.snapshots)
        self.latency = args.latency
        self.filter_after_paging = args.filter_after_paging
        self.burst, self.refill = args.burst, args.refill
        self.buckets = {}
        self.stats = {"calls": {}, "throttled": {}, "pages": {}}
        self.lock = threading.Lock()

    def count(self, kind, action):
        with self.lock:
            self.stats[kind][action] = self.stats[kind].get(action, 0) + 1

    def bucket(self, action):
        with self.lock:
            if action not in self.buckets:
                self.buckets[action] = Bucket(self.burst, self.refill)
            return self.buckets[action]

    def answer(self, params):
        action = params.get("Action", "")
        self.count("calls", action)
        if action == "GetCallerIdentity":
            return 200, (f'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                         f"<GetCallerIdentityResult><Arn>arn:aws:sts::{ACCOUNT}:assumed-role/bench/bench</Arn>"
                         f"<UserId>AROABENCH:bench</UserId><Account>{ACCOUNT}</Account></GetCallerIdentityResult>"
                         f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
                         f"</GetCallerIdentityResponse>")
        if not self.bucket(action).take():
            self.count("throttled", action)
            return 503, ("<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
                         f"</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>")
        size = max(5, min(1000, int(params.get("MaxResults") or 1000)))
        start = int(params.get("NextToken") or 0)
        if action == "DescribeSnapshots":
            found, after = self.account.snapshot_page(
                snapshot_id_filter(params), start, size, self.filter_after_paging)
            time.sleep(self.latency)
            self.count("pages", action)
            items = "".join(self.account.snapshot_xml(i) for i in found)
            return 200, self.wrap(action, f"<snapshotSet>{items}</snapshotSet>", after)
        if action == "DescribeImages":
            end = min(self.account.images, start + size)
            time.sleep(self.latency)
            self.count("pages", action)
            items = "".join(self.account.image_xml(j) for j in range(start, end))
            return 200, self.wrap(action, f"<imagesSet>{items}</imagesSet>", end if end < self.account.images else None)
        empty = {
            "DescribeLockedSnapshots": "<snapshotSet/>",
            "DescribeFastSnapshotRestores": "<fastSnapshotRestoreSet/>",
            "DescribeInstances": "<reservationSet/>",
            "DescribeLaunchTemplateVersions": "<launchTemplateVersionSet/>",
            "DescribeSnapshotAttribute": f"<snapshotId>{params.get('SnapshotId', '')}</snapshotId><createVolumePermission/>",
            "DescribeImageAttribute": f"<imageId>{params.get('ImageId', '')}</imageId><launchPermission/>",
        }
        if action in empty:
            return 200, self.wrap(action, empty[action], None)
        print(f"ec2_synth: unsupported action {action!r}", file=sys.stderr, flush=True)
        return 400, ("<Response><Errors><Error><Code>InvalidAction</Code><Message>not in the synthetic account"
                     f"</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>")

    @staticmethod
    def wrap(action, body, after):
        token = f"<nextToken>{after}</nextToken>" if after is not None else ""
        return f'<{action}Response xmlns="{NS}"><requestId>{uuid.uuid4()}</requestId>{body}{token}</{action}Response>'


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--snapshots", type=int, required=True)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per page")
    parser.add_argument("--burst", type=float, default=100)
    parser.add_argument("--refill", type=float, default=20)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--filter-after-paging", action="store_true",
                        help="filtered DescribeSnapshots pages the whole account, then filters: short/empty pages with a NextToken")
    args = parser.parse_args()
    server = Server(args)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/stats":
                with server.lock:
                    self.reply(200, json.dumps(server.stats), "application/json")
            else:
                self.reply(404, "{}", "application/json")

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            status, xml = server.answer(params_of(body))
            self.reply(status, xml, "text/xml")

        def reply(self, status, text, kind):
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    httpd.daemon_threads = True
    print(f"listening on {httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
