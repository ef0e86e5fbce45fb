import assert from "node:assert/strict";
import {
  type Flow,
  type FlowEndReason,
  FlowTable,
  FlowTableError,
  type FlowTableOptions,
} from "../../src/flow/flow_table.ts";
import { formatIp } from "../../src/packet/ip_address.ts";
import { ip, prng, randomBytes } from "../packet/packet_helpers.ts";

const SERVER4 = ip("198.51.100.25");
const SERVER6 = ip("2001:db8:25::25");

function client4(i: number): Uint8Array {
  return Uint8Array.of(192, 0, 2, i & 0xff);
}

function table(
  max = 100,
  idleSeconds = 600,
  extra: Partial<FlowTableOptions> = {},
) {
  const t = new FlowTable({ max, idleSeconds, seed: 42, ...extra });
  const ended: [string, FlowEndReason][] = [];
  t.onEnd = (f: Flow, reason) => ended.push([`${f.clientIp}:${f.clientPort}`, reason]);
  return { t, ended };
}

/** Adds an established flow (SYN then the client's ACK at the same time). */
function add4(t: FlowTable, i: number, port: number, now: number): Flow | undefined {
  const f = t.add(4, client4(i), 0, port, SERVER4, 0, 25, 1000, now);
  if (f) t.noteEstablished(f, now);
  return f;
}

/** Adds an embryonic flow (SYN only). */
function syn4(t: FlowTable, i: number, port: number, now: number): Flow | undefined {
  return t.add(4, client4(i), 0, port, SERVER4, 0, 25, 1000, now);
}

Deno.test("FlowTable.add() then find() returns the flow for IPv4 and IPv6 clients", () => {
  const { t } = table();
  const f4 = add4(t, 10, 40000, 0)!;
  const c6 = ip("2001:db8:1::10");
  const f6 = t.add(6, c6, 0, 40000, SERVER6, 0, 25, 7, 0)!;
  assert.equal(t.size, 2);
  assert.equal(t.find(4, client4(10), 0, 40000), f4);
  assert.equal(t.find(6, c6, 0, 40000), f6);
  assert.equal(f4.clientIp, "192.0.2.10");
  assert.equal(f4.serverIp, "198.51.100.25");
  assert.equal(f6.clientIp, "2001:db8:1::10");
  assert.equal(f6.serverIp, "2001:db8:25::25");
  assert.equal(f6.serverPort, 25);
  assert.equal(f6.synSeq, 7);
  assert.notEqual(f4.id, f6.id);
  // Near misses: other port, other address, other family with the same leading bytes.
  assert.equal(t.find(4, client4(10), 0, 40001), undefined);
  assert.equal(t.find(4, client4(11), 0, 40000), undefined);
  assert.equal(t.find(6, ip("2001:db8:1::11"), 0, 40000), undefined);
  const v4mapped = new Uint8Array(16);
  v4mapped.set(client4(10));
  assert.equal(t.find(6, v4mapped, 0, 40000), undefined);
  // lookup() by text.
  assert.equal(t.lookup("192.0.2.10", 40000), f4);
  assert.equal(t.lookup("2001:db8:1::10", 40000), f6);
  assert.equal(t.lookup("2001:DB8:1:0::10", 40000), f6);
  assert.equal(t.lookup("not an address", 40000), undefined);
  // The flow holds copies, not views of the caller's buffer.
  const buf = client4(20);
  const f = add4(t, 20, 1, 0)!;
  buf[3] = 99;
  assert.equal(f.clientIp, "192.0.2.20");
});

Deno.test("FlowTable.find() reads the address at an offset inside a packet", () => {
  const { t } = table();
  const packet = new Uint8Array(64);
  packet.set(ip("2001:db8:1::77"), 8);
  packet.set(SERVER6, 24);
  const f = t.add(6, packet, 8, 5555, packet, 24, 25, 0, 0)!;
  assert.equal(f.serverIp, "2001:db8:25::25");
  assert.equal(t.find(6, packet, 8, 5555), f);
});

