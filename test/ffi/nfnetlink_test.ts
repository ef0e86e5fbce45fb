/**
 * nfnetlink_queue encoding and parsing in TypeScript, checked against libnetfilter_queue's own
 * message builders (loaded through FFI; no privileges needed) and hand-built kernel messages.
 */
import assert from "node:assert/strict";
import { loadNative } from "../../ffi/native.ts";
import {
  NF_ACCEPT,
  NF_DROP,
  NFQA_CAP_LEN,
  NFQA_PACKET_HDR,
  NFQA_PAYLOAD,
  NFQA_SKB_INFO,
  NFQNL_MSG_VERDICT,
  NLMSG_ERROR,
  parseDatagram,
  QueuedPacket,
  VerdictWriter,
} from "../../ffi/nfnetlink.ts";
import { granted } from "./test_permissions.ts";

const noFfi = !granted("ffi");
if (noFfi) console.error("nfnetlink_test: library comparisons IGNORED: run with --allow-ffi");

/** The library's encoding of one verdict (nfq_nlmsg_put + verdict_put [+ mark] [+ pkt]). */
function libraryVerdict(
  queue: number,
  id: number,
  verdict: number,
  payload?: Uint8Array,
  mark?: number,
) {
  const { nfq } = loadNative();
  const buf = new Uint8Array(70000);
  const nlh = nfq.nfq_nlmsg_put(buf, NFQNL_MSG_VERDICT, queue);
  assert.ok(nlh);
  nfq.nfq_nlmsg_verdict_put(nlh, id | 0, verdict); // C prototype: int id
  if (mark !== undefined) nfq.nfq_nlmsg_verdict_put_mark(nlh, mark);
  if (payload) nfq.nfq_nlmsg_verdict_put_pkt(nlh, payload, payload.length);
  const len = new DataView(buf.buffer).getUint32(0, true);
  return buf.slice(0, len);
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const VERDICT_CASES: [string, number, number, number, number | undefined, number | undefined][] = [
  // name, queue, id, verdict, payload length, mark
  ["accept without payload", 25, 1, NF_ACCEPT, undefined, undefined],
  ["drop", 0, 0xffffffff, NF_DROP, undefined, undefined],
  ["accept with a 40-byte packet", 25, 7, NF_ACCEPT, 40, undefined],
  ["accept with a 41-byte packet (padding 3)", 65535, 8, NF_ACCEPT, 41, undefined],
  ["accept with a 42-byte packet (padding 2)", 1, 9, NF_ACCEPT, 42, undefined],
  ["accept with a 43-byte packet (padding 1)", 1, 10, NF_ACCEPT, 43, undefined],
  ["accept with a 1500-byte packet and a mark", 25, 123456, NF_ACCEPT, 1500, 0x53470000],
  ["accept with a mark, no payload", 25, 5, NF_ACCEPT, undefined, 0xffffffff],
  ["accept with the largest copy (65531 bytes)", 25, 11, NF_ACCEPT, 65531, undefined],
];

for (const [name, queue, id, verdict, plen, mark] of VERDICT_CASES) {
  Deno.test({
    name: `VerdictWriter.put() encodes "${name}" byte for byte like libnetfilter_queue`,
    ignore: noFfi,
    fn: () => {
      const payload = plen === undefined ? undefined : bytes(plen, plen);
      const w = new VerdictWriter(queue, 70000);
      w.put(id, verdict, payload, mark);
      const want = libraryVerdict(queue, id, verdict, payload, mark);
      assert.equal(w.length, want.length);
      assert.deepEqual(w.view(), want);
      assert.equal(w.count, 1);
      assert.equal(VerdictWriter.size(plen ?? 0, mark !== undefined), want.length);
    },
  });
}

Deno.test({
  name: "VerdictWriter.put() appends several verdicts back to back for one send()",
  ignore: noFfi,
}, () => {
  const w = new VerdictWriter(25, 8192);
  const p1 = bytes(61, 1);
  const p2 = bytes(1400, 2);
  w.put(1, NF_ACCEPT);
  w.put(2, NF_ACCEPT, p1, 0x53470000);
  w.put(3, NF_DROP);
  w.put(4, NF_ACCEPT, p2);
  const want = [
    libraryVerdict(25, 1, NF_ACCEPT),
    libraryVerdict(25, 2, NF_ACCEPT, p1, 0x53470000),
    libraryVerdict(25, 3, NF_DROP),
    libraryVerdict(25, 4, NF_ACCEPT, p2),
  ];
  const joined = new Uint8Array(want.reduce((n, b) => n + b.length, 0));
  let off = 0;
  for (const b of want) {
    joined.set(b, off);
    off += b.length;
  }
  assert.deepEqual(w.view(), joined);
  assert.equal(w.count, 4);
  w.clear();
  assert.equal(w.length, 0);
  assert.equal(w.count, 0);
});

Deno.test("VerdictWriter.fits() is true at capacity and false one byte past it", () => {
  const one = VerdictWriter.size(100, true); // 16 + 4 + 12 + 8 + 104 = 144
  assert.equal(one, 144);
  for (const [capacity, fits] of [[one - 1, false], [one, true], [one + 1, true]] as const) {
    const w = new VerdictWriter(25, capacity);
    assert.equal(w.fits(100, true), fits, `capacity ${capacity}`);
    if (fits) w.put(1, NF_ACCEPT, bytes(100, 3), 1);
    else assert.throws(() => w.put(1, NF_ACCEPT, bytes(100, 3), 1), RangeError);
  }
});

Deno.test("VerdictWriter.put() refuses a payload longer than the kernel's copy range", () => {
  const w = new VerdictWriter(25, 70000);
  assert.throws(() => w.put(1, NF_ACCEPT, new Uint8Array(65532)), RangeError);
  w.put(1, NF_ACCEPT, new Uint8Array(65531));
});

/** Builds a kernel-style NFQNL_MSG_PACKET message. */
function packetMessage(
  opts: {
    id: number;
    proto?: number;
    hook?: number;
    payload?: Uint8Array;
    capLen?: number;
    skbInfo?: number;
  },
): Uint8Array {
  const attrs: Uint8Array[] = [];
  const attr = (type: number, value: Uint8Array) => {
    const len = 4 + value.length;
    const a = new Uint8Array((len + 3) & ~3);
    const dv = new DataView(a.buffer);
    dv.setUint16(0, len, true);
    dv.setUint16(2, type, true);
    a.set(value, 4);
    attrs.push(a);
  };
  const hdr = new Uint8Array(7);
  const hdv = new DataView(hdr.buffer);
  hdv.setUint32(0, opts.id, false);
  hdv.setUint16(4, opts.proto ?? 0x0800, false);
  hdr[6] = opts.hook ?? 0;
  attr(NFQA_PACKET_HDR, hdr);
  const be32 = (v: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, false);
    return b;
  };
  if (opts.capLen !== undefined) attr(NFQA_CAP_LEN, be32(opts.capLen));
  if (opts.skbInfo !== undefined) attr(NFQA_SKB_INFO, be32(opts.skbInfo));
  if (opts.payload) attr(NFQA_PAYLOAD, opts.payload);
  const body = attrs.reduce((n, a) => n + a.length, 0);
  const msg = new Uint8Array(20 + body);
  const dv = new DataView(msg.buffer);
  dv.setUint32(0, msg.length, true);
  dv.setUint16(4, 0x0300, true); // NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET
  dv.setUint16(18, 25, false);
  let off = 20;
  for (const a of attrs) {
    msg.set(a, off);
    off += a.length;
  }
  return msg;
}

