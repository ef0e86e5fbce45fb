/**
 * RelayClient announcing the real client (XCLIENT / XFORWARD) when the relay connection carries
 * the gateway's address, driven as transcripts against a scripted server over an in-memory pipe.
 */
import assert from "node:assert/strict";
import {
  type ClientIdentity,
  identityAttributes,
  RelayClient,
  RelayError,
  xtext,
} from "../../src/smtp/relay_client.ts";
import type { SessionIo } from "../../src/smtp/session_io.ts";
import { bytes, duplex, relayConfig, text } from "./harness.ts";

const CLIENT: ClientIdentity = {
  ip: "192.0.2.10",
  port: 40000,
  helo: "client.example.org",
  proto: "ESMTP",
};

/** A server answering by verb; records every line. EHLO replies change after XCLIENT's 220. */
function scripted(
  ehlo: string[],
  answers: Record<string, string>,
): { io: SessionIo; lines: string[]; done: Promise<void> } {
  const d = duplex();
  const lines: string[] = [];
  const w = d.b.writable.getWriter();
  const send = (s: string) => w.write(bytes(s + "\r\n"));
  const done = (async () => {
    await send("220 mx.server.test ESMTP");
    const reader = d.b.readable.getReader();
    let buf = "";
    for (let turns = 0; turns < 50; turns++) {
      const r = await reader.read();
      if (r.done) return;
      buf += text(r.value);
      let nl;
      while ((nl = buf.indexOf("\r\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        lines.push(line);
        const verb = line.split(" ")[0].toUpperCase();
        if (verb === "EHLO") {
          await send(
            ["mx.server.test", ...ehlo].map((l, i, a) => `250${i < a.length - 1 ? "-" : " "}${l}`)
              .join("\r\n"),
          );
        } else if (verb === "QUIT") {
          await send("221 bye");
          d.b.close();
          return;
        } else await send(answers[verb] ?? "500 5.5.2 unknown");
      }
    }
  })().catch(() => {});
  return { io: d.a, lines, done };
}

function open(io: SessionIo, source: "client" | "gateway" | undefined, client = CLIENT) {
  const tagged = source === undefined ? io : Object.assign(io, { relaySource: source });
  return RelayClient.open({
    server: { ip: "198.51.100.25", port: 25 },
    hostname: "gw.example",
    connect: () => Promise.resolve(tagged),
    config: relayConfig(),
    client,
  });
}

Deno.test("RelayClient on a gateway-address connection sends XCLIENT with the attributes the server lists, then EHLO with the client's HELO name", async () => {
  const s = scripted(["XCLIENT NAME ADDR PROTO HELO PORT", "8BITMIME"], {
    XCLIENT: "220 mx.server.test ESMTP",
    MAIL: "250 2.1.0 Ok",
  });
  const c = await open(s.io, "gateway");
  assert.equal(c.announced, "xclient");
  assert.equal(c.source, "gateway");
  await c.mail("a@example.org");
  await c.quit();
  await s.done;
  assert.deepEqual(s.lines, [
    "EHLO gw.example",
    "XCLIENT ADDR=192.0.2.10 PORT=40000 HELO=client.example.org PROTO=ESMTP NAME=[UNAVAILABLE]",
    "EHLO client.example.org",
    "MAIL FROM:<a@example.org>",
    "QUIT",
  ]);
});

Deno.test("RelayClient falls back to XFORWARD, sent before every MAIL, when XCLIENT is refused or absent", async () => {
  for (
    const [ehlo, xclientReply] of [
      [["XFORWARD NAME ADDR PROTO HELO SOURCE"], undefined],
      [["XCLIENT ADDR", "XFORWARD ADDR PORT"], "550 5.7.0 not authorized"],
    ] as const
  ) {
    const s = scripted([...ehlo], {
      ...(xclientReply ? { XCLIENT: xclientReply } : {}),
      XFORWARD: "250 2.0.0 Ok",
      MAIL: "250 2.1.0 Ok",
      RSET: "250 2.0.0 Ok",
    });
    const c = await open(s.io, "gateway", { ip: "2001:db8:1::10", port: 40000, helo: "h" });
    assert.equal(c.announced, "xforward");
    await c.mail("a@example.org");
    await c.rset();
    await c.mail("b@example.org");
    await c.quit();
    await s.done;
    const xf = s.lines.filter((l) => l.startsWith("XFORWARD"));
    assert.equal(xf.length, 2, "once per transaction");
    const expected = ehlo.length === 1
      ? "XFORWARD ADDR=IPV6:2001:db8:1::10 HELO=h NAME=[UNAVAILABLE]"
      : "XFORWARD ADDR=IPV6:2001:db8:1::10 PORT=40000";
    assert.equal(xf[0], expected);
    assert.equal(s.lines[s.lines.indexOf(xf[0]) + 1], "MAIL FROM:<a@example.org>");
  }
});

Deno.test("RelayClient announces nothing on a client-address connection, or when the server offers neither", async () => {
  const a = scripted(["XCLIENT ADDR", "XFORWARD ADDR"], { XCLIENT: "220 x" });
  const c1 = await open(a.io, "client");
  assert.equal(c1.announced, "source");
  await c1.quit();
  await a.done;
  assert.deepEqual(a.lines, ["EHLO gw.example", "QUIT"]);

  const b = scripted(["8BITMIME"], {});
  const c2 = await open(b.io, "gateway");
  assert.equal(c2.announced, "none");
  assert.match(c2.announceNote ?? "", /neither XCLIENT nor XFORWARD/);
  await c2.quit();
  await b.done;

  const u = scripted(["XCLIENT ADDR"], { XCLIENT: "220 x" });
  const c3 = await open(u.io, undefined);
  assert.equal(c3.announced, "none", "an io that does not say its source is not announced");
  await c3.quit();
  await u.done;
  assert.deepEqual(u.lines, ["EHLO gw.example", "QUIT"]);
});

Deno.test("RelayClient: EHLO refused after XCLIENT fails the open with RelayError refused", async () => {
  const d = duplex();
  const w = d.b.writable.getWriter();
  const r = d.b.readable.getReader();
  const server = (async () => {
    const send = (s: string) => w.write(bytes(s + "\r\n"));
    await send("220 x");
    await r.read(); // EHLO
    await send("250-x\r\n250 XCLIENT ADDR");
    await r.read(); // XCLIENT
    await send("220 x");
    await r.read(); // EHLO
    await send("554 5.7.1 go away");
  })().catch(() => {});
  await assert.rejects(
    open(d.a, "gateway"),
    (e) => e instanceof RelayError && e.kind === "refused",
  );
  await server;
});

Deno.test("identityAttributes() and xtext(): only offered names, IPV6: prefix, xtext-encoded HELO", () => {
  const all = new Set(["ADDR", "PORT", "HELO", "PROTO", "NAME", "REVERSE_NAME"]);
  assert.deepEqual(
    identityAttributes({ ip: "2001:db8::1", port: 1, helo: "a+b=c d", proto: "SMTP" }, all, true),
    [
      "ADDR=IPV6:2001:db8::1",
      "PORT=1",
      "HELO=a+2Bb+3Dc+20d",
      "PROTO=SMTP",
      "NAME=[UNAVAILABLE]",
      "REVERSE_NAME=[UNAVAILABLE]",
    ],
  );
  assert.deepEqual(identityAttributes({ ip: "192.0.2.1", port: 2 }, new Set(["ADDR"]), false), [
    "ADDR=192.0.2.1",
  ]);
  assert.equal(
    identityAttributes(CLIENT, all, false).includes("REVERSE_NAME=[UNAVAILABLE]"),
    false,
  );
  assert.equal(xtext("é"), "+C3+A9");
  assert.equal(xtext("plain.example"), "plain.example");
});

const OTHER: ClientIdentity = {
  ip: "203.0.113.7",
  port: 41000,
  helo: "other.example",
  proto: "ESMTP",
};

Deno.test("RelayClient: a connection that announced its client with XCLIENT is never reusable (the server's session has become that client's)", async () => {
  const s = scripted(["XCLIENT NAME ADDR PROTO HELO PORT"], {
    XCLIENT: "220 mx.server.test ESMTP",
    MAIL: "250 2.1.0 Ok",
  });
  const c = await open(s.io, "gateway");
  await c.mail("a@example.org");
  assert.equal(c.announced, "xclient");
  assert.equal(c.reusable, false);
  await c.quit();
  await s.done;
});

Deno.test("RelayClient.reannounce: a kept XFORWARD connection sends the next client's attributes before its MAIL", async () => {
  const s = scripted(["XFORWARD ADDR PORT"], { XFORWARD: "250 2.0.0 Ok", MAIL: "250 2.1.0 Ok" });
  const c = await open(s.io, "gateway");
  await c.mail("a@example.org");
  assert.equal(c.reusable, true);
  c.reannounce(OTHER);
  assert.equal(c.sessions, 2);
  await c.mail("b@example.org");
  await c.quit();
  await s.done;
  assert.deepEqual(s.lines.filter((l) => l.startsWith("XFORWARD")), [
    "XFORWARD ADDR=192.0.2.10 PORT=40000",
    "XFORWARD ADDR=203.0.113.7 PORT=41000",
  ]);
});

Deno.test("RelayClient: with PIPELINING, XFORWARD and MAIL go in one write and both replies are read in order; a refused XFORWARD stops further ones, the MAIL still counts", async () => {
  for (const xfReply of ["250 2.0.0 Ok", "550 5.7.0 not authorized"]) {
    const s = scripted(["PIPELINING", "XFORWARD ADDR PORT"], {
      XFORWARD: xfReply,
      MAIL: "250 2.1.0 Ok",
      RSET: "250 2.0.0 Ok",
    });
    const writes: string[] = [];
    const inner = s.io.writable.getWriter();
    const io: SessionIo = {
      ...s.io,
      writable: new WritableStream<Uint8Array>({
        write: (chunk) => {
          writes.push(text(chunk));
          return inner.write(chunk);
        },
        close: () => inner.close(),
      }),
    };
    const c = await open(io, "gateway");
    const r1 = await c.mail("a@example.org");
    assert.equal(r1.code, 250);
    assert.ok(
      writes.includes("XFORWARD ADDR=192.0.2.10 PORT=40000\r\nMAIL FROM:<a@example.org>\r\n"),
      JSON.stringify(writes),
    );
    await c.rset();
    assert.equal((await c.mail("b@example.org")).code, 250);
    assert.equal(c.reusable, true, "replies in step after the pipelined pair");
    await c.quit();
    await s.done;
    const xf = s.lines.filter((l) => l.startsWith("XFORWARD")).length;
    assert.equal(xf, xfReply.startsWith("250") ? 2 : 1);
    assert.equal(c.announced, xfReply.startsWith("250") ? "xforward" : "none");
  }
});