Deno.test("FlowTable holds max established flows: max-1 and max succeed, max+1 is refused and counted", () => {
  for (const max of [1, 2, 100, 1000]) {
    const { t } = table(max);
    for (let i = 0; i < max - 1; i++) assert.ok(add4(t, i, 1000 + i, 0), `flow ${i + 1} of ${max}`);
    assert.equal(t.size, max - 1);
    assert.ok(add4(t, 255, 1, 0), "the max-th flow fits");
    assert.equal(t.size, max);
    assert.equal(add4(t, 255, 2, 0), undefined, "max+1 is refused");
    assert.equal(t.size, max);
    assert.equal(t.stats().full, 1);
    // A SYN that replaces an existing key does not grow the table: allowed when full.
    assert.ok(add4(t, 255, 1, 0), "replacing an existing client port works at max");
    assert.equal(t.stats().endedReplaced, 1);
    assert.equal(t.size, max);
  }
});

Deno.test("FlowTable.add() at max first expires flows that are due", () => {
  const { t, ended } = table(2, 10);
  add4(t, 1, 1, 0);
  add4(t, 2, 2, 5000);
  assert.equal(add4(t, 3, 3, 9999), undefined);
  assert.ok(add4(t, 3, 3, 10000), "the flow idle since 0 is expired to make room");
  assert.deepEqual(ended, [["192.0.2.1:1", "idle"]]);
});

Deno.test("FlowTable.expire() ends idle flows at idleSeconds, not one millisecond before", () => {
  const { t, ended } = table(10, 600);
  const f = add4(t, 1, 1, 1000)!;
  add4(t, 2, 2, 1000);
  t.touch(f, 2000);
  assert.equal(t.expire(1000 + 600000 - 1), 0);
  assert.equal(t.expire(1000 + 600000), 1, "flow 2, idle since 1000");
  assert.deepEqual(ended, [["192.0.2.2:2", "idle"]]);
  assert.equal(t.expire(2000 + 600000 - 1), 0);
  assert.equal(t.expire(2000 + 600000), 1);
  assert.equal(t.size, 0);
  assert.equal(t.stats().endedIdle, 2);
});

Deno.test("FlowTable.touch() keeps busy flows and lets quiet ones expire, in idle order", () => {
  const { t, ended } = table(10, 1);
  const flows = [1, 2, 3, 4].map((i) => add4(t, i, i, 0)!);
  t.touch(flows[0], 500);
  t.touch(flows[2], 700);
  t.expire(1000);
  assert.deepEqual(ended.map((e) => e[0]), ["192.0.2.2:2", "192.0.2.4:4"]);
  t.expire(1500);
  assert.deepEqual(ended.map((e) => e[0]).slice(2), ["192.0.2.1:1"]);
  t.expire(1700);
  assert.equal(t.size, 0);
});

Deno.test("FlowTable ends a flow finLingerMs after FIN in both directions, never after one", () => {
  const cases: [string, boolean[]][] = [
    ["client then responder", [true, false]],
    ["responder then client", [false, true]],
    ["client FIN retransmitted, then responder", [true, true, false]],
  ];
  for (const [name, fins] of cases) {
    const { t, ended } = table(10, 600, { finLingerMs: 5000 });
    const f = add4(t, 1, 1, 0)!;
    fins.forEach((fromClient, i) => t.noteFin(f, fromClient, 100 * (i + 1)));
    const last = 100 * fins.length;
    assert.ok(f.closing, name);
    assert.equal(t.expire(last + 4999), 0, name);
    assert.equal(t.expire(last + 5000), 1, name);
    assert.deepEqual(ended, [["192.0.2.1:1", "fin"]], name);
  }
  const { t } = table(10, 600, { finLingerMs: 5000 });
  const half = add4(t, 1, 1, 0)!;
  t.noteFin(half, true, 0);
  t.noteFin(half, true, 10);
  assert.ok(!half.closing, "half-closed flows stay open");
  assert.equal(t.expire(100000), 0);
});

Deno.test("FlowTable ends a flow rstLingerMs after an RST, also from FIN linger", () => {
  const { t, ended } = table(10, 600, { rstLingerMs: 2000, finLingerMs: 10000 });
  const a = add4(t, 1, 1, 0)!;
  const b = add4(t, 2, 2, 0)!;
  t.noteRst(a, 100);
  t.noteFin(b, true, 100);
  t.noteFin(b, false, 200);
  t.noteRst(b, 300); // RST during FIN linger: ends sooner
  assert.ok(a.rstSeen && a.closing);
  // A touch during linger does not revive a closing flow.
  t.touch(a, 1000);
  assert.equal(t.expire(2099), 0);
  assert.equal(t.expire(2100), 1);
  assert.equal(t.expire(2300), 1);
  assert.deepEqual(ended, [["192.0.2.1:1", "rst"], ["192.0.2.2:2", "rst"]]);
  // An RST late in a FIN linger that would end later leaves the earlier FIN deadline.
  const c = add4(t, 3, 3, 0)!;
  t.noteFin(c, true, 0);
  t.noteFin(c, false, 0);
  t.noteRst(c, 9000);
  assert.equal(c.closeAt, 10000);
  assert.equal(t.expire(10000), 1);
});

