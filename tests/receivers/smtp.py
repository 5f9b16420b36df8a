#!/usr/bin/env python3
"""An SMTP server for trackgate's tests (aiosmtpd from PyPI) on a certificate of its own test CA:
STARTTLS required before any mail (`--mode starttls`), or TLS from the first byte (`--mode tls`).
Each message is appended to its log as one JSON line: sender, recipients, whether the session
was encrypted, and the message text."""

import argparse
import asyncio
import json
import ssl

from aiosmtpd.controller import Controller


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--mode", choices=["starttls", "tls"], default="starttls")
    a = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            line = {
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "tls": session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                "data": envelope.content.decode("utf-8", "replace"),
            }
            with open(a.log, "a") as f:
                f.write(json.dumps(line) + "\n")
            return "250 OK"

    if a.mode == "starttls":
        c = Controller(Handler(), hostname="127.0.0.1", port=a.port, tls_context=ctx, require_starttls=True)
    else:
        c = Controller(Handler(), hostname="127.0.0.1", port=a.port, ssl_context=ctx)
    c.start()
    print("listening", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        c.stop()


if __name__ == "__main__":
    main()
