import assert from "node:assert/strict";
import { SynCache } from "../../src/flow/syn_cache.ts";
import { formatIp } from "../../src/packet/ip_address.ts";
import { ip, prng } from "../packet/packet_helpers.ts";

const SERVER4 = ip("198.51.100.25");
const SERVER6 = ip("2001:db8:25::25");

function server(c: SynCache, s: number): string {
  return `${formatIp(c.addresses, c.serverOffset(s), c.family(s))}|${c.serverPort(s)}`;
}

Deno.test("SynCache: insert, find, sameServer, remove (IPv4 and IPv6 apart)", () => {
  const c = new SynCache({ capacity: 16, seed: 7 });
  const a4 = ip("192.0.2.10");
  const a6 = ip("2001:db8:1::10");
  const s4 = c.insert(4, a4, 0, 40000, SERVER4, 0, 25, 0xfffffff0, 0);
  const s6 = c.insert(6, a6, 0, 40000, SERVER6, 0, 587, 5, 0);
  assert.equal(c.find(4, a4, 0, 40000, 1), s4);
  assert.equal(c.find(6, a6, 0, 40000, 1), s6);
  assert.equal(c.find(4, a4, 0, 40001, 1), -1);
  assert.equal(c.find(4, ip("192.0.2.11"), 0, 40000, 1), -1);
  assert.equal(server(c, s4), "198.51.100.25|25");
  assert.equal(server(c, s6), "2001:db8:25::25|587");
  assert.equal(c.seq(s4), 0xfffffff0);
  assert.ok(c.sameServer(s4, SERVER4, 0, 4, 25));
  assert.ok(!c.sameServer(s4, SERVER4, 0, 4, 587));
  assert.ok(!c.sameServer(s4, ip("198.51.100.26"), 0, 4, 25));
  c.remove(s4);
  assert.equal(c.find(4, a4, 0, 40000, 1), -1);
  assert.equal(c.find(6, a6, 0, 40000, 1), s6);
  assert.deepEqual(c.stats(), { size: 1, inserted: 2, evicted: 0, expired: 0, removed: 1 });
});

Deno.test("SynCache: full, it evicts the oldest entry (FIFO), and memory never grows", () => {
  const c = new SynCache({ capacity: 4, seed: 1 });
  const bytes = c.bytes;
  const a = ip("192.0.2.10");
  for (let p = 1; p <= 10; p++) c.insert(4, a, 0, p, SERVER4, 0, 25, p, p);
  for (let p = 1; p <= 6; p++) assert.equal(c.find(4, a, 0, p, 10), -1, `port ${p} evicted`);
  for (let p = 7; p <= 10; p++) assert.ok(c.find(4, a, 0, p, 10) >= 0, `port ${p} kept`);
  assert.equal(c.size, 4);
  assert.equal(c.stats().evicted, 6);
  assert.equal(c.bytes, bytes);
  // Re-inserting a client replaces its entry instead of holding two; it takes the next slot of
  // the ring (the oldest entry's, port 7): an entry lives for `capacity` SYNs, never more.
  c.insert(4, a, 0, 9, SERVER6.subarray(0, 4), 0, 26, 1, 11);
  assert.equal(c.size, 3);
  assert.equal(c.serverPort(c.find(4, a, 0, 9, 11)), 26);
  assert.equal(c.find(4, a, 0, 7, 11), -1);
});

Deno.test("SynCache: entries end synTimeoutMs after their SYN, found or expired", () => {
  const c = new SynCache({ capacity: 8, synTimeoutMs: 1000, seed: 3 });
  const a = ip("192.0.2.10");
  c.insert(4, a, 0, 1, SERVER4, 0, 25, 0, 0);
  c.insert(4, a, 0, 2, SERVER4, 0, 25, 0, 500);
  assert.ok(c.find(4, a, 0, 1, 999) >= 0);
  assert.equal(c.find(4, a, 0, 1, 1000), -1, "found past its time: gone");
  assert.equal(c.expire(1499), 0);
  assert.equal(c.expire(1500), 1);
  assert.equal(c.size, 0);
  assert.equal(c.stats().expired, 2);
  // The ring goes on working after it emptied.
  c.insert(4, a, 0, 3, SERVER4, 0, 25, 0, 2000);
  assert.ok(c.find(4, a, 0, 3, 2000) >= 0);
});

Deno.test("SynCache agrees with a Map under random inserts, removes and evictions", () => {
  const next = prng(8);
  const cap = 64;
  const c = new SynCache({ capacity: cap, synTimeoutMs: 1e12 });
  const model = new Map<string, number>(); // key → insertion number
  let order = 0;
  const addr = new Uint8Array(16);
  for (let i = 0; i < 20000; i++) {
    const family = next() % 2 === 0 ? 4 : 6;
    addr[15] = family === 6 ? next() % 8 : 0; // an IPv4 key is the first 4 bytes only
    addr[3] = next() % 8;
    const port = 1 + (next() % 16);
    const key = `${family}|${addr[3]}|${addr[15]}|${port}`;
    const op = next() % 3;
    if (op === 0) {
      const s = c.find(family, addr, 0, port, i);
      if (s >= 0) c.remove(s);
      model.delete(key);
    } else {
      c.insert(family, addr, 0, port, SERVER6, 0, port, i, i);
      model.delete(key);
      model.set(key, order++);
      // The ring keeps the last `cap` insertions (minus removed ones).
      for (const [k, n] of model) if (n <= order - 1 - cap) model.delete(k);
    }
    if (i % 97 === 0) {
      for (let f = 4; f <= 6; f += 2) {
        for (let a3 = 0; a3 < 8; a3++) {
          for (let a15 = 0; a15 < (f === 6 ? 8 : 1); a15++) {
            addr[3] = a3;
            addr[15] = a15;
            for (let p = 1; p <= 16; p++) {
              const k = `${f}|${a3}|${a15}|${p}`;
              assert.equal(c.find(f as 4 | 6, addr, 0, p, i) >= 0, model.has(k), k);
            }
          }
        }
      }
      assert.equal(c.size, model.size);
    }
  }
});