Deno.test("FlowTable.expire() honours its budget (amortised expiry)", () => {
  const { t } = table(100, 1);
  for (let i = 0; i < 50; i++) add4(t, i, i, 0);
  assert.equal(t.expire(5000, 2), 2);
  assert.equal(t.expire(5000, 0), 0);
  assert.equal(t.size, 48);
  assert.equal(t.expire(5000), 48);
});

Deno.test("FlowTable.add() replaces the flow of a client port that is reused", () => {
  const { t, ended } = table();
  const old = add4(t, 1, 1, 0)!;
  const fresh = t.add(4, client4(1), 0, 1, ip("198.51.100.26"), 0, 25, 2, 10)!;
  assert.notEqual(old, fresh);
  assert.equal(t.find(4, client4(1), 0, 1), fresh);
  assert.equal(fresh.serverIp, "198.51.100.26");
  assert.deepEqual(ended, [["192.0.2.1:1", "replaced"]]);
  assert.equal(t.size, 1);
  // The old object is detached: removing it again is a no-op.
  t.remove(old);
  assert.equal(t.size, 1);
});

Deno.test("FlowTable.remove() and clear() report every flow once", () => {
  const { t, ended } = table();
  const a = add4(t, 1, 1, 0)!;
  add4(t, 2, 2, 0);
  add4(t, 3, 3, 0);
  t.remove(a);
  t.remove(a);
  t.clear();
  assert.equal(t.size, 0);
  assert.equal(ended.length, 3);
  assert.ok(ended.every(([, r]) => r === "removed"));
  assert.equal([...t.values()].length, 0);
});

Deno.test("FlowTable stays consistent with a reference Map under 200,000 random operations", () => {
  const next = prng(2024);
  const { t } = table(512, 1);
  const ref = new Map<string, Flow>();
  let now = 0;
  // A small key space so that hits, misses, replacements and probe-run deletions all happen.
  const key = () => [next() % 4 === 0 ? 6 : 4, next() % 64, 1 + (next() % 16)] as const;
  const addr = (family: number, i: number) => {
    if (family === 4) return client4(i);
    const b = ip("2001:db8::");
    b[15] = i;
    return b;
  };
  t.onEnd = (f) => {
    assert.equal(ref.get(`${f.family}/${f.clientIp}/${f.clientPort}`), f);
    ref.delete(`${f.family}/${f.clientIp}/${f.clientPort}`);
  };
  for (let n = 0; n < 200000; n++) {
    now += next() % 5;
    const [family, i, port] = key();
    const a = addr(family, i);
    const k = `${family}/${formatIp(a)}/${port}`;
    const op = next() % 10;
    if (op < 3) {
      const f = t.add(family as 4 | 6, a, 0, port, family === 4 ? SERVER4 : SERVER6, 0, 25, n, now);
      if (f) ref.set(k, f);
    } else if (op < 5) {
      const f = t.find(family as 4 | 6, a, 0, port);
      if (f) t.remove(f);
    } else if (op < 6) {
      const f = t.find(family as 4 | 6, a, 0, port);
      if (f) next() % 2 ? t.noteRst(f, now) : t.noteFin(f, next() % 2 === 0, now);
    } else if (op < 7) {
      t.expire(now, 3);
    } else {
      const f = t.find(family as 4 | 6, a, 0, port);
      assert.equal(f, ref.get(k), `lookup ${k} at op ${n}`);
      if (f) t.touch(f, now);
    }
    assert.equal(t.size, ref.size);
  }
  for (const [k, f] of ref) assert.equal(t.lookup(f.clientIp, f.clientPort), f, k);
  assert.ok(t.maxProbeLength() < 64, `probe runs stay short (${t.maxProbeLength()})`);
});

