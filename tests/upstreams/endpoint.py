"""A pool member for the e2e tests: a real process that can be killed and started again.

    python3 endpoint.py <name> <port> [ok|hang|unavailable]

Every request is answered 200 with {"endpoint": <name>, "path": ...}; a path ending in
/status/<code> answers that status; a path ending in /hang (or every request in `hang` mode) is
read and never answered, one ending in /slow is answered after 1 s; in `unavailable` mode every request is answered 503. HTTP/1.1 keep-alive, one thread per connection. Prints "ready" once
listening.
"""

import http.server
import json
import sys
import time

NAME, PORT = sys.argv[1], int(sys.argv[2])
MODE = sys.argv[3] if len(sys.argv) > 3 else "ok"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        if MODE == "hang" or self.path.split("?")[0].endswith("/hang"):
            time.sleep(3600)
            return
        if self.path.split("?")[0].endswith("/slow"):
            time.sleep(1)
        status = 503 if MODE == "unavailable" else 200
        if "/status/" in self.path:
            status = int(self.path.rsplit("/status/", 1)[1][:3])
        body = json.dumps({"endpoint": NAME, "path": self.path}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
