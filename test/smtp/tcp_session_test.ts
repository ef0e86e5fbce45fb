/**
 * The session over real loopback TCP (Deno.Conn as SessionIo), towards a fake server that is
 * also reached over loopback TCP with Deno.connect, as main wires it. Loopback only.
 */
import assert from "node:assert/strict";
import { MemoryLog } from "../../src/log/log.ts";
import { serveSession, type SessionSummary } from "../../src/smtp/session.ts";
import {
  codes,
  FakeServer,
  listenLoopback as listen,
  Peer,
  recordingJudge,
  relayConfig,
  smtpConfig,
} from "./harness.ts";

/** Wraps a Deno.Conn for the test-side Peer (which wants endOutput). */
function peerOf(conn: Deno.Conn): Peer {
  return new Peer({
    readable: conn.readable,
    writable: conn.writable,
    close: () => {
      try {
        conn.close();
      } catch { /* closed */ }
    },
    endOutput: () => conn.closeWrite().catch(() => {}),
  });
}

Deno.test("A session over loopback TCP relays a message to a server over loopback TCP", async () => {
  const servers: FakeServer[] = [];
  const upstream = listen((conn) => {
    const s = new FakeServer(conn);
    servers.push(s);
    return s.done;
  });
  const summaries: SessionSummary[] = [];
  const log = new MemoryLog();
  const gateway = listen(async (conn) => {
    const remote = conn.remoteAddr as Deno.NetAddr;
    summaries.push(
      await serveSession(conn, {
        id: "T1",
        client: { ip: remote.hostname, port: remote.port },
        server: { ip: "127.0.0.1", port: upstream.port },
        hostname: "mx.example",
        smtp: smtpConfig(),
        relay: relayConfig(),
        judge: recordingJudge(),
        log,
        connectUpstream: (s) => Deno.connect({ hostname: s.ip, port: s.port }),
        shutdown: new AbortController().signal,
      }),
    );
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: gateway.port });
  const client = peerOf(conn);
  assert.match(await client.reply(), /^220 /);
  const body = "Subject: tcp\r\n\r\n" + "line of text\r\n".repeat(20_000);
  await client.write(
    "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n" + body +
      ".\r\nQUIT\r\n",
  );
  const out = await client.rest();
  assert.deepEqual(codes(out), [250, 250, 250, 354, 250, 221]);
  await gateway.stop();
  await upstream.stop();
  assert.equal(summaries[0].end, "quit");
  assert.equal(servers.length, 1);
  const m = servers[0].messages[0];
  assert.ok(m.content.startsWith("Received: from c ([127.0.0.1])\r\n"));
  assert.ok(m.content.endsWith(body));
  assert.equal(m.content.length - m.content.indexOf("Subject: tcp"), body.length);
});

Deno.test("Measurement: one message through the session vs straight to the server (loopback)", async () => {
  const upstream = listen((conn) => new FakeServer(conn).done);
  const gateway = listen((conn) => {
    const remote = conn.remoteAddr as Deno.NetAddr;
    return serveSession(conn, {
      id: "M",
      client: { ip: remote.hostname, port: remote.port },
      server: { ip: "127.0.0.1", port: upstream.port },
      hostname: "mx.example",
      smtp: smtpConfig(),
      relay: relayConfig(),
      judge: recordingJudge(),
      log: new MemoryLog(),
      connectUpstream: (s) => Deno.connect({ hostname: s.ip, port: s.port }),
      shutdown: new AbortController().signal,
    });
  });
  const oneMessage = async (port: number) => {
    const t0 = performance.now();
    const client = peerOf(await Deno.connect({ hostname: "127.0.0.1", port }));
    await client.reply();
    await client.write(
      "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: m\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    const out = await client.rest();
    assert.deepEqual(codes(out), [250, 250, 250, 354, 250, 221]);
    return performance.now() - t0;
  };
  const runs = 20;
  const time = async (port: number) => {
    const all: number[] = [];
    for (let i = 0; i < runs; i++) all.push(await oneMessage(port));
    all.sort((a, b) => a - b);
    return all[Math.floor(runs / 2)];
  };
  const direct = await time(upstream.port);
  const via = await time(gateway.port);
  console.log(
    `median of ${runs}: direct ${direct.toFixed(2)} ms, through the session ${via.toFixed(2)} ms`,
  );
  await gateway.stop();
  await upstream.stop();
});
