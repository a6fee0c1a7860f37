"""`make try TRY_ROLE_NAME=<role>` (demo/try.sh, demo/try.py): the same dry runs as `make try`, in
every active account of the organisation and every region of `AWS_REGIONS`, printed as one table.

`preflight` (after try.py's own: credentials, region, STS) checks the role name and the regions and
lists the organisation's accounts (Organizations `ListAccounts`, every page; only `ACTIVE` ones),
before anything is built; it refuses, in one line and with exit status 2, when the caller may not
list them. `run` then takes the accounts `POOL` at a time: for each it assumes
`arn:<partition>:iam::<account>:role/<role>` (the caller's own account too: it is listed like any
other, through its role) and, with those credentials, runs the sweeper (DRY_RUN=true,
LEDGER_READ_ONLY=true, REGIONS=<the region>) and the alert function's audit (DRY_RUN=true) once per
region, each as its own process, served its one event by the small Lambda Runtime API below. A
role that cannot be assumed, or a dry run that fails, is a row saying so: the others still run and
print. The exit status is 1 when any row failed, after the whole table and its totals."""

import concurrent.futures
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import uuid

import boto3
import botocore.exceptions

from common import ROOT

# Accounts dry-run side by side (each runs its regions one after the other, two processes each).
POOL = 4
SESSION_NAME = "amiguard-try"
# IAM role names: 1-64 of letters, digits and +=,.@_-. The role is assumed as role/<name>: it must
# have no path.
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
REGION_NAME = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
DEFAULT_PRICE_PER_GB_MONTH = 0.05
LOG_DIR = os.path.join(ROOT, ".demo", "try-org")
INVOCATION_TIMEOUT = 900


def refuse(message):
    print(f"make try: {message}", file=sys.stderr)
    sys.exit(2)


def preflight(session, region, identity):
    """The shell exports of the organisation's run, or a refusal (exit status 2)."""
    role = os.environ["TRY_ROLE_NAME"]
    if not ROLE_NAME.match(role):
        refuse(f"TRY_ROLE_NAME={role!r} is not an IAM role name (1-64 of letters, digits and +=,.@_-): "
               "nothing was run")
    listed = os.environ.get("AWS_REGIONS", "").strip()
    regions = [r.strip() for r in listed.split(",") if r.strip()] if listed else [region]
    wrong = [r for r in regions if not REGION_NAME.match(r)]
    if wrong or not regions:
        refuse(f"AWS_REGIONS={listed!r} is not a comma-separated list of regions such as "
               "us-east-1,eu-west-1: nothing was run")
    regions = list(dict.fromkeys(regions))
    organizations = session.client("organizations", region_name=region)
    accounts = []
    token = None
    try:
        while True:
            page = organizations.list_accounts(**({"NextToken": token} if token else {}))
            for account in page.get("Accounts", []):
                # `State` (ACTIVE, SUSPENDED, PENDING_CLOSURE, CLOSED) replaces `Status`.
                if account.get("State", account.get("Status")) == "ACTIVE":
                    accounts.append(account["Id"])
            following = page.get("NextToken")
            if following and following == token:
                refuse("Organizations ListAccounts handed back the same page token twice: nothing was run")
            token = following
            if not token:
                break
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        code = getattr(err, "response", {}).get("Error", {}).get("Code") or type(err).__name__
        refuse(f"Organizations ListAccounts failed for {identity['Arn']} ({code}): TRY_ROLE_NAME needs the "
               "organisation's management account or a delegated administrator: nothing was run")
    if not accounts:
        refuse("Organizations ListAccounts answered no active account: nothing was run")
    exports = {
        "AMIGUARD_TRY_ROLE": role,
        "AMIGUARD_TRY_REGIONS": ",".join(regions),
        "AMIGUARD_TRY_ACCOUNTS": ",".join(sorted(set(accounts))),
    }
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")


