"""A recording proxy in front of moto for the benchmarks (loopback only).

It counts every call by (service, action), and adds what the emulator lacks for a fair count:

- EC2 pagination: moto ignores MaxResults/NextToken and answers every listing in one page. For
  the listings named in PAGED, a request with MaxResults gets at most that many items and a
  nextToken, as EC2 does, so a client makes one call per page. The full listing is fetched from
  moto once per listing (the first page) and later pages are cut from it.
- Throttling: a token bucket per action (AWS documents DeleteSnapshot at about 100 burst and
  5 per second): a call that finds the bucket empty is answered RequestLimitExceeded (HTTP 503)
  without reaching moto, as EC2 does.
- The account: every forwarded call carries `x-moto-account-id: <account>`, so each benchmark
  phase works in its own account of one moto server.
- The EC2 actions moto lacks (GAPS, the same as the tests' MOTO_GAPS in tests/src/lib.rs) are
  answered as an account without snapshot locks, Fast Snapshot Restores, image references or
  recorded image lineage would answer them, and counted like any call.
- CreateImage with a `snapshot` TagSpecification, which moto answers with an HTML 500: it is
  forwarded without that specification, then the new image's snapshots are tagged with its tags
  through moto's CreateTags, as AWS tags them at creation (the tests' proxy does the same:
  `FaultKind::SnapshotTagsOnCreateImage` in tests/src/proxy.rs).

Run as a program (`python bench/proxy.py UPSTREAM PORT_FILE`), it serves until killed and writes
its endpoint to PORT_FILE: `make demo` puts it in front of moto for the functions.
"""

import http.client
import http.server
import json
import itertools
import re
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections import Counter


# Listing action -> the element that holds its items.
PAGED = {"DescribeSnapshots": "snapshotSet", "DescribeImages": "imagesSet"}

