/**
 * Bounded property runs of every parser that reads untrusted bytes (issue 8): the command parser,
 * the DATA/BDAT reader, the packet parser and MIME decoding. Inputs are seeded mutations of real
 * ones (valid commands, the message fixtures and the evasion corpus, well-formed packets) plus
 * random bytes; each run is bounded by a count AND a time budget, so CI time stays fixed.
 *
 * Properties: no exception escapes; every answer is well formed (a parse result or an SMTP reply
 * with a 4xx/5xx code; a DATA reader that never stores more than its limit and ends only on
 * CRLF.CRLF; a packet view whose offsets stay inside the packet); decoding always returns facts.
 * The seed is printed; `SSG_FUZZ_SEED=<n>` reproduces a run, `SSG_FUZZ_MS=<ms>` lengthens it.
 */
import assert from "node:assert/strict";
import { parseCommandLine, parseMailArg, parseRcptArg } from "../../src/smtp/command.ts";
import { DataReader } from "../../src/smtp/data_reader.ts";
import { PacketView, parsePacket, ParseStatus } from "../../src/packet/packet_view.ts";
import { decodeMessage } from "../../src/policy/message.ts";
import { prng, prngFraction, randomPacket } from "../packet/packet_helpers.ts";

const SEED = Number(Deno.env.get("SSG_FUZZ_SEED") ?? Date.now() % 1_000_000);
const BUDGET_MS = Number(Deno.env.get("SSG_FUZZ_MS") ?? 3_000);
const enc = new TextEncoder();

/** Runs `one(i)` until `count` iterations or `BUDGET_MS` pass; returns the iterations done. */
async function bounded(count: number, one: (i: number) => void | Promise<void>): Promise<number> {
  const deadline = performance.now() + BUDGET_MS;
  let i = 0;
  for (; i < count && performance.now() < deadline; i++) await one(i);
  return i;
}

/** A mutation of `base`: byte flips, insertions of interesting bytes, cuts and duplications. */
function mutate(next: () => number, base: Uint8Array): Uint8Array {
  const specials = [0x00, 0x0d, 0x0a, 0x2e, 0x3c, 0x3e, 0x3d, 0x20, 0x7f, 0x80, 0xff, 0xc3, 0x1b];
  let out = base.slice();
  const edits = 1 + Math.floor(next() * 8);
  for (let e = 0; e < edits; e++) {
    const at = Math.floor(next() * (out.length + 1));
    const kind = Math.floor(next() * 4);
    if (kind === 0 && out.length) out[Math.min(at, out.length - 1)] ^= 1 << Math.floor(next() * 8);
    else if (kind === 1) {
      const b = specials[Math.floor(next() * specials.length)];
      out = Uint8Array.from([...out.subarray(0, at), b, ...out.subarray(at)]);
    } else if (kind === 2) out = out.subarray(0, at).slice();
    else {
      const len = Math.floor(next() * 64);
      out = Uint8Array.from([
        ...out.subarray(0, at),
        ...out.subarray(at, at + len),
        ...out.subarray(at),
      ]);
    }
  }
  return out;
}

Deno.test(`fuzz: the command parser answers every line with a parse or a 4xx/5xx reply (seed ${SEED})`, async () => {
  const next = prngFraction(SEED);
  const lines = [
    "EHLO client.example.org",
    "MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=x+2Bid",
    "RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.net",
    "MAIL FROM:<café@example.org> SMTPUTF8",
    "BDAT 100 LAST",
    "DATA",
    "STARTTLS",
    "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=",
  ].map((l) => enc.encode(l));
  const n = await bounded(50_000, () => {
    const line = next() < 0.1
      ? crypto.getRandomValues(new Uint8Array(Math.floor(next() * 600)))
      : mutate(next, lines[Math.floor(next() * lines.length)]);
    for (const utf8 of [false, true]) {
      const p = parseCommandLine(line, utf8);
      if (!p.ok) {
        assert.ok(p.reply.code >= 400 && p.reply.code <= 599, `reply code ${p.reply.code}`);
        continue;
      }
      const { verb, arg } = p.value;
      assert.match(verb, /^[A-Z]{1,16}$/i);
      for (const r of [parseMailArg(arg.slice(5)), parseRcptArg(arg.slice(3))]) {
        if (!r.ok) assert.ok(r.reply.code >= 400 && r.reply.code <= 599);
      }
    }
  });
  console.log(`command parser: ${n} lines`);
  assert.ok(n > 100);
});