class RuntimeApi:
    """The Lambda Runtime API, for one event per function process: each process is started with
    `AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:<port>/<name>` and gets the event registered under `name`.
    (`cargo lambda watch` serves only the workspace's binaries by their own names, one process
    each; here several copies of each run side by side, each with its own credentials.)"""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = {}  # name -> (request id, event)
        self.answers = {}  # name -> threading.Event, and the answer in self.results
        self.results = {}
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def _reply(self, status, body=b"{}", headers=()):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                name, _, rest = self.path.lstrip("/").partition("/")
                with api.lock:
                    pending = api.events.pop(name, None)
                if rest != "2018-06-01/runtime/invocation/next" or pending is None:
                    # A second `next` (the function waits for another event): none will come.
                    api.answers.get(name, threading.Event()).wait(900)
                    return self._reply(410)
                request_id, event = pending
                deadline = int((time.time() + 900) * 1000)
                self._reply(200, json.dumps(event).encode(), [
                    ("Lambda-Runtime-Aws-Request-Id", request_id),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                    ("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:us-east-1:000000000000:function:{name}"),
                    ("Lambda-Runtime-Trace-Id", f"Root=1-00000000-{request_id.replace('-', '')[:24]}"),
                    ("Content-Type", "application/json"),
                ])

            def do_POST(self):
                name, _, rest = self.path.lstrip("/").partition("/")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if rest.endswith("/response"):
                    api._answer(name, (json.loads(body), ""))
                else:  # an invocation's error, or the function's init error
                    try:
                        error = json.loads(body)
                        text = f"{error.get('errorType', 'error')}: {error.get('errorMessage', '')}"
                    except ValueError:
                        text = body.decode(errors="replace")
                    api._answer(name, (None, text))
                self._reply(202)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a function stopped once it answered: its connection is gone

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _answer(self, name, answer):
        with self.lock:
            self.results[name] = answer
            done = self.answers.get(name)
        if done:
            done.set()

    def expect(self, name, event):
        with self.lock:
            self.events[name] = (str(uuid.uuid4()), event)
            self.answers[name] = threading.Event()
            self.results.pop(name, None)

    def answer(self, name, timeout):
        """The function's (report, error text), or None when it gave none within `timeout`."""
        if not self.answers[name].wait(timeout):
            return None
        with self.lock:
            return self.results.pop(name)

    def close(self):
        with self.lock:
            for done in self.answers.values():
                done.set()
        self.server.shutdown()


# Every process this run started, so that none outlives it.
_processes = set()
_processes_lock = threading.Lock()


def _stop(process):
    process.kill()
    process.wait()
    with _processes_lock:
        _processes.discard(process)


