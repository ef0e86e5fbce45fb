import assert from "node:assert/strict";
import { RelayClient, RelayError } from "../../src/smtp/relay_client.ts";
import {
  bytes,
  type FakeServerOptions,
  fakeUpstream,
  hangingUpstream,
  refusedUpstream,
  relayConfig,
} from "./harness.ts";

const SERVER = { ip: "198.51.100.25", port: 25 };

function open(opts: FakeServerOptions = {}, timeouts = {}) {
  const up = fakeUpstream(opts);
  const client = RelayClient.open({
    server: SERVER,
    hostname: "gw.example",
    connect: up.connect,
    config: relayConfig(timeouts),
  });
  return { up, client };
}

async function rejects(p: Promise<unknown>, kind: string): Promise<RelayError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RelayError, String(e));
    assert.equal(e.kind, kind, e.message);
    assert.equal(e.name, "RelayError");
    return e;
  }
  throw new Error("expected a RelayError");
}

Deno.test("RelayClient.open reads the greeting, says EHLO and learns the extensions", async () => {
  const { up, client } = open();
  const c = await client;
  assert.deepEqual([...c.extensions.keys()], [
    "PIPELINING",
    "SIZE",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
  ]);
  assert.equal(c.extensions.get("SIZE"), "50000000");
  assert.equal(c.greeting?.code, 220);
  assert.deepEqual(up.connects, [{ ...SERVER, timeoutMs: 2000 }]);
  await c.quit();
  await up.servers[0].done;
  assert.equal(up.servers[0].raw, "EHLO gw.example\r\nQUIT\r\n");
  assert.equal(c.usable, false);
});

Deno.test("RelayClient falls back to HELO and then passes neither SIZE nor BODY", async () => {
  const { up, client } = open({ ehlo: "500 5.5.1 what?" });
  const c = await client;
  assert.equal(c.extensions.size, 0);
  const r = await c.mail("a@example.org", { size: 10, body: "8BITMIME" });
  assert.equal(r.code, 250);
  await c.quit();
  await up.servers[0].done;
  assert.equal(
    up.servers[0].raw,
    "EHLO gw.example\r\nHELO gw.example\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n",
  );
});

Deno.test("RelayClient passes SIZE only with SIZE advertised and BODY only with 8BITMIME", async () => {
  const cases: [string, string][] = [
    ["250-s\r\n250 SIZE 100\r\n", "MAIL FROM:<a@x.example> SIZE=10"],
    ["250-s\r\n250 8BITMIME\r\n", "MAIL FROM:<a@x.example> BODY=8BITMIME"],
    ["250 s\r\n", "MAIL FROM:<a@x.example>"],
  ];
  for (const [ehlo, want] of cases) {
    const { up, client } = open({ ehlo });
    const c = await client;
    await c.mail("a@x.example", { size: 10, body: "8BITMIME" });
    c.close();
    await up.servers[0].done;
    assert.equal(up.servers[0].commands[1], want);
  }
});

Deno.test("RelayClient refuses a server whose greeting is not 220", async () => {
  for (const greeting of ["554 5.7.1 go away", "421 4.3.2 busy"]) {
    const { client } = open({ greeting });
    const e = await rejects(client, "refused");
    assert.equal(e.reply?.code, Number(greeting.slice(0, 3)));
  }
});

Deno.test("RelayClient reports connect failures, connect timeouts and silent servers", async () => {
  await rejects(
    RelayClient.open({
      server: SERVER,
      hostname: "g",
      connect: refusedUpstream(),
      config: relayConfig(),
    }),
    "connect",
  );
  const t0 = performance.now();
  await rejects(
    RelayClient.open({
      server: SERVER,
      hostname: "g",
      connect: hangingUpstream(),
      config: relayConfig({ connectTimeout: 0.1 }),
    }),
    "connect",
  );
  assert.ok(performance.now() - t0 < 10_000); // without the timeout it would never end
  await rejects(open({ greeting: null }, { replyTimeout: 0.1 }).client, "timeout");
});

Deno.test("RelayClient parses multi-line replies and splits off the enhanced code", async () => {
  const { client, up } = open({
    rcpt: () => "550-5.1.1 first line\r\n550-5.1.1 second\r\n550 5.1.1 third",
  });
  const c = await client;
  await c.mail("a@example.org");
  const r = await c.rcpt("nobody@example.net");
  assert.deepEqual(r, { code: 550, enhanced: "5.1.1", lines: ["first line", "second", "third"] });
  c.close();
  await up.servers[0].done;
});

Deno.test("RelayClient treats malformed replies as protocol errors", async () => {
  for (const bad of ["hello", "250-a\r\n251 b", "99 x", "600 x"]) {
    const { client } = open({ mail: () => bad });
    const c = await client;
    await rejects(c.mail("a@example.org"), "protocol");
    assert.equal(c.usable, false);
  }
});

Deno.test("RelayClient.data dot-stuffs the content and returns the final reply", async () => {
  const { client, up } = open();
  const c = await client;
  await c.mail("a@example.org");
  await c.rcpt("b@example.net");
  const r = await c.data(bytes(".leading dot\r\n.\r\nend\r\n"));
  assert.equal(r.code, 250);
  c.close();
  await up.servers[0].done;
  assert.ok(up.servers[0].raw.endsWith("DATA\r\n..leading dot\r\n..\r\nend\r\n.\r\n"));
  assert.equal(up.servers[0].messages[0].content, ".leading dot\r\n.\r\nend\r\n");
});

Deno.test("RelayClient.data sends nothing when DATA is not answered 354", async () => {
  const { client, up } = open({ data: () => "554 5.5.1 no valid recipients" });
  const c = await client;
  const r = await c.data(bytes("x\r\n"));
  assert.equal(r.code, 554);
  c.close();
  await up.servers[0].done;
  assert.ok(up.servers[0].raw.endsWith("DATA\r\n"));
});

Deno.test("RelayClient times out waiting for the reply to the final dot", async () => {
  const { client } = open({ dataEnd: () => null }, { dataTimeout: 0.1 });
  const c = await client;
  await rejects(c.data(bytes("x\r\n")), "timeout");
  assert.equal(c.usable, false);
});

Deno.test("RelayClient reports a server that closes the connection", async () => {
  const { client } = open({ rcpt: () => "close" });
  const c = await client;
  await rejects(c.rcpt("b@example.net"), "closed");
  await rejects(c.rset(), "closed");
});

Deno.test("RelayClient.close is safe to call twice", async () => {
  const { client, up } = open();
  const c = await client;
  c.close();
  c.close();
  await c.quit();
  await up.servers[0].done;
});
