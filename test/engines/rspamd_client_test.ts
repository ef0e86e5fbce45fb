import assert from "node:assert/strict";
import { join } from "node:path";
import {
  describeResult,
  MAX_REPLY_BYTES,
  parseCheckResult,
  RspamdClient,
  type RspamdEnvelope,
  type RspamdOptions,
} from "../../src/engines/rspamd_client.ts";
import { GTUBE, MARKER, startRspamd } from "./rspamd_fixture.ts";

const CRLF = "\r\n";
const enc = (s: string) => new TextEncoder().encode(s);
const ENVELOPE: RspamdEnvelope = {
  ip: "192.0.2.10",
  helo: "mx.example.org",
  mailFrom: "sender@example.org",
  rcptTo: ["b@example.net", "c@example.net"],
  user: "alice",
  queueId: "ssg-test-qid-1",
};
const message = (body: string, subject = "Minutes of the meeting") =>
  enc(
    [
      "From: Sender <sender@example.org>",
      "To: <b@example.net>",
      `Subject: ${subject}`,
      "Message-ID: <rspamd-test@example.org>",
      "Date: Mon, 30 Nov 2026 07:00:00 +0000",
      "MIME-Version: 1.0",
      "Content-Type: text/plain; charset=UTF-8",
      "",
      body,
      "",
    ].join(CRLF),
  );

Deno.test("RspamdClient with a real rspamd: GTUBE is reject, the marker rule scores 7, clean mail scores nothing, and the envelope reaches rspamd", async () => {
  const rspamd = await startRspamd();
  try {
    const c = new RspamdClient({
      address: { hostname: rspamd.host, port: rspamd.port },
      timeoutMs: 30_000,
      maxBytes: 5e6,
    });
    const gtube = await c.check(message(`Hello,${CRLF}${GTUBE}${CRLF}`), ENVELOPE);
    assert.equal(gtube.status, "scored", describeResult(gtube));
    if (gtube.status !== "scored") return;
    assert.equal(gtube.action, "reject");
    assert.ok(gtube.symbols.some((s) => s.name === "GTUBE"), describeResult(gtube));

    const marked = await c.check(message(`Please read ${MARKER} now.`), ENVELOPE);
    assert.equal(marked.status, "scored", describeResult(marked));
    if (marked.status !== "scored") return;
    assert.equal(marked.score, 7);
    assert.equal(marked.action, "add header");
    assert.deepEqual(marked.symbols, [{ name: "SSG_TEST_MARKER", score: 7 }]);
    assert.match(
      describeResult(marked),
      /^score 7\/15 \(add header\); symbols SSG_TEST_MARKER\(7\)$/,
    );

    const clean = await c.check(message("The minutes are attached."), ENVELOPE);
    assert.equal(clean.status, "scored", describeResult(clean));
    if (clean.status !== "scored") return;
    assert.equal(clean.action, "no action");
    assert.ok(clean.score < 4, describeResult(clean));

    // A 300 KB message crosses many TCP writes; the null sender is sent as <>.
    const big = await c.check(
      message(`${"a line of ordinary text\r\n".repeat(12_000)}${MARKER}`),
      { ...ENVELOPE, mailFrom: "" },
    );
    assert.equal(big.status === "scored" && big.score, 7, describeResult(big));

    // Rspamd logged the envelope it was given: queue id, client IP, user, both recipients.
    const log = await Deno.readTextFile(join(rspamd.dir, "rspamd.log"));
    const line = log.split("\n").find((l) => l.includes("qid: <ssg-test-qid-1>")) ?? "";
    assert.match(line, /ip: 192\.0\.2\.10/, log.slice(-2000));
    assert.match(line, /user: alice/);
    assert.match(line, /from: <sender@example\.org>/);
    assert.match(line, /rcpts: <b@example\.net,c@example\.net>/);
  } finally {
    await rspamd.stop();
  }
});

