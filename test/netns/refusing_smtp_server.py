#!/usr/bin/python3
"""An internal SMTP server for SSG's end-to-end tests, for what smtp-sink cannot express:
refusing only some recipients, each with its own code.

    refusing_smtp_server.py HOST PORT DUMP_DIR

Recipients whose local part starts with "unknown" get 550 5.1.1, "full" get 452 4.2.2, others 250.
Each accepted message is saved byte for byte (after dot-unstuffing, CRLF kept) as DUMP_DIR/N.eml
with its envelope in DUMP_DIR/N.json. Runs until SIGTERM, at most one hour.
"""
import asyncio
import json
import os
import signal
import sys
import threading

from aiosmtpd.controller import Controller

REFUSALS = {
    "unknown": "550 5.1.1 <{addr}>: Recipient address rejected: User unknown (test server)",
    "full": "452 4.2.2 <{addr}>: Mailbox full, try again later (test server)",
}


class Handler:
    def __init__(self, dump_dir):
        self.dump_dir = dump_dir
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        for prefix, reply in REFUSALS.items():
            if local.startswith(prefix):
                return reply.format(addr=address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        base = os.path.join(self.dump_dir, "%06d" % n)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json", "w") as f:
            json.dump({"peer": session.peer[0], "helo": session.host_name,
                       "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}, f)
        return "250 2.0.0 Ok: queued as TEST%06d" % n


def main():
    host, port, dump_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(dump_dir, exist_ok=True)
    controller = Controller(Handler(dump_dir), hostname=host, port=port, decode_data=False,
                            server_hostname="refusing.server.test", ready_timeout=10)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait(3600)
    controller.stop()


if __name__ == "__main__":
    main()
