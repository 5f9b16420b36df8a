#!/usr/bin/env python3
"""A webhook receiver for trackgate's tests: HTTPS on its own certificate (a test CA), Python's
standard library only. It checks every request's signature the way PROTOCOL.md describes the
ingest request signature, with the secret of the rule the request names (read from a JSON file
of rule id -> hex secret, on every request, so rules may be added while it runs), and appends one
JSON line per request to its log: the path, the headers that matter, whether the signature and
timestamp verified, and the body. It answers 200, or `--status` if given."""

import argparse
import hashlib
import hmac
import json
import ssl
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--secrets", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--status", type=int, default=200)
    a = p.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(n)
            ts = self.headers.get("x-tg-timestamp", "")
            sig = self.headers.get("x-tg-signature", "")
            rule = self.headers.get("x-tg-webhook", "")
            try:
                with open(a.secrets) as f:
                    secret = bytes.fromhex(json.load(f).get(rule, ""))
            except (OSError, ValueError):
                secret = b""
            path = self.path.split("?", 1)[0]
            msg = b"tg1-request\n" + ts.encode() + b"\nPOST\n" + path.encode() + b"\n" + body
            good = bool(secret) and hmac.compare_digest(
                hmac.new(secret, msg, hashlib.sha256).hexdigest(), sig
            )
            fresh = ts.isdigit() and abs(int(ts) - time.time()) <= 300
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            line = {
                "path": self.path,
                "rule": rule,
                "delivery": self.headers.get("x-tg-delivery"),
                "verified": good,
                "fresh": fresh,
                "body": parsed,
            }
            with open(a.log, "a") as f:
                f.write(json.dumps(line) + "\n")
            self.send_response(a.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