Deno.test(`fuzz: the DATA reader stores at most its limit and ends only on CRLF.CRLF (seed ${SEED})`, async () => {
  const next = prngFraction(SEED + 1);
  const max = 4096;
  const base = enc.encode(
    "Subject: x\r\n\r\nline\r\n..dot\r\n.\r\n" + "a line of text\r\n".repeat(40) + ".\r\n",
  );
  const n = await bounded(20_000, () => {
    const input = next() < 0.2
      ? crypto.getRandomValues(new Uint8Array(Math.floor(next() * 6000)))
      : mutate(next, base);
    for (const bare of ["reject", "normalize"] as const) {
      const dr = new DataReader({
        maxMessageBytes: max,
        maxTextLine: 1000,
        bareLineEndings: bare,
        longLines: next() < 0.5 ? "pass" : "reject",
      });
      let used = 0;
      let at = 0;
      while (at < input.length && !dr.done) {
        const len = 1 + Math.floor(next() * 700);
        const chunk = input.subarray(at, at + len);
        const u = dr.push(chunk);
        assert.ok(u >= 0 && u <= chunk.length, "push consumes at most its chunk");
        used += u;
        at += chunk.length;
      }
      if (dr.done) {
        const seen = input.subarray(0, used);
        const text = new TextDecoder("latin1").decode(seen);
        assert.ok(text.endsWith("\r\n.\r\n") || text === ".\r\n", "ended only on CRLF.CRLF");
        if (!dr.rejected) {
          const m = dr.message();
          assert.ok(m.length <= max, `stored ${m.length} > ${max}`);
          assert.ok(!m.includes(0), "no NUL in a stored message");
        }
      }
      dr.dispose();
    }
  });
  console.log(`DATA reader: ${n} inputs`);
  assert.ok(n > 100);
});

Deno.test(`fuzz: the packet parser never reads outside a packet (seed ${SEED})`, async () => {
  const next = prngFraction(SEED + 2);
  const packets = prng(SEED + 4);
  const view = new PacketView();
  const n = await bounded(200_000, () => {
    const p = next() < 0.2
      ? crypto.getRandomValues(new Uint8Array(Math.floor(next() * 200)))
      : mutate(next, randomPacket(packets, next() < 0.5 ? 4 : 6, 200));
    const st = parsePacket(p, view);
    assert.ok(Object.values(ParseStatus).includes(st));
    if (st === ParseStatus.Tcp) {
      assert.ok(view.ipEnd <= p.length, "IP end inside the packet");
      assert.ok(view.tcpOffset + view.tcpHeaderLength <= view.ipEnd, "TCP header inside");
      assert.ok(view.tcpHeaderLength >= 20 && view.tcpHeaderLength <= 60);
    }
  });
  console.log(`packet parser: ${n} packets`);
  assert.ok(n > 1000);
});

Deno.test(`fuzz: MIME decoding returns facts for every mutated message (seed ${SEED})`, async () => {
  const next = prngFraction(SEED + 3);
  const corpus: Uint8Array[] = [];
  for (const dir of ["messages", "evasion"]) {
    const url = new URL(`../fixtures/${dir}/`, import.meta.url);
    for (const e of Deno.readDirSync(url)) {
      if (e.isFile && e.name.endsWith(".eml")) corpus.push(Deno.readFileSync(new URL(e.name, url)));
    }
  }
  assert.ok(corpus.length >= 10, "the fixture corpus is there");
  const n = await bounded(2_000, async () => {
    const m = mutate(next, corpus[Math.floor(next() * corpus.length)]);
    const facts = await decodeMessage(m, { timeoutMs: 5_000 });
    assert.equal(typeof facts.subject, "string");
    assert.ok(Array.isArray(facts.problems));
  });
  console.log(`MIME decoding: ${n} messages`);
  assert.ok(n > 10);
});