def _invoke(api, function, name, env, log, event):
    """Runs `function`'s binary once on `event` with `env`: (report or None, error text)."""
    api.expect(name, event)
    env = dict(env, AWS_LAMBDA_FUNCTION_NAME=function, AWS_LAMBDA_FUNCTION_VERSION="1",
               AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256", AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{api.port}/{name}")
    binary = os.path.join(os.environ["LAMBDA_BIN_DIR"], function)
    with open(log, "w") as out:
        process = subprocess.Popen([binary], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    with _processes_lock:
        _processes.add(process)
    try:
        deadline = time.monotonic() + INVOCATION_TIMEOUT
        while time.monotonic() < deadline:
            answer = api.answer(name, 0.2)
            if answer is not None:
                return answer
            if process.poll() is not None:
                answer = api.answer(name, 1)
                if answer is not None:
                    return answer
                with open(log) as f:
                    tail = " ".join(f.read().split()[-40:])
                return None, f"{function} exited ({process.returncode}): {tail}"
        return None, f"{function} gave no answer within {INVOCATION_TIMEOUT} s"
    finally:
        _stop(process)


def _code(err):
    return getattr(err, "response", {}).get("Error", {}).get("Code") or type(err).__name__


def _one_line(text):
    return " ".join(str(text).split())[:300]


def dry_run_region(api, account, region, credentials, scheduled):
    """One row: the sweep and the audit of `account` in `region`, with the role's credentials."""
    partition = os.environ["AMIGUARD_TRY_PARTITION"]
    env = {k: v for k, v in os.environ.items() if k not in ("REPORT_TOPIC_ARN", "AWS_PROFILE")}
    env.update(
        AWS_ACCESS_KEY_ID=credentials["AccessKeyId"], AWS_SECRET_ACCESS_KEY=credentials["SecretAccessKey"],
        AWS_SESSION_TOKEN=credentials["SessionToken"], AWS_REGION=region, AWS_DEFAULT_REGION=region,
        RUST_LOG=os.environ.get("RUST_LOG", "warn"), DRY_RUN="true", LEDGER_READ_ONLY="true", REGIONS=region,
        ALERT_TOPIC_ARN=f"arn:{partition}:sns:{region}:{account}:amiguard-try-publishes-nothing",
    )
    row = {"account": account, "region": region}
    errors = []
    stem = os.path.join(LOG_DIR, f"{account}.{region}")

    sweep = scheduled("orphan-snapshot-sweeper.scheduled.json", account, region, partition,
                      "amiguard-orphan-snapshot-sweeper")
    sweep["detail"] = {"dry_run": True}
    report, error = _invoke(api, "orphan-snapshot-sweeper", f"sweeper-{account}-{region}", env,
                            f"{stem}.orphan-snapshot-sweeper.log", sweep)
    if error:
        errors.append(f"sweep failed: {_one_line(error)}")
    else:
        entry = next((r for r in report["regions"] if r["region"] == region), None)
        if entry is None:
            errors.append("sweep failed: its report has no entry for the region")
        elif entry["aborted"]:
            errors.append(f"sweep aborted: {_one_line(entry['aborted'])}")
        else:
            price = float(os.environ.get("PRICE_PER_GB_MONTH") or DEFAULT_PRICE_PER_GB_MONTH)
            counts = entry["counts"]
            witnessed_gib = entry["reclaimable_gib"] + sum(w["size_gib"] for w in entry["waiting"])
            row.update(
                witnessed=counts["orphans"] + counts["waiting"],
                witnessed_gib=witnessed_gib,
                witnessed_usd=round(witnessed_gib * price, 2),
                # The waiting list may be cut (counts stay whole): its size is then at least this.
                witnessed_cut=len(entry["waiting"]) < counts["waiting"],
                unwitnessed=counts["unwitnessed"],
                unwitnessed_gib=entry["unwitnessed_gib"],
                unwitnessed_usd=round(entry["unwitnessed_gib"] * price, 2),
                retire=sum(1 for i in report["retired_images"]
                           if i["region"] == region and i["outcome"] == "dry_run"),
            )

    audit_event = scheduled("untrusted-ami-alert.scheduled-audit.json", account, region, partition,
                            "amiguard-untrusted-ami-audit")
    audit, error = _invoke(api, "untrusted-ami-alert", f"audit-{account}-{region}", env,
                           f"{stem}.untrusted-ami-alert.log", audit_event)
    if error:
        errors.append(f"audit failed: {_one_line(error)}")
    else:
        row["untrusted"] = audit["counts"]["untrusted"]
    if errors:
        return {"account": account, "region": region, "error": "; ".join(errors)}
    return row


def dry_run_account(api, account, role, regions, scheduled):
    """The rows of one account: one per region, or the role's refusal in each."""
    partition = os.environ["AMIGUARD_TRY_PARTITION"]
    # A session per thread: boto3's default session is not safe to make clients from side by side.
    sts = boto3.session.Session().client("sts", region_name=os.environ["AWS_REGION"])
    try:
        credentials = sts.assume_role(RoleArn=f"arn:{partition}:iam::{account}:role/{role}",
                                      RoleSessionName=SESSION_NAME)["Credentials"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        return [{"account": account, "region": region, "error": f"role {role} not assumable: {_code(err)}"}
                for region in regions]
    rows = []
    for region in regions:
        try:
            rows.append(dry_run_region(api, account, region, credentials, scheduled))
        except Exception as err:  # one row, never the end of the run
            rows.append({"account": account, "region": region,
                         "error": f"dry run failed: {type(err).__name__}: {_one_line(err)}"})
    return rows


def account_rows(api, account, role, regions, scheduled):
    """dry_run_account's rows; whatever it raised, a row per region saying so (never the end)."""
    try:
        return dry_run_account(api, account, role, regions, scheduled)
    except Exception as err:
        return [{"account": account, "region": region,
                 "error": f"dry run failed: {type(err).__name__}: {_one_line(err)}"} for region in regions]


COLUMNS = [
    ("witnessed", "witnessed", "{}"), ("witnessed_gib", "GiB", "{}"), ("witnessed_usd", "$/month", "{:.2f}"),
    ("unwitnessed", "unwitnessed", "{}"), ("unwitnessed_gib", "GiB", "{}"), ("unwitnessed_usd", "$/month", "{:.2f}"),
    ("retire", "to retire", "{}"), ("untrusted", "untrusted", "{}"),
]


def table(rows):
    """The lines of the table: a header, a row per account and region, the totals."""
    head = f"{'account':<12}  {'region':<15}" + "".join(f"  {title:>11}" for _, title, _ in COLUMNS)
    lines = [f"{'':29}  {'orphans, witnessed (or adopted)':^37}  {'orphans, unwitnessed (kept)':^37}"
             f"  {'images':>11}  {'instances':>11}", head, "-" * len(head)]
    totals = {key: 0 for key, _, _ in COLUMNS}
    failed = 0
    for row in rows:
        start = f"{row['account']:<12}  {row['region']:<15}"
        if "error" in row:
            failed += 1
            lines.append(f"{start}  {row['error']}")
            continue
        cells = []
        for key, _, form in COLUMNS:
            totals[key] += row[key]
            cell = form.format(row[key])
            if key == "witnessed_gib" and row.get("witnessed_cut"):
                cell += "+"
            cells.append(f"  {cell:>11}")
        lines.append(start + "".join(cells))
    lines.append("-" * len(head))
    totals["witnessed_usd"] = round(totals["witnessed_usd"], 2)
    totals["unwitnessed_usd"] = round(totals["unwitnessed_usd"], 2)
    accounts = len({row["account"] for row in rows})
    label = f"{'total':<12}  {f'{accounts} accounts':<15}"
    lines.append(label + "".join(f"  {form.format(totals[key]):>11}" for key, _, form in COLUMNS))
    if failed:
        lines.append(f"{failed} row(s) failed (counted in no total): their accounts' figures are unknown")
    return lines, failed


def run(scheduled):
    role = os.environ["AMIGUARD_TRY_ROLE"]
    regions = os.environ["AMIGUARD_TRY_REGIONS"].split(",")
    accounts = os.environ["AMIGUARD_TRY_ACCOUNTS"].split(",")
    os.makedirs(LOG_DIR, exist_ok=True)
    started = time.monotonic()
    api = RuntimeApi()
    try:
        with concurrent.futures.ThreadPoolExecutor(POOL) as pool:
            per_account = list(pool.map(lambda a: account_rows(api, a, role, regions, scheduled), accounts))
    finally:
        api.close()
        with _processes_lock:
            left = list(_processes)
        for process in left:
            _stop(process)
    rows = [row for rows in per_account for row in rows]
    print()
    lines, failed = table(rows)
    print("\n".join(lines))
    print()
    print(f"{len(accounts)} account(s) x {len(regions)} region(s) in {time.monotonic() - started:.0f} s, "
          f"{POOL} accounts side by side; each function's log: .demo/try-org/<account>.<region>.<function>.log")
    if failed:
        sys.exit(f"make try: {failed} row(s) failed (above); nothing was changed in any account")
    print("make try: dry run finished; nothing was deleted, tagged, stopped or published in any account.")
