"""A webhook receiver for the demo, and a model for writing your own: verify, drop repeats, then use the payload.

    export ATMP_DEMO_WEBHOOK_SECRET=demo-secret
    python examples/webhook_receiver.py [--port 8765]

Verification uses the raw body bytes exactly as received; parsing first and re-serialising would change them.
"""

from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from monitor.signing import verify_signature

SEEN: set[str] = set()


class Receiver(BaseHTTPRequestHandler):
    secret = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not verify_signature(self.secret, self.headers.get("X-ATMP-Timestamp"), body,
                                self.headers.get("X-ATMP-Signature")):
            self._answer(401, "bad signature")
            return
        delivery = self.headers.get("X-ATMP-Delivery", "")
        if delivery in SEEN:
            self._answer(200, "repeat dropped")
            return
        SEEN.add(delivery)
        payload = json.loads(body)
        print(f"[{payload['type']}] {payload['title']!r} ({delivery})")
        for event in payload["events"]:
            print(f"    {event['regulator']:<6} {event['event_type'] or '-':<15} {event['title']!r}")
        if payload["incident"]:
            print(f"    source {payload['incident']['source_id']}: {payload['incident']['state']}")
        self._answer(200, "ok")

    def _answer(self, status: int, text: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the events printed above are the interesting part."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--secret-env", default="ATMP_DEMO_WEBHOOK_SECRET")
    options = parser.parse_args()
    Receiver.secret = os.environ.get(options.secret_env, "")
    if not Receiver.secret:
        parser.error(f"set {options.secret_env} to the subscription's signing secret")
    print(f"listening on http://127.0.0.1:{options.port}/ (Ctrl-C to stop)")
    HTTPServer(("127.0.0.1", options.port), Receiver).serve_forever()


if __name__ == "__main__":
    main()
