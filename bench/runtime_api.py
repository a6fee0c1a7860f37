"""A small Lambda Runtime API on loopback, enough to run a function's real release binary as
Lambda does (provided.al2023: the binary polls `GET /2018-06-01/runtime/invocation/next`, gets
an event, posts its answer), and to time its start: the moment of the first poll is recorded.

Used by bench/cold_start.py (init time) and bench/sweep.py (the sweeper's release binary
against moto).
"""

import http.server
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid

PREFIX = "/2018-06-01/runtime"


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that goes away mid-connection (a function process stopped) is not an error."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RuntimeApi:
    def __init__(self):
        self.events = queue.Queue()
        self.answers = {}
        self.answered = threading.Condition()
        self.first_poll = None  # time.perf_counter() of the first GET .../invocation/next
        self.init_error = None
        self.closed = False
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if self.path != f"{PREFIX}/invocation/next":
                    return self.reply(404, b"{}")
                if api.first_poll is None:
                    api.first_poll = time.perf_counter()
                while not api.closed:
                    try:
                        request_id, payload, deadline_ms = api.events.get(timeout=0.2)
                        break
                    except queue.Empty:
                        continue
                else:
                    return
                self.reply(200, payload, {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:bench",
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
                })

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts[:2] == ["init", "error"]:
                    api.init_error = body.decode("utf-8", "replace")
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    with api.answered:
                        api.answers[parts[1]] = (parts[2], body)
                        api.answered.notify_all()
                self.reply(202, b'{"status":"OK"}')

            def reply(self, status, body, headers=None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event, timeout_s=900):
        """Hands `event` to the function with Lambda's deadline `timeout_s` from now; waits for the
        answer: ("response" | "error", parsed JSON)."""
        request_id = str(uuid.uuid4())
        deadline_ms = int((time.time() + timeout_s) * 1000)
        self.events.put((request_id, json.dumps(event).encode(), deadline_ms))
        with self.answered:
            if not self.answered.wait_for(lambda: request_id in self.answers, timeout=timeout_s + 60):
                raise TimeoutError(f"no answer from the function within {timeout_s + 60} s")
            kind, body = self.answers.pop(request_id)
        return kind, json.loads(body or b"null")

    def close(self):
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


def lambda_env(api, extra):
    """The environment Lambda gives a provided.al2023 function, plus `extra`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench",
        "RUST_LOG": "warn",
    }
    env.update(extra)
    return env


def start(binary, api, extra_env, log):
    """Starts `binary` as Lambda would, its output to the open file `log`."""
    return subprocess.Popen([binary], env=lambda_env(api, extra_env), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
