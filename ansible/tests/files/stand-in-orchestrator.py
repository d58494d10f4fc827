#!/usr/bin/python3
"""Stand-in for the preview-orchestrator binary in scripts/check-infra.sh's converge test.

The real binary is built by the Rust workspace; this one only has to behave like it where nginx
and the unit meet it: it listens on ORCHESTRATOR_BIND, answers GET /health and accepts webhook
POSTs, so the test can show that nginx exposes the webhook and nothing else.
"""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self._answer(200, "orchestrator healthy\n")
        else:
            self._answer(404, "orchestrator: not found\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self._answer(202, f"orchestrator accepted {self.path}\n")

    def log_message(self, fmt, *args):
        pass


host, _, port = os.environ.get("ORCHESTRATOR_BIND", "127.0.0.1:3000").rpartition(":")
HTTPServer((host, int(port)), Handler).serve_forever()
