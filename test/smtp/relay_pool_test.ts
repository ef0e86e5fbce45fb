/**
 * Relay connections kept between client sessions (relay_pool.ts, `relay.reuse_*`): which
 * connections are kept, what the next session does with one, and what happens when the server
 * closed it meanwhile. Sessions run over in-memory pipes against the scripted FakeServer.
 */
import assert from "node:assert/strict";
import type { RelayConfig } from "../../src/config/config.ts";
import { RelayClient } from "../../src/smtp/relay_client.ts";
import { RelayPool } from "../../src/smtp/relay_pool.ts";
import type { SessionIo } from "../../src/smtp/session_io.ts";
import {
  envelope,
  type FakeServerOptions,
  fakeUpstream,
  relayConfig,
  transcript,
} from "./harness.ts";

const MSG = "Subject: s\r\n\r\nbody\r\n";
const FULL = envelope() + MSG + ".\r\nQUIT\r\n";

/** A fake upstream whose connections say they left with the gateway's (or client's) address. */
function upstream(opts: FakeServerOptions = {}, source: "gateway" | "client" = "gateway") {
  const up = fakeUpstream(opts);
  const connect = async (s: { ip: string; port: number }, ms: number) =>
    Object.assign(await up.connect(s, ms), { relaySource: source }) as SessionIo;
  return { ...up, connect };
}

function gateway(over: Partial<RelayConfig> = {}): RelayConfig {
  return relayConfig({ source: "gateway", ...over });
}

