"""Inputs and a small runner for the published-SDK end-to-end tests.

`tests/e2e/sdk.rs` starts the real stack (Postgres, Redis, control plane, gateway, a recording
upstream), seeds a zone with two applications and one resource, and runs one of these modules with
the stack described in the environment. A module ends with `harness.main(globals())`: every
`test_*` function (sync or async) runs in definition order, each result is printed, and the process
exits non-zero if any failed. No pytest: the clients are the only third-party code under test.
"""

import asyncio
import contextlib
import http.server
import inspect
import threading
import os
import sys
import time
import traceback

from caracalai import Caracal

CP = os.environ["CP_URL"]
GW = os.environ["GW_URL"]
ZONE = os.environ["ZONE_ID"]
APP = os.environ["APP_ID"]
SECRET = os.environ["CLIENT_SECRET"]
APP2 = os.environ["APP2_ID"]
SECRET2 = os.environ["CLIENT_SECRET2"]
RES = os.environ["RESOURCE"]
REDIS_URL = os.environ["REDIS_URL"]
STREAMS_KEY = bytes.fromhex(os.environ["STREAMS_HMAC_KEY"])
# A second resource whose upstream a test serves itself (see `recording_upstream`).
VERIFY_RES = os.environ["VERIFY_RESOURCE"]
VERIFY_PORT = int(os.environ["VERIFY_PORT"])


def client(app: str = APP, secret: str = SECRET, resources: list | None = None, **kw) -> Caracal:
    """A client configured the way the SDK's docs show, with the Coordinator on the control plane
    (the SDK's default Coordinator URL is :4000)."""
    return Caracal.from_client_secret(
        coordinator_url=CP,
        sts_url=CP,
        zone_id=ZONE,
        application_id=app,
        client_secret=secret,
        resources=resources or [RES],
        gateway_url=GW,
        **kw,
    )


@contextlib.contextmanager
def recording_upstream(port: int, seen: list):
    """A loopback upstream answering 200 to anything and recording each request's headers
    (lower-case names) in `seen`, for as long as the block runs."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's naming
            seen.append({k.lower(): v for k, v in self.headers.items()} | {":path": self.path})
            body = b'{"upstream":"python"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def calls(events, method=None, suffix=None):
    """The Coordinator calls among recorded SDK events, optionally filtered."""
    out = []
    for e in events:
        if getattr(e, "type", None) != "coordinator.call":
            continue
        if method and e.method != method:
            continue
        if suffix and not e.path.endswith(suffix):
            continue
        out.append(e)
    return out


async def eventually(check, timeout=10.0, every=0.1):
    """Polls `check()` (sync or async) until it is truthy; fails with its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"not within {timeout}s (last: {last!r})")


def main(namespace) -> None:
    only = set(sys.argv[1:])
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f) and (not only or n in only)]
    if not tests:
        print("no tests selected", file=sys.stderr)
        sys.exit(2)
    failed = 0
    for name, f in tests:
        started = time.monotonic()
        try:
            result = f()
            if inspect.isawaitable(result):
                asyncio.run(result)
            print(f"PASS {name} ({time.monotonic() - started:.1f}s)", flush=True)
        except BaseException:  # noqa: BLE001 - a test's failure of any kind is reported, then the next runs
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - started:.1f}s)", flush=True)
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
