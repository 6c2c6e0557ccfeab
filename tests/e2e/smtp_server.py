#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for credstore's end-to-end mail tests.

    smtp_server.py DIR [--port N] [--auth USER:PASSWORD]

Listens on 127.0.0.1 (port N, or a free one) and prints "PORT <n>" once it
accepts connections. Every accepted message is parsed with Python's email
package and written to DIR/<serial>.json as
{mail_from, rcpt_tos, subject, from, to, content_type, parts, defects}
(parts: every leaf part's content type and decoded text), atomically.

DIR/mode, read at each command, makes the server fail on demand:
"4xx" answers DATA with 451 (a temporary failure), "5xx" answers RCPT with
550 (a permanent one); anything else, or no file, accepts.
"""

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, directory):
        self.dir = directory
        self.serial = itertools.count(1)

    def mode(self):
        try:
            with open(os.path.join(self.dir, "mode")) as f:
                return f.read().strip()
        except FileNotFoundError:
            return "ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode() == "5xx":
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.mode() == "4xx":
            return "451 4.3.0 try again later"
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            parts.append(
                {
                    "content_type": part.get_content_type(),
                    "charset": part.get_content_charset(),
                    "body": part.get_content(),
                }
            )
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(msg.get("Subject", "")),
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "content_type": msg.get_content_type(),
            "parts": parts,
            "defects": [type(d).__name__ for d in msg.defects]
            + [type(d).__name__ for p in msg.walk() for d in p.defects],
        }
        n = next(self.serial)
        path = os.path.join(self.dir, f"{os.getpid()}-{n:06}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, path)
        return "250 OK queued"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--auth", default=None, help="USER:PASSWORD required")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = Handler(args.dir)
    kwargs = {}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user.encode()
                and auth_data.password == password.encode()
            )
            return AuthResult(success=ok)

        kwargs = dict(
            authenticator=authenticator, auth_required=True, auth_require_tls=False
        )

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="localhost", **kwargs),
            host="127.0.0.1",
            port=args.port,
        )
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