function errorMessage(errno: number, seq: number): Uint8Array {
  const msg = new Uint8Array(16 + 4 + 16);
  const dv = new DataView(msg.buffer);
  dv.setUint32(0, msg.length, true);
  dv.setUint16(4, NLMSG_ERROR, true);
  dv.setUint32(8, seq, true);
  dv.setInt32(16, -errno, true);
  return msg;
}

interface Seen {
  packets: {
    id: number;
    hook: number;
    proto: number;
    payload: number[];
    capLen: number;
    skbInfo: number;
  }[];
  errors: [number, number][];
  malformed: number;
}

function parse(datagram: Uint8Array, offset = 0): Seen & { count: number } {
  // Place the datagram at an offset inside a larger buffer, as in a receive slot.
  const buf = new Uint8Array(offset + datagram.length + 8);
  buf.set(datagram, offset);
  const seen: Seen = { packets: [], errors: [], malformed: 0 };
  const count = parseDatagram(buf, new DataView(buf.buffer), offset, offset + datagram.length, {
    packet: (p) =>
      seen.packets.push({
        id: p.id,
        hook: p.hook,
        proto: p.hwProtocol,
        payload: [...buf.subarray(p.payloadStart, p.payloadStart + p.payloadLength)],
        capLen: p.capLen,
        skbInfo: p.skbInfo,
      }),
    error: (e, s) => seen.errors.push([e, s]),
    malformed: () => seen.malformed++,
  }, new QueuedPacket());
  return { ...seen, count };
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

Deno.test("parseDatagram() reads id, hook, protocol, payload, cap length and skb info", () => {
  const payload = bytes(61, 9);
  const r = parse(
    packetMessage({ id: 0xfedcba98, proto: 0x86dd, hook: 3, payload, capLen: 9000, skbInfo: 1 }),
    SLOT_OFFSET,
  );
  assert.equal(r.count, 1);
  assert.equal(r.malformed, 0);
  assert.deepEqual(r.packets, [{
    id: 0xfedcba98,
    hook: 3,
    proto: 0x86dd,
    payload: [...payload],
    capLen: 9000,
    skbInfo: 1,
  }]);
});
const SLOT_OFFSET = 69632;

Deno.test("parseDatagram() reads every message of a multi-message datagram, errors included", () => {
  const r = parse(concat(
    packetMessage({ id: 1, payload: bytes(40, 1) }),
    errorMessage(2, 77), // ENOENT for our request 77
    errorMessage(0, 78), // an acknowledgement
    packetMessage({ id: 2, payload: bytes(3, 2) }),
  ));
  assert.equal(r.count, 4);
  assert.deepEqual(r.packets.map((p) => [p.id, p.payload.length]), [[1, 40], [2, 3]]);
  assert.deepEqual(r.errors, [[2, 77], [0, 78]]);
  assert.equal(r.malformed, 0);
});

Deno.test("parseDatagram() stops at bad lengths instead of reading past the datagram", () => {
  const good = packetMessage({ id: 5, payload: bytes(40, 5) });
  const cases: [string, (m: Uint8Array) => Uint8Array, number, number][] = [
    // name, mutate, packets expected, malformed expected
    [
      "nlmsg_len one past the datagram",
      (m) => {
        new DataView(m.buffer).setUint32(0, m.length + 1, true);
        return m;
      },
      0,
      1,
    ],
    [
      "nlmsg_len below the header",
      (m) => {
        new DataView(m.buffer).setUint32(0, 15, true);
        return m;
      },
      0,
      1,
    ],
    [
      "an attribute longer than the message",
      (m) => {
        new DataView(m.buffer).setUint16(20, 4000, true);
        return m;
      },
      0,
      1,
    ],
    [
      "an attribute length below its header",
      (m) => {
        new DataView(m.buffer).setUint16(20, 3, true);
        return m;
      },
      0,
      1,
    ],
    [
      "a packet header attribute one byte short",
      (m) => {
        new DataView(m.buffer).setUint16(20, 10, true);
        return m;
      },
      0,
      1,
    ],
    ["a datagram cut inside the header", (m) => m.subarray(0, 15), 0, 0],
    ["no change", (m) => m, 1, 0],
  ];
  for (const [name, mutate, packets, malformed] of cases) {
    const r = parse(mutate(good.slice()));
    assert.equal(r.packets.length, packets, name);
    assert.equal(r.malformed, malformed, name);
  }
});

Deno.test("parseDatagram() reports a packet message without NFQA_PACKET_HDR as malformed", () => {
  const m = packetMessage({ id: 1, payload: bytes(8, 1) });
  new DataView(m.buffer).setUint16(22, 99, true); // retype the header attribute
  const r = parse(m);
  assert.equal(r.packets.length, 0);
  assert.equal(r.malformed, 1);
});

Deno.test("VerdictWriter with a source references its payloads: the spliced stream equals the copied one", () => {
  const source = new Uint8Array(200000);
  for (let i = 0; i < source.length; i++) source[i] = (i * 31) & 0xff;
  const view = source.subarray(8); // a payload offset relative to a subarray, as the Worker's slots
  const copy = new VerdictWriter(25, 1 << 20);
  const ref = new VerdictWriter(25, 1 << 20, { source: view, maxRefs: 3 });
  const cases: [number, number, Uint8Array | undefined, number | undefined][] = [
    [1, NF_ACCEPT, view.subarray(100, 1601), 0x53470000], // odd length: padding after it
    [2, NF_ACCEPT, undefined, undefined],
    [3, NF_ACCEPT, view.subarray(70000, 70000 + 65000), undefined],
    [4, 0, undefined, undefined],
    [5, NF_ACCEPT, view.subarray(5, 7), 7],
    [6, NF_ACCEPT, new Uint8Array([1, 2, 3]), undefined], // not in the source: copied
    [7, NF_ACCEPT, view.subarray(9, 99), undefined], // past maxRefs: copied
  ];
  for (const [id, verdict, payload, mark] of cases) {
    if (id <= 5) assert.ok(ref.fits(payload?.length ?? 0, mark !== undefined));
    copy.put(id, verdict, payload, mark);
    ref.put(id, verdict, payload, mark);
  }
  assert.equal(ref.refCount, 3);
  assert.equal(ref.count, copy.count);
  assert.equal(ref.totalLength, copy.length);
  const parts: Uint8Array[] = [];
  let from = 0;
  for (let i = 0; i < ref.refCount; i++) {
    parts.push(ref.buffer.subarray(from, ref.refAt(i)));
    parts.push(view.subarray(ref.refOffset(i), ref.refOffset(i) + ref.refLength(i)));
    from = ref.refAt(i);
  }
  parts.push(ref.buffer.subarray(from, ref.length));
  const spliced = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    spliced.set(p, o);
    o += p.length;
  }
  assert.deepEqual(spliced, copy.view());
  ref.clear();
  assert.equal(ref.refCount, 0);
  assert.equal(ref.totalLength, 0);
});