/** A fake HTTP server on loopback: `handle` gets each connection and the request bytes read. */
function fakeServer(
  handle: (conn: Deno.Conn, request: Uint8Array) => Promise<void>,
): { port: number; requests: string[]; connections: number; close(): Promise<void> } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const state = {
    port: (l.addr as Deno.NetAddr).port,
    requests: [] as string[],
    connections: 0,
    async close() {
      l.close();
      await loop;
      await Promise.all(open);
    },
  };
  const open: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of l) {
      state.connections++;
      open.push((async () => {
        // Read the request head and its Content-Length body (bounded: 1 MB, 5 s).
        const buf = new Uint8Array(1 << 20);
        let used = 0;
        const until = Date.now() + 5000;
        while (used < buf.length && Date.now() < until) {
          const n = await conn.read(buf.subarray(used)).catch(() => null);
          if (n === null) break;
          used += n;
          const text = new TextDecoder("latin1").decode(buf.subarray(0, used));
          const end = text.indexOf("\r\n\r\n");
          const len = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? 0);
          if (end >= 0 && used >= end + 4 + len) break;
        }
        state.requests.push(new TextDecoder("latin1").decode(buf.subarray(0, used)));
        try {
          await handle(conn, buf.subarray(0, used));
        } catch { /* the client hung up */ }
        try {
          conn.close();
        } catch { /* closed */ }
      })());
    }
  })();
  return state;
}

const options = (port: number, more: Partial<RspamdOptions> = {}): RspamdOptions => ({
  address: { hostname: "127.0.0.1", port },
  timeoutMs: 5000,
  maxBytes: 1e6,
  ...more,
});
const OK_JSON =
  '{"is_skipped":false,"score":3.5,"required_score":15.0,"action":"no action","symbols":{"A":{"name":"A","score":1.5},"B":{"name":"B","score":2.0}}}';
const reply = (conn: Deno.Conn, text: string) => conn.write(enc(text));

Deno.test("RspamdClient sends one Rcpt header per recipient, User, Queue-Id and Password, and strips control characters from envelope values", async () => {
  const s = await fakeServer(async (conn) => {
    await reply(
      conn,
      `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${OK_JSON.length}\r\n\r\n${OK_JSON}`,
    );
  });
  try {
    const c = new RspamdClient(options(s.port, { password: "s3cret" }));
    const r = await c.check(message("hello"), {
      ...ENVELOPE,
      helo: "evil\r\nX-Injected: yes",
    });
    assert.deepEqual(r, {
      status: "scored",
      score: 3.5,
      requiredScore: 15,
      action: "no action",
      symbols: [{ name: "B", score: 2 }, { name: "A", score: 1.5 }],
    });
    const head = s.requests[0].split("\r\n\r\n")[0].split("\r\n");
    assert.equal(head[0], "POST /checkv2 HTTP/1.0");
    assert.deepEqual(head.filter((h) => h.startsWith("Rcpt: ")), [
      "Rcpt: b@example.net",
      "Rcpt: c@example.net",
    ]);
    assert.ok(head.includes("Helo: evilX-Injected: yes"), head.join("\n"));
    assert.ok(!head.some((h) => h.startsWith("X-Injected")));
    for (const h of ["IP: 192.0.2.10", "From: sender@example.org", "User: alice"]) {
      assert.ok(head.includes(h), h);
    }
    assert.ok(head.includes("Queue-Id: ssg-test-qid-1"));
    assert.ok(head.includes("Password: s3cret"));
    assert.ok(!head.some((h) => h.startsWith("Hostname:")), "no Hostname when none is known");
    assert.ok(s.requests[0].endsWith(new TextDecoder().decode(message("hello"))));
  } finally {
    await s.close();
  }
});

