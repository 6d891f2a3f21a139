"""A tiny model server shaped like Darwin's serves, for the end-to-end tests.

    GET  /healthcheck  200 {"status": "ok"}
    POST /predict      {"features": [numbers]} -> {"prediction": sum * WEIGHT, "model": ..., "pod": ...}
    GET  /version      {"model": ..., "pod": ...}

It answers on $PORT (default 8000). The "model" is the MODEL_VERSION variable (the tests set
it per artifact so that an upgrade shows which pods answer); WEIGHT defaults to 1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = os.environ.get("MODEL_VERSION", "unknown")
WEIGHT = float(os.environ.get("WEIGHT", "1"))
POD = os.environ.get("HOSTNAME") or socket.gethostname()


class Handler(BaseHTTPRequestHandler):
    server_version = "mlserve-test-model/1"

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthcheck":
            self._send(200, {"status": "ok"})
        elif self.path == "/version":
            self._send(200, {"model": MODEL, "pod": POD})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._send(404, {"error": f"no route {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
            features = [float(x) for x in payload["features"]]
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": f'expected {{"features": [numbers]}}: {exc}'})
            return
        self._send(200, {"prediction": sum(features) * WEIGHT, "model": MODEL, "pod": POD})

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"model {MODEL} serving on :{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
