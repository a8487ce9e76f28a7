"""A scoring service on the loopback interface for the http reward's tests (the `service` fixture of
tests/unit/conftest.py starts one per test and stops it)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Service:
    """A scriptable scoring service: each request pops the next behaviour (default: score by length, or answer
    HTTP `status` when it is not 200), after waiting up to `delay` s (cut short by `release`)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[str] = []
        self.delay, self.status, self.release = 0.0, 200, threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.requests.append(body)
                service.release.wait(service.delay)
                default = "ok" if service.status == 200 else str(service.status)
                action = service.script.pop(0) if service.script else default
                if action == "slow":
                    time.sleep(1.0)
                if action.isdigit():
                    self.send_response(int(action))
                    self.end_headers()
                    self.wfile.write(b"nope")
                    return
                scores = [float(len(c)) for c in body["completions"]]
                if action == "short":
                    scores = scores[:-1]
                payload = {"scores": scores, "details": [{"n": i} for i in range(len(scores))]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