Deno.test("RspamdClient reads a chunked reply and a reply ended by close", async () => {
  const half = Math.floor(OK_JSON.length / 2);
  for (
    const raw of [
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${half.toString(16)}\r\n${
        OK_JSON.slice(0, half)
      }\r\n${(OK_JSON.length - half).toString(16)}\r\n${OK_JSON.slice(half)}\r\n0\r\n\r\n`,
      `HTTP/1.0 200 OK\r\n\r\n${OK_JSON}`,
    ]
  ) {
    const s = await fakeServer(async (conn) => {
      await reply(conn, raw);
    });
    try {
      const r = await new RspamdClient(options(s.port)).check(message("x"), ENVELOPE);
      assert.equal(r.status === "scored" && r.score, 3.5, JSON.stringify(r));
    } finally {
      await s.close();
    }
  }
});

Deno.test("RspamdClient: every failure is an error result, never a score", async (t) => {
  const cases: [string, (conn: Deno.Conn) => Promise<void>, RegExp][] = [
    [
      "HTTP 500 with rspamd's JSON error",
      async (conn) => {
        const body = '{"error":"cannot parse message"}';
        await reply(conn, `HTTP/1.1 500 Error\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      },
      /HTTP 500: cannot parse message/,
    ],
    [
      "a body that is not JSON",
      async (conn) => {
        await reply(conn, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
      },
      /no JSON/,
    ],
    [
      "JSON without a score",
      async (conn) => {
        const body = '{"action":"reject"}';
        await reply(conn, `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      },
      /no numeric score/,
    ],
    [
      "a reply over the size limit",
      async (conn) => {
        await reply(conn, `HTTP/1.1 200 OK\r\nContent-Length: ${MAX_REPLY_BYTES + 1}\r\n\r\n{`);
      },
      /over the limit/,
    ],
    [
      "an endless reply without a length",
      async (conn) => {
        await reply(conn, "HTTP/1.1 200 OK\r\n\r\n");
        const chunk = enc("x".repeat(64 * 1024));
        for (let i = 0; i < 40; i++) await conn.write(chunk);
      },
      /over the limit/,
    ],
    [
      "a truncated reply",
      async (conn) => {
        await reply(conn, `HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"score":`);
      },
      /closed before the reply body ended/,
    ],
    [
      "not HTTP at all",
      async (conn) => {
        await reply(conn, "220 smtp.example ESMTP\r\n\r\n");
      },
      /not an HTTP reply/,
    ],
    [
      "no answer within the deadline",
      async () => {
        await new Promise((r) => setTimeout(r, 1500));
      },
      /no answer from rspamd within 300 ms/,
    ],
  ];
  for (const [what, handle, reason] of cases) {
    await t.step(what, async () => {
      const s = await fakeServer(handle);
      try {
        const c = new RspamdClient(
          options(s.port, { timeoutMs: what.startsWith("no answer") ? 300 : 5000 }),
        );
        const r = await c.check(message("x"), ENVELOPE);
        assert.equal(r.status, "error", JSON.stringify(r));
        assert.match(r.status === "error" ? r.reason : "", reason);
      } finally {
        await s.close();
      }
    });
  }
});

Deno.test("RspamdClient: a message over max_bytes is not sent; nothing listening is an error", async () => {
  const s = await fakeServer(async () => {});
  try {
    const c = new RspamdClient(options(s.port, { maxBytes: 1024 }));
    const r = await c.check(message("y".repeat(1025)), ENVELOPE);
    assert.equal(r.status, "error");
    assert.match(r.status === "error" ? r.reason : "", /over the limit of 1024/);
    assert.equal(s.connections, 0, "nothing was sent");
  } finally {
    await s.close();
  }
  const port = s.port; // closed now: connection refused
  const r = await new RspamdClient(options(port)).check(message("x"), ENVELOPE);
  assert.equal(r.status, "error");
  assert.match(
    r.status === "error" ? r.reason : "",
    /rspamd at http:\/\/127\.0\.0\.1:\d+\/checkv2/,
  );
});

Deno.test("RspamdClient sends a message of exactly max_bytes", async () => {
  const s = await fakeServer(async (conn) => {
    await reply(conn, `HTTP/1.1 200 OK\r\nContent-Length: ${OK_JSON.length}\r\n\r\n${OK_JSON}`);
  });
  try {
    const m = message("z".repeat(500));
    for (
      const [limit, sent] of [[m.length - 1, false], [m.length, true], [
        m.length + 1,
        true,
      ]] as const
    ) {
      const r = await new RspamdClient(options(s.port, { maxBytes: limit })).check(m, ENVELOPE);
      assert.equal(r.status === "scored", sent, `limit ${limit}: ${JSON.stringify(r)}`);
    }
    assert.equal(s.connections, 2);
  } finally {
    await s.close();
  }
});

Deno.test("parseCheckResult keeps plain symbols, sorts them by score and refuses odd actions", () => {
  const r = parseCheckResult({
    score: 9,
    action: "add header",
    symbols: { LOW: { score: 0.5 }, HIGH: { score: 8.5 }, "BAD NAME": { score: 1 } },
  });
  assert.deepEqual(r, {
    status: "scored",
    score: 9,
    action: "add header",
    symbols: [{ name: "HIGH", score: 8.5 }, { name: "LOW", score: 0.5 }],
  });
  assert.equal(parseCheckResult({ score: 1, action: "<script>" }).status, "error");
  assert.equal(parseCheckResult({ score: Infinity, action: "reject" }).status, "error");
  assert.equal(parseCheckResult([1, 2]).status, "error");
  assert.equal(parseCheckResult({ score: 1, action: "reject", symbols: [] }).status, "error");
});
