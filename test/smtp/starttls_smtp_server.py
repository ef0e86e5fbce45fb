#!/usr/bin/python3
"""A real SMTP server that offers STARTTLS, for SSG's relay tests (aiosmtpd + Python's ssl).

    starttls_smtp_server.py HOST PORT DUMP_DIR CERT KEY

STARTTLS is advertised with CERT/KEY (PEM) and not required. Each accepted message is saved byte
for byte as DUMP_DIR/N.eml with its envelope and whether the session was under TLS in
DUMP_DIR/N.json. Prints "ready" once listening; runs until SIGTERM, at most ten minutes.
Loopback only (the tests pass 127.0.0.1).
"""
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, dump_dir):
        self.dump_dir = dump_dir
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        base = os.path.join(self.dump_dir, "%06d" % n)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json", "w") as f:
            json.dump({"helo": session.host_name, "mail_from": envelope.mail_from,
                       "rcpt_tos": envelope.rcpt_tos, "tls": session.ssl is not None}, f)
        return "250 2.0.0 Ok: queued as TLS%06d" % n


def main():
    host, port, dump_dir, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    os.makedirs(dump_dir, exist_ok=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(Handler(dump_dir), hostname=host, port=port, decode_data=False,
                            server_hostname="tls.server.test", ready_timeout=10,
                            tls_context=context, require_starttls=False)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait(600)
    controller.stop()


if __name__ == "__main__":
    main()