Deno.test("relay reuse: the next session towards the same server uses the connection the last one left idle (no second connect, greeting or EHLO; no QUIT in between)", async () => {
  const up = upstream();
  const pool = new RelayPool();
  const relay = gateway();
  const a = await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  const b = await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  assert.deepEqual(a.codes, [250, 250, 250, 354, 250, 221]);
  assert.deepEqual(b.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(up.connects.length, 1, "one connection for both sessions");
  const s = up.servers[0];
  assert.equal(s.messages.length, 2);
  assert.deepEqual(
    s.commands.map((c) => c.split(" ")[0]),
    ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA"],
  );
  assert.equal(b.log.named("relay.reuse")[0]?.fields.sessions, 2);
  assert.deepEqual(
    { kept: pool.stats().relayKept, reused: pool.stats().relayReused, idle: pool.size },
    { kept: 2, reused: 1, idle: 1 },
  );
  await pool.close();
  await s.done;
  assert.equal(s.commands.at(-1), "QUIT", "the pool says QUIT when it closes");
});

Deno.test("relay reuse: a session that ends inside a transaction resets it before its connection is kept", async () => {
  const up = upstream();
  const pool = new RelayPool();
  const relay = gateway();
  await transcript(envelope().replace("DATA\r\n", "") + "QUIT\r\n", {
    connect: up.connect,
    relayPool: pool,
    relay,
  });
  const b = await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  assert.deepEqual(b.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(up.connects.length, 1);
  assert.deepEqual(
    up.servers[0].commands.map((c) => c.split(" ")[0]),
    ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA"],
  );
  assert.equal(up.servers[0].messages.length, 1);
  assert.equal(up.servers[0].messages[0].mailFrom, "alice@example.org");
  await pool.close();
});

Deno.test("relay reuse: never with relay.source client, nor with reuse_idle 0, nor for a connection that left with the client's address", async () => {
  for (
    const [relay, source] of [
      [relayConfig(), "gateway"],
      [gateway({ reuseIdle: 0 }), "gateway"],
      [gateway(), "client"],
    ] as const
  ) {
    const up = upstream({}, source);
    const pool = new RelayPool();
    await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
    await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
    assert.equal(up.connects.length, 2, `one connection per session (${JSON.stringify(relay)})`);
    for (const s of up.servers) assert.equal(s.commands.at(-1), "QUIT");
    assert.equal(pool.size, 0);
  }
});

Deno.test("relay reuse: a kept connection the server closed meanwhile is found out at MAIL; the message goes on a new connection and the pool drops that server's other idle connections", async () => {
  const up = upstream();
  const pool = new RelayPool();
  const relay = gateway();
  // Two sessions at once leave two idle connections.
  const [a1, a2] = await Promise.all([
    transcript(FULL, { connect: up.connect, relayPool: pool, relay }),
    transcript(FULL, { connect: up.connect, relayPool: pool, relay }),
  ]);
  assert.deepEqual([a1.codes.at(-2), a2.codes.at(-2)], [250, 250]);
  assert.equal(pool.size, 2);
  // The server restarts: both close.
  await Promise.all(up.servers.map((s) => s.closeNow()));
  const b = await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  assert.deepEqual(b.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(up.connects.length, 3, "a new connection after the dead one");
  assert.equal(up.servers[2].messages.length, 1);
  assert.equal(b.log.named("relay.error")[0]?.fields.during, "mail-on-idle-connection");
  assert.equal(pool.stats().relayStale, 1);
  assert.equal(pool.size, 1, "only the new connection is idle now");
  await pool.close();
});

Deno.test("relay reuse: a kept connection answered 421 at MAIL (the server's idle timeout) is replaced, and the client never sees the 421", async () => {
  let mails = 0;
  const up = upstream({
    mail: () =>
      ++mails === 2 ? "421 4.4.2 server.example Error: timeout exceeded!close" : "250 2.1.0 Ok",
  });
  const pool = new RelayPool();
  const relay = gateway();
  await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  const b = await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  assert.deepEqual(b.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(up.connects.length, 2);
  assert.equal(up.servers[1].messages.length, 1);
  await pool.close();
});

Deno.test("relay reuse: an idle connection past reuse_idle is closed with QUIT and not handed out; one made under other relay settings (a reload) is not handed out either", async () => {
  let now = 0;
  const pool = new RelayPool({ now: () => now });
  const relay = gateway({ reuseIdle: 2 });
  const up = upstream();
  await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  assert.equal(pool.size, 1);
  now = 2_500;
  pool.sweep();
  assert.equal(pool.size, 0);
  await up.servers[0].done;
  assert.equal(up.servers[0].commands.at(-1), "QUIT");

  now = 0;
  await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  assert.equal(pool.size, 1);
  const reloaded = { ...relay, starttls: "off" as const };
  assert.equal(
    pool.take(RelayPool.key({ ip: "198.51.100.25", port: 25 }, "mx.example"), reloaded),
    undefined,
  );
  assert.equal(pool.size, 0);
  await up.servers[1].done;
  assert.equal(up.servers[1].commands.at(-1), "QUIT");
});

Deno.test("relay reuse: a connection is kept for at most reuse_sessions sessions", async () => {
  const up = upstream();
  const pool = new RelayPool();
  const relay = gateway({ reuseSessions: 2 });
  for (let i = 0; i < 3; i++) {
    await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
  }
  assert.equal(up.connects.length, 2, "sessions 1 and 2 share one; the 3rd opens a new one");
  await up.servers[0].done;
  assert.equal(up.servers[0].commands.at(-1), "QUIT");
  await pool.close();
});

Deno.test("relay reuse: a connection that carried AUTH is never reusable", async () => {
  const up = upstream({ other: (verb) => verb === "AUTH" ? "235 2.7.0 ok" : undefined });
  const relay = await RelayClient.open({
    server: { ip: "198.51.100.25", port: 25 },
    hostname: "gw.example",
    connect: up.connect,
    config: gateway(),
  });
  assert.equal(relay.reusable, true);
  assert.equal((await relay.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==")).code, 235);
  assert.equal(relay.reusable, false);
  const pool = new RelayPool();
  assert.equal(pool.give("k", relay, gateway()), false);
  await relay.quit();
});

Deno.test("relay reuse: a 4xx to MAIL on a kept connection (a per-connection limit) is retried once on a new connection; its answer is the client's", async () => {
  for (const second of ["250 2.1.0 Ok", "451 4.3.0 try later"]) {
    let mails = 0;
    const up = upstream({
      mail: () => {
        mails++;
        if (mails === 2) return "452 4.3.1 Too many messages for this session";
        if (mails === 3) return second;
        return "250 2.1.0 Ok";
      },
    });
    const pool = new RelayPool();
    const relay = gateway();
    await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
    const b = await transcript(FULL, { connect: up.connect, relayPool: pool, relay });
    assert.equal(up.connects.length, 2);
    assert.equal(b.codes[1], Number(second.slice(0, 3)), b.output);
    assert.equal(up.servers[0].commands.at(-1), "QUIT", "the kept connection is closed politely");
    assert.equal(b.log.named("relay.error")[0]?.fields.during, "mail-on-kept-connection");
    await pool.close();
  }
});
