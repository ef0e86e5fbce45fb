/**
 * Per-packet cost of the netlink work in the queue Worker: encoding a verdict in TypeScript
 * (what the Worker does) versus calling libnetfilter_queue's builders through FFI, and parsing a
 * queued-packet message. `deno bench --allow-ffi bench/nfnetlink_bench.ts`
 */
import { loadNative } from "../ffi/native.ts";
import {
  NF_ACCEPT,
  NFQNL_MSG_VERDICT,
  parseDatagram,
  QueuedPacket,
  VerdictWriter,
} from "../ffi/nfnetlink.ts";

const packet = new Uint8Array(1500).fill(0x42);
const writer = new VerdictWriter(25, 256 * 1024);
const { nfq } = loadNative();
const libBuf = new Uint8Array(256 * 1024);

Deno.bench("verdict with a 1500-byte payload, TypeScript VerdictWriter", {
  group: "verdict",
  baseline: true,
}, () => {
  if (!writer.fits(packet.length, true)) writer.clear();
  writer.put(1, NF_ACCEPT, packet, 0x53470000);
});

let off = 0;
Deno.bench("verdict with a 1500-byte payload, libnetfilter_queue builders via FFI", {
  group: "verdict",
}, () => {
  if (off + 1600 > libBuf.length) off = 0;
  const nlh = nfq.nfq_nlmsg_put(libBuf.subarray(off), NFQNL_MSG_VERDICT, 25)!;
  nfq.nfq_nlmsg_verdict_put(nlh, 1, NF_ACCEPT);
  nfq.nfq_nlmsg_verdict_put_mark(nlh, 0x53470000);
  nfq.nfq_nlmsg_verdict_put_pkt(nlh, packet, packet.length);
  off += 1552;
});

// A kernel-style packet message: header attr, payload attr.
const msg = new Uint8Array(16 + 4 + 12 + 4 + 1500);
{
  const dv = new DataView(msg.buffer);
  dv.setUint32(0, msg.length, true);
  dv.setUint16(4, 0x0300, true);
  dv.setUint16(20, 11, true);
  dv.setUint16(22, 1, true);
  dv.setUint32(24, 7, false);
  dv.setUint16(28, 0x0800, false);
  dv.setUint16(32, 1504, true);
  dv.setUint16(34, 10, true);
}
const dv = new DataView(msg.buffer);
const pkt = new QueuedPacket();
let seen = 0;
const sink = {
  packet: (p: QueuedPacket) => void (seen += p.payloadLength),
  error: () => {},
  malformed: () => {},
};
Deno.bench("parse one queued-packet message", { group: "parse" }, () => {
  parseDatagram(msg, dv, 0, msg.length, sink, pkt);
});
