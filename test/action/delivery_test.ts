import assert from "node:assert/strict";
import { deliver, deliveryServer } from "../../src/action/delivery.ts";
import { isSendableAddress, sendMessage } from "../../src/action/send_message.ts";
import { FakeSmtpServer } from "./fake_smtp_server.ts";
import { bytes, envelope, RELAY } from "./helpers.ts";

const MESSAGE = bytes("Subject: hi\r\n\r\n.dot line\r\n..two\r\nend\r\n");

Deno.test("deliver() bcc sends a copy to the rule's recipients with the original sender", async () => {
  const server = FakeSmtpServer.start();
  try {
    const connects: { ip: string; port: number }[] = [];
    const r = await deliver(
      { kind: "bcc", to: ["archive@corp.example"], server: { host: "198.51.100.27", port: 2525 } },
      MESSAGE,
      envelope({ mailFrom: "orig@example.org" }),
      {
        hostname: "gw.example",
        connect: (s) => {
          connects.push(s);
          return Deno.connect({ hostname: "127.0.0.1", port: server.port });
        },
        relay: RELAY,
      },
    );
    assert.equal(r.code, 250);
    assert.equal(r.stage, "done");
    assert.deepEqual(connects, [{ ip: "198.51.100.27", port: 2525 }]);
    assert.equal(server.transactions[0].mailFrom, "orig@example.org");
    assert.deepEqual(server.transactions[0].rcptTo, ["archive@corp.example"]);
    assert.deepEqual(server.transactions[0].data, MESSAGE);
    assert.ok(!server.transactions[0].mailLine.includes("BODY="), "7-bit message: no BODY=");
  } finally {
    await server.close();
  }
});

Deno.test("deliveryServer() defaults to the transaction's original server", () => {
  assert.deepEqual(
    deliveryServer({ kind: "redirect", to: ["q@corp.example"] }, envelope()),
    { host: "198.51.100.25", port: 25 },
  );
});

Deno.test("sendMessage() is all or nothing: one refused recipient resets the transaction", async (t) => {
  const cases = [
    {
      name: "4xx recipient",
      opts: { rcpt: (a: string) => (a.startsWith("b") ? "452 4.2.2 full" : "250 OK") },
      code: 452,
      stage: "rcpt",
    },
    {
      name: "5xx recipient",
      opts: { rcpt: (a: string) => (a.startsWith("b") ? "550 5.1.1 unknown" : "250 OK") },
      code: 550,
      stage: "rcpt",
    },
    { name: "MAIL refused", opts: { mail: "553 5.7.1 sender refused" }, code: 553, stage: "mail" },
    {
      name: "greeting refused",
      opts: { greeting: "554 5.3.2 go away" },
      code: 554,
      stage: "connect",
    },
    { name: "data refused", opts: { data: "451 4.3.0 try later" }, code: 451, stage: "data" },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const server = FakeSmtpServer.start(c.opts);
      try {
        const r = await sendMessage(
          {
            server: { host: "198.51.100.25", port: 25 },
            hostname: "gw.example",
            connect: () => Deno.connect({ hostname: "127.0.0.1", port: server.port }),
            relay: RELAY,
          },
          { mailFrom: "s@example.org", rcptTo: ["a@corp.example", "b@corp.example"] },
          MESSAGE,
        );
        assert.equal(r.code, c.code);
        assert.equal(r.stage, c.stage);
        if (c.stage !== "data") assert.equal(server.transactions.length, 0);
        if (c.stage === "rcpt") {
          assert.ok(server.commands.includes("RSET"));
          assert.ok(!server.commands.includes("DATA"));
        }
      } finally {
        await server.close();
      }
    });
  }
});

Deno.test("sendMessage() times out on a silent server with a local 451", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for (;;) held.push(await l.accept()); // accept, never greet
    } catch { /* closed */ }
  })();
  try {
    const t0 = performance.now();
    const r = await sendMessage(
      {
        server: { host: "198.51.100.25", port: 25 },
        hostname: "gw.example",
        connect: () => Deno.connect({ hostname: "127.0.0.1", port: (l.addr as Deno.NetAddr).port }),
        relay: { connectTimeout: 1, replyTimeout: 0.3, dataTimeout: 1 },
      },
      { mailFrom: "", rcptTo: ["a@corp.example"] },
      MESSAGE,
    );
    assert.equal(r.code, 451);
    assert.equal(r.enhanced, "4.4.2");
    assert.ok(performance.now() - t0 < 10_000);
  } finally {
    l.close();
    for (const c of held) c.close();
    await accepting;
  }
});

Deno.test("sendMessage() refuses envelope addresses that could break the command line", async () => {
  let connected = 0;
  for (const rcpt of ["a@b>\r\nRCPT TO:<c@d", "a b@c", "a\0@b", "<a@b>", ""]) {
    const r = await sendMessage(
      {
        server: { host: "198.51.100.25", port: 25 },
        hostname: "gw.example",
        connect: () => {
          connected++;
          return Promise.reject(new Error("must not connect"));
        },
        relay: RELAY,
      },
      { mailFrom: "s@example.org", rcptTo: [rcpt] },
      MESSAGE,
    );
    assert.equal(r.code, 501, JSON.stringify(rcpt));
    assert.equal(r.stage, "envelope");
  }
  assert.equal(connected, 0);
  assert.ok(isSendableAddress(""));
  assert.ok(isSendableAddress("user+tag@corp.example"));
  assert.ok(!isSendableAddress("x".repeat(257)));
});