Deno.test("FlowTable keeps probe runs short for 65,536 IPv6 clients in one /64", () => {
  // An attacker controls the low 64 bits and the port; the seeded hash must still spread them.
  const next = prng(5);
  const t = new FlowTable({ max: 65536, idleSeconds: 600 });
  const base = ip("2001:db8:bad::");
  for (let i = 0; i < 65536; i++) {
    const a = new Uint8Array(base);
    a[14] = i >> 8;
    a[15] = i & 0xff;
    assert.ok(t.add(6, a, 0, 1024, SERVER6, 0, 25, 0, 0));
  }
  assert.equal(t.size, 65536);
  const worst = t.maxProbeLength();
  assert.ok(worst < 100, `longest probe run ${worst}`);
  // Random lookups of absent keys terminate quickly too.
  for (let i = 0; i < 1000; i++) {
    assert.equal(t.find(6, randomBytes(next, 16), 0, 1024), undefined);
  }
});

Deno.test("new FlowTable() rejects options it cannot work with", () => {
  const cases: [number, number, RegExp][] = [
    [0, 600, /flows\.max must be an integer 1\.\.16777216, got 0/],
    [1.5, 600, /flows\.max/],
    [2 ** 24 + 1, 600, /flows\.max/],
    [10, 0, /flows\.idleSeconds must be more than 0, got 0/],
    [10, Number.NaN, /flows\.idleSeconds/],
  ];
  for (const [max, idleSeconds, re] of cases) {
    assert.throws(() => new FlowTable({ max, idleSeconds }), (e: unknown) => {
      assert.ok(e instanceof FlowTableError);
      assert.equal(e.name, "FlowTableError");
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("FlowTable ends an embryonic flow after synTimeoutMs without a packet", () => {
  const { t, ended } = table(10, 600, { synTimeoutMs: 5000 });
  const a = syn4(t, 1, 1, 0)!;
  const b = syn4(t, 2, 2, 0)!;
  assert.ok(!a.established);
  t.touch(a, 3000); // e.g. a retransmitted SYN
  t.noteEstablished(b, 1000); // the client's ACK: now an open flow with the long idle timeout
  assert.equal(t.expire(3000 + 4999), 0);
  assert.equal(t.expire(3000 + 5000), 1);
  assert.deepEqual(ended, [["192.0.2.1:1", "handshake"]]);
  assert.equal(t.expire(1000 + 600000 - 1), 0, "the established flow lives to its idle timeout");
  assert.equal(t.expire(1000 + 600000), 1);
  assert.equal(t.stats().endedHandshake, 1);
});

Deno.test("FlowTable never keeps an embryonic flow longer than the idle timeout", () => {
  const t = new FlowTable({ max: 10, idleSeconds: 5 });
  assert.equal(t.synTimeoutMs, 5000);
  assert.equal(new FlowTable({ max: 10, idleSeconds: 600 }).synTimeoutMs, 20000);
});

Deno.test("FlowTable at max evicts the least recently active embryonic flow, never an established one", () => {
  const { t, ended } = table(4);
  const e1 = add4(t, 1, 1, 0)!;
  const e2 = add4(t, 2, 2, 0)!;
  const s1 = syn4(t, 3, 3, 10)!;
  syn4(t, 4, 4, 20);
  t.touch(s1, 30); // s1 is now the most recently active embryonic flow
  assert.ok(syn4(t, 5, 5, 40), "a new SYN at max takes an embryonic slot");
  assert.deepEqual(ended, [["192.0.2.4:4", "evicted"]]);
  assert.ok(syn4(t, 6, 6, 50));
  assert.deepEqual(ended.map((e) => e[0]), ["192.0.2.4:4", "192.0.2.3:3"]);
  assert.equal(t.size, 4);
  assert.equal(t.find(4, client4(1), 0, 1), e1);
  assert.equal(t.find(4, client4(2), 0, 2), e2);
  assert.equal(t.stats().endedEvicted, 2);
  // Once all are established, the table refuses.
  for (const f of [...t.values()]) t.noteEstablished(f, 60);
  assert.equal(syn4(t, 7, 7, 70), undefined);
  assert.equal(t.stats().full, 1);
});

Deno.test("FlowTable with evictEmbryonic false refuses a SYN at max even when flows are half-open", () => {
  const { t } = table(2, 600, { evictEmbryonic: false });
  syn4(t, 1, 1, 0);
  syn4(t, 2, 2, 0);
  assert.equal(syn4(t, 3, 3, 0), undefined);
  assert.equal(t.stats().full, 1);
  assert.equal(t.stats().endedEvicted, 0);
});

Deno.test("FlowTable survives a SYN flood of 10x max without losing an established flow", () => {
  const max = 1000;
  const { t } = table(max, 600);
  const keep = add4(t, 1, 1, 0)!;
  const next = prng(77);
  let refused = 0;
  for (let i = 0; i < 10 * max; i++) {
    const c = ip("2001:db8:f100::");
    c[12] = next() & 0xff;
    c[13] = next() & 0xff;
    c[14] = i >> 8;
    c[15] = i & 0xff;
    if (!t.add(6, c, 0, next() & 0xffff, SERVER6, 0, 25, next(), i)) refused++;
  }
  assert.equal(refused, 0, "every flood SYN got a (short-lived) slot");
  assert.equal(t.size, max);
  assert.equal(t.find(4, client4(1), 0, 1), keep);
  // A legitimate client whose ACK comes after max-1 more flood SYNs completes its handshake.
  const legit = t.add(6, ip("2001:db8:1::10"), 0, 40000, SERVER6, 0, 25, 1, 10 * max)!;
  for (let i = 0; i < max - 2; i++) {
    const c = ip("2001:db8:f100::");
    c[14] = i >> 8;
    c[15] = i & 0xff;
    assert.ok(t.add(6, c, 0, 7, SERVER6, 0, 25, 0, 10 * max));
  }
  assert.equal(t.lookup("2001:db8:1::10", 40000), legit, "survived max-2 flood SYNs");
  t.noteEstablished(legit, 10 * max + 1);
  assert.equal(t.lookup("2001:db8:1::10", 40000), legit);
});

Deno.test("FlowTable recycles the object of an evicted half-open flow for the next SYN, fully reset, and never an established one's", () => {
  const { t, ended } = table(2);
  const est = add4(t, 1, 1, 0)!;
  const half = syn4(t, 2, 2, 0)!;
  const halfId = half.id;
  // Full: the next SYN evicts the half-open flow and gets its object back, as a new flow.
  const next = t.add(6, ip("2001:db8:1::9"), 0, 3, SERVER6, 0, 587, 77, 5)!;
  assert.equal(next, half, "the evicted half-open flow's object is recycled");
  assert.notEqual(next.id, halfId);
  assert.equal(next.family, 6);
  assert.equal(next.clientIp, "2001:db8:1::9");
  assert.equal(next.serverIp, "2001:db8:25::25");
  assert.equal(next.clientPort, 3);
  assert.equal(next.serverPort, 587);
  assert.equal(next.synSeq, 77);
  assert.equal(next.created, 5);
  assert.equal(next.established, false);
  assert.equal(next.closing, false);
  assert.equal(t.find(6, ip("2001:db8:1::9"), 0, 3), next);
  assert.equal(t.find(4, client4(2), 0, 2), undefined, "the old key is gone");
  assert.deepEqual(ended, [["192.0.2.2:2", "evicted"]]);
  // An established flow that ends is never recycled: a later SYN gets a new object.
  t.remove(est, "rst");
  const other = syn4(t, 4, 4, 6)!;
  assert.notEqual(other, est);
  assert.equal(est.clientIp, "192.0.2.1", "a detached established flow no longer changes");
});

Deno.test("FlowTable under a SYN flood of 10× its size keeps the established flows and every half-open flow correct", () => {
  const { t } = table(64);
  for (let i = 0; i < 8; i++) add4(t, 200 + i, 1, 0);
  for (let i = 0; i < 640; i++) syn4(t, i & 0x7f, 1000 + i, i);
  assert.equal(t.size, 64);
  assert.equal(t.stats().halfOpen, 56);
  assert.equal(t.stats().endedEvicted, 640 - 56);
  for (let i = 0; i < 8; i++) assert.ok(t.find(4, client4(200 + i), 0, 1)?.established);
  for (let i = 640 - 56; i < 640; i++) {
    const f = t.find(4, client4(i & 0x7f), 0, 1000 + i);
    assert.ok(f, `half-open flow ${i} is found`);
    assert.equal(f.clientIp, formatIp(client4(i & 0x7f), 0, 4));
    assert.equal(f.clientPort, 1000 + i);
  }
  assert.ok(t.maxProbeLength() <= 64);
});