# EC2 actions moto does not implement -> the (empty) content of EC2's answer.
GAPS = {
    "DescribeLockedSnapshots": "<snapshotSet/>",
    "DescribeFastSnapshotRestores": "<fastSnapshotRestoreSet/>",
    "DescribeImageReferences": "<imageReferenceSet/>",
    "GetImageAncestry": "<imageAncestryEntrySet/>",
}


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second."""

    def __init__(self, burst, rate):
        self.burst, self.rate = burst, rate
        self.tokens, self.at = float(burst), time.monotonic()
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that goes away mid-connection (a function process stopped) is not an error."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class Proxy:
    def __init__(self, upstream):
        parsed = urllib.parse.urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.account = None
        self.buckets = {}
        self.lock = threading.Lock()
        self.reset()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                proxy.handle(self)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self, account=None, throttle=None):
        """A new phase: clear the counts, use `account`, throttle {action: (burst, rate)}: one
        bucket per region and action, as EC2 paces each region on its own."""
        with self.lock:
            self.account = account
            self.throttle = dict(throttle or {})
            self.buckets = {}  # (region, action) -> TokenBucket
            self.calls = Counter()  # (service, action) -> calls that reached the proxy
            self.items_written = Counter()  # DynamoDB write action -> items it put or deleted
            self.throttled = Counter()  # action -> calls answered RequestLimitExceeded
            self.accepted_at = {}  # action -> [monotonic times of calls forwarded]
            self.throttled_at = {}  # action -> [monotonic times of calls throttled]
            self.accepted_in = {}  # (region, action) -> [monotonic times of calls forwarded]
            self.in_flight = Counter()
            self.max_in_flight = Counter()
            self.pages = {}
            self.tokens = itertools.count(1)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request):
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        service, action, form = classify(request.headers, body)
        region = region_of_request(request.headers)
        with self.lock:
            self.calls[(service, action)] += 1
            if service == "dynamodb":
                self.items_written[action] += items_written(action, body)
            self.in_flight[action] += 1
            self.max_in_flight[action] = max(self.max_in_flight[action], self.in_flight[action])
            bucket = None
            if action in self.throttle:
                bucket = self.buckets.setdefault((region, action), TokenBucket(*self.throttle[action]))
        try:
            if bucket is not None and not bucket.take():
                with self.lock:
                    self.throttled[action] += 1
                    self.throttled_at.setdefault(action, []).append(time.monotonic())
                status, headers, answer = throttled_answer()
            else:
                with self.lock:
                    now = time.monotonic()
                    self.accepted_at.setdefault(action, []).append(now)
                    self.accepted_in.setdefault((region, action), []).append(now)
                if service == "ec2" and action in GAPS:
                    status, headers, answer = gap_answer(action)
                elif service == "ec2" and action == "CreateImage" and snapshot_tag_specs(body):
                    status, headers, answer = self.create_image_tagging_snapshots(request, body)
                elif action in PAGED and form.get("MaxResults"):
                    status, headers, answer = self.page(request, body, action, form)
                else:
                    status, headers, answer = self.forward(request, body)
                if service == "ebs" and status == 500:
                    status, headers, answer = ebs_unknown_snapshot()
        finally:
            with self.lock:
                self.in_flight[action] -= 1
        request.send_response(status)
        for name, value in headers:
            if name.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(answer)))
        request.end_headers()
        request.wfile.write(answer)

    def forward(self, request, body):
        # A phase's account (the benchmarks) replaces the caller's; without one (make demo) the
        # caller's own x-moto-account-id passes through, so each account keeps its own resources.
        # The length is http.client's to set: CreateImage's emulation forwards other bodies.
        dropped = ("connection", "content-length", "x-moto-account-id") if self.account else ("connection", "content-length")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
        if self.account:
            headers["x-moto-account-id"] = self.account
        connection = http.client.HTTPConnection(*self.upstream, timeout=600)
        try:
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def create_image_tagging_snapshots(self, request, body):
        """CreateImage as AWS answers it with a `snapshot` TagSpecification (moto: an HTML 500)."""
        params = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        rest, tags = without_snapshot_specs(params)
        status, headers, answer = self.forward(request, urllib.parse.urlencode(rest).encode())
        image = re.search(rb"<imageId>([^<]+)</imageId>", answer)
        if status != 200 or not image or not tags:
            return status, headers, answer
        described = {"Action": "DescribeImages", "Version": "2016-11-15", "ImageId.1": image.group(1).decode()}
        _, _, images = self.forward(request, urllib.parse.urlencode(described).encode())
        snapshots = [s.decode() for s in re.findall(rb"<snapshotId>([^<]+)</snapshotId>", images)]
        if not snapshots:
            return status, headers, answer
        tagging = [("Action", "CreateTags"), ("Version", "2016-11-15")]
        tagging += [(f"ResourceId.{n}", s) for n, s in enumerate(snapshots, 1)]
        for n, (key, value) in enumerate(tags, 1):
            tagging += [(f"Tag.{n}.Key", key), (f"Tag.{n}.Value", value)]
        tag_status, tag_headers, tagged = self.forward(request, urllib.parse.urlencode(tagging).encode())
        return (status, headers, answer) if tag_status == 200 else (tag_status, tag_headers, tagged)

    def page(self, request, body, action, form):
        size = max(1, min(1000, int(form["MaxResults"])))
        token = form.get("NextToken")
        if token is None:
            status, headers, answer = self.forward(request, body)
            if status != 200:
                return status, headers, answer
            root = ET.fromstring(answer)
            holder = root.find(f"{namespace(root)}{PAGED[action]}")
            if holder is None:
                return status, headers, answer
            items = list(holder)
            offset = 0
        else:
            with self.lock:
                entry = self.pages.pop(token, None)
            if entry is None:
                return 400, [("Content-Type", "text/xml")], error_xml("InvalidParameterValue", "unknown NextToken")
            root, items, headers, offset = entry
            holder = root.find(f"{namespace(root)}{PAGED[action]}")
        for child in list(holder):
            holder.remove(child)
        holder.extend(items[offset:offset + size])
        for old in root.findall(f"{namespace(root)}nextToken"):
            root.remove(old)
        if offset + size < len(items):
            with self.lock:
                token = f"bench-page-{next(self.tokens)}"
                self.pages[token] = (root, items, headers, offset + size)
            ET.SubElement(root, f"{namespace(root)}nextToken").text = token
        answer = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        # Later pages are cut from this tree: serialise before another thread touches it.
        return 200, headers, answer

    def report(self):
        with self.lock:
            return {
                "calls": dict(self.calls),
                "items_written": dict(self.items_written),
                "throttled": dict(self.throttled),
                "accepted_at": {k: list(v) for k, v in self.accepted_at.items()},
                "throttled_at": {k: list(v) for k, v in self.throttled_at.items()},
                "accepted_in": {k: list(v) for k, v in self.accepted_in.items()},
                "max_in_flight": dict(self.max_in_flight),
            }


def items_written(action, body):
    """How many ledger items a DynamoDB call writes: one per put or delete, each request of a batch."""
    if action in ("PutItem", "DeleteItem", "UpdateItem"):
        return 1
    if action == "BatchWriteItem":
        try:
            return sum(len(requests) for requests in json.loads(body)["RequestItems"].values())
        except (ValueError, KeyError, AttributeError):
            return 0
    return 0


SPEC = re.compile(r"TagSpecification\.(\d+)\.(.+)")


def snapshot_tag_specs(body):
    """The numbers of the `snapshot` TagSpecifications of a CreateImage body."""
    params = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {SPEC.match(k).group(1) for k, v in params if SPEC.match(k) and SPEC.match(k).group(2) == "ResourceType" and v == "snapshot"}


def without_snapshot_specs(params):
    """(`params` without the snapshot TagSpecifications, the others renumbered from 1; the tags
    those specified, as (key, value) pairs)."""
    snapshot = {SPEC.match(k).group(1) for k, v in params if SPEC.match(k) and SPEC.match(k).group(2) == "ResourceType" and v == "snapshot"}
    kept = sorted({int(SPEC.match(k).group(1)) for k, _ in params if SPEC.match(k)} - {int(n) for n in snapshot})
    rest, tags = [], {}
    for key, value in params:
        spec = SPEC.match(key)
        if not spec:
            rest.append((key, value))
        elif spec.group(1) in snapshot:
            tag = re.fullmatch(r"Tag\.(\d+)\.(Key|Value)", spec.group(2))
            if tag:
                tags.setdefault(int(tag.group(1)), {})[tag.group(2)] = value
        else:
            rest.append((f"TagSpecification.{kept.index(int(spec.group(1))) + 1}.{spec.group(2)}", value))
    return rest, [(t.get("Key", ""), t.get("Value", "")) for _, t in sorted(tags.items())]


def namespace(root):
    """`{uri}` of the answer's root element (moto writes EC2's without the trailing slash), also
    made the default namespace when the tree is written back."""
    uri = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if uri:
        ET.register_namespace("", uri)
    return f"{{{uri}}}" if uri else ""


def classify(headers, body):
    """(service from the SigV4 scope, action, form fields) of one request."""
    service = ""
    scope = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    if scope:
        service = scope.group(1)
    target = headers.get("X-Amz-Target")
    if target:
        return service, target.rsplit(".", 1)[-1], {}
    form = {}
    if body and "json" not in headers.get("Content-Type", ""):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
    return service, form.get("Action", "?"), form


def region_of_request(headers):
    """The region of the SigV4 scope (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`)."""
    scope = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    return scope.group(1) if scope else ""


def ebs_unknown_snapshot():
    """moto's EBS direct APIs know only the snapshots they made (StartSnapshot), and answer an
    HTML 500 (retried) for any other: answered as AWS answers a snapshot it does not know, so
    that the sweeper's exact savings (EXACT_SAVINGS) turn at once into that snapshot's bound."""
    body = b'{"Message": "moto knows the blocks of the snapshots its EBS direct APIs made only", "Reason": "SNAPSHOT_NOT_FOUND"}'
    return 404, [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ResourceNotFoundException")], body


def error_xml(code, message):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error></Errors><RequestID>bench-proxy</RequestID></Response>").encode()


def throttled_answer():
    return 503, [("Content-Type", "text/xml")], error_xml("RequestLimitExceeded", "Request limit exceeded.")


def gap_answer(action):
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>bench-proxy</requestId>{GAPS[action]}</{action}Response>")
    return 200, [("Content-Type", "text/xml")], body.encode()


if __name__ == "__main__":
    upstream, port_file = sys.argv[1], sys.argv[2]
    proxy = Proxy(upstream)
    with open(port_file, "w") as out:
        out.write(proxy.endpoint)
    threading.Event().wait()
