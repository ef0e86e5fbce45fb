import assert from "node:assert/strict";
import { FlowMirror } from "../../ffi/flow_mirror.ts";
import type { FlowEventMessage } from "../../ffi/queue_protocol.ts";
import { MemoryLog } from "../../src/log/log.ts";

function ev(
  type: "new" | "end",
  client: string,
  port: number,
  server = "198.51.100.25",
  extra: Partial<FlowEventMessage> = {},
): FlowEventMessage {
  return {
    type,
    family: client.includes(":") ? 6 : 4,
    clientIp: client,
    clientPort: port,
    serverIp: server,
    serverPort: 25,
    ...extra,
  };
}

Deno.test("FlowMirror.lookup() finds a flow by any spelling of the client address", () => {
  const m = new FlowMirror(16, new MemoryLog());
  m.apply(ev("new", "192.0.2.10", 40000));
  m.apply(ev("new", "2001:db8:1::10", 40001, "2001:db8:25::25"));
  const cases: [string, number, string | undefined][] = [
    ["192.0.2.10", 40000, "198.51.100.25"],
    ["::ffff:192.0.2.10", 40000, "198.51.100.25"], // a dual-stack listener's view
    ["2001:DB8:1:0::10", 40001, "2001:db8:25::25"],
    ["192.0.2.10", 40001, undefined],
    ["192.0.2.11", 40000, undefined],
  ];
  for (const [ip, port, want] of cases) assert.equal(m.lookup(ip, port)?.ip, want, `${ip}:${port}`);
});

Deno.test("FlowMirror logs flow.new and flow.end with the Worker's flow id and the reason", () => {
  const log = new MemoryLog();
  const m = new FlowMirror(16, log);
  m.apply(ev("new", "192.0.2.10", 40000, "198.51.100.25", { id: 7 }), 1000);
  m.apply(ev("end", "192.0.2.10", 40000, "198.51.100.25", { id: 7, reason: "fin" }), 1250);
  assert.deepEqual(log.events.map((e) => [e.name, e.fields.flow]), [["flow.new", 7], [
    "flow.end",
    7,
  ]]);
  assert.equal(log.named("flow.end")[0].fields.reason, "fin");
  assert.equal(log.named("flow.end")[0].fields.ms, 250);
  assert.equal(m.size, 0);
});

Deno.test("FlowMirror keeps a newer flow on the same client port when the old one's end arrives", () => {
  const m = new FlowMirror(16, new MemoryLog());
  m.apply(ev("new", "192.0.2.10", 40000, "198.51.100.25"));
  m.apply(ev("new", "192.0.2.10", 40000, "198.51.100.26")); // port reused for another server
  m.apply(ev("end", "192.0.2.10", 40000, "198.51.100.25", { reason: "replaced" }));
  assert.equal(m.lookup("192.0.2.10", 40000)?.ip, "198.51.100.26");
});

Deno.test("FlowMirror holds at most max flows: max-1, max, max+1", () => {
  const max = 3;
  for (const n of [max - 1, max, max + 1]) {
    const m = new FlowMirror(max, new MemoryLog());
    for (let i = 0; i < n; i++) m.apply(ev("new", "192.0.2.10", 40000 + i));
    assert.equal(m.size, Math.min(n, max), `${n} flows`);
    assert.equal(m.lookup("192.0.2.10", 40000) !== undefined, n <= max, `${n} flows: oldest kept?`);
    assert.ok(m.lookup("192.0.2.10", 40000 + n - 1), "newest kept");
  }
});

Deno.test("FlowMirror.waitFor() resolves when the flow arrives, or undefined at the timeout", async () => {
  const m = new FlowMirror(16, new MemoryLog());
  const early = m.waitFor("192.0.2.10", 40000, 2000);
  const twice = m.waitFor("::ffff:192.0.2.10", 40000, 2000);
  assert.equal(m.waiting, 2);
  m.apply(ev("new", "192.0.2.10", 40000));
  assert.deepEqual(await early, { ip: "198.51.100.25", port: 25 });
  assert.deepEqual(await twice, { ip: "198.51.100.25", port: 25 });
  assert.equal(m.waiting, 0);
  const t0 = performance.now();
  assert.equal(await m.waitFor("192.0.2.10", 40001, 50), undefined);
  assert.ok(performance.now() - t0 >= 45);
  assert.equal(m.waiting, 0);
  assert.deepEqual(await m.waitFor("192.0.2.10", 40000, 0), { ip: "198.51.100.25", port: 25 });
  const released = m.waitFor("192.0.2.10", 40002, 5000);
  m.releaseWaiters();
  assert.equal(await released, undefined);
});
