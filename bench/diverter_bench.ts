/**
 * Micro-benchmark of the packet path: `Diverter.handle()` on a data segment of an established
 * flow (the common case), inbound and outbound, IPv4 and IPv6, plus the pieces it is made of.
 *
 * Run: `deno bench bench/diverter_bench.ts`. Each iteration rewrites the same buffer in place;
 * the benchmark alternates a packet and its rewrite-back so every iteration does a real rewrite
 * with checksum updates (never a no-op on already-rewritten bytes).
 */
import { Diverter } from "../src/divert/diverter.ts";
import { FlowTable } from "../src/flow/flow_table.ts";
import { buildTcpPacket } from "../src/packet/build_tcp_packet.ts";
import { parseCidr } from "../src/packet/cidr.ts";
import { computeTcpChecksum } from "../src/packet/checksum.ts";
import { parseIp } from "../src/packet/ip_address.ts";
import { PacketView, parsePacket, TCP_ACK, TCP_PSH, TCP_SYN } from "../src/packet/packet_view.ts";
import { rewriteDestination } from "../src/packet/rewrite.ts";

const RESPONDER_PORT = 10025;
const ip = (t: string) => parseIp(t)!;
const payload = new Uint8Array(1400).fill(0x61); // a typical full segment of message data

function setup(family: 4 | 6, flows: number) {
  const client = family === 4 ? "192.0.2.10" : "2001:db8:1::10";
  const server = family === 4 ? "198.51.100.25" : "2001:db8:25::25";
  const responder = family === 4 ? "192.0.2.1" : "2001:db8:1::1";
  const table = new FlowTable({ max: 65536, idleSeconds: 600 });
  const d = new Diverter({
    protect: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:25::/64")],
    ports: [25],
    responder4: ip("192.0.2.1"),
    responder6: ip("2001:db8:1::1"),
    responderPort: RESPONDER_PORT,
    table,
  });
  // Fill the table so the lookup is not a lone entry (SYN, then the handshake ACK that makes the
  // Flow; see SynCache).
  for (let i = 0; i < flows; i++) {
    for (const flags of [TCP_SYN, TCP_ACK]) {
      d.handle(
        buildTcpPacket({
          src: ip(client),
          dst: ip(server),
          srcPort: 1024 + i,
          dstPort: 25,
          flags,
        }),
        0,
      );
    }
  }
  if (table.size !== flows) throw new Error(`expected ${flows} flows, got ${table.size}`);
  const inbound = buildTcpPacket({
    src: ip(client),
    dst: ip(server),
    srcPort: 1024,
    dstPort: 25,
    flags: TCP_ACK | TCP_PSH,
    payload,
  });
  const outbound = buildTcpPacket({
    src: ip(responder),
    dst: ip(client),
    srcPort: RESPONDER_PORT,
    dstPort: 1024,
    flags: TCP_ACK,
  });
  return {
    d,
    inbound,
    outbound,
    inboundCopy: new Uint8Array(inbound),
    outboundCopy: new Uint8Array(outbound),
  };
}

for (const family of [4, 6] as const) {
  const s = setup(family, 10000);
  let now = 1;
  Deno.bench(`Diverter.handle() inbound 1400-byte data segment, IPv${family}, 10k flows`, {
    group: `handle-in-${family}`,
    baseline: true,
  }, () => {
    s.inbound.set(s.inboundCopy.subarray(0, 60)); // restore the headers only
    if (s.d.handle(s.inbound, now++) !== 1) throw new Error("not rewritten");
  });
  Deno.bench(`Diverter.handle() outbound ACK, IPv${family}, 10k flows`, {
    group: `handle-out-${family}`,
  }, () => {
    s.outbound.set(s.outboundCopy);
    if (s.d.handle(s.outbound, now++) !== 1) throw new Error("not rewritten");
  });
  const view = new PacketView();
  const responderBytes = ip(family === 4 ? "192.0.2.1" : "2001:db8:1::1");
  Deno.bench(`restoring headers only (the loop overhead above), IPv${family}`, {
    group: `handle-in-${family}`,
  }, () => {
    s.inbound.set(s.inboundCopy.subarray(0, 60));
  });
  Deno.bench(
    `parsePacket() + rewriteDestination(), IPv${family}`,
    { group: `pieces-${family}` },
    () => {
      s.inbound.set(s.inboundCopy.subarray(0, 60));
      parsePacket(s.inbound, view);
      rewriteDestination(s.inbound, view, responderBytes, 0, RESPONDER_PORT);
    },
  );
  Deno.bench(`full TCP checksum of the 1400-byte segment (what incremental avoids), IPv${family}`, {
    group: `pieces-${family}`,
  }, () => {
    parsePacket(s.inboundCopy, view);
    computeTcpChecksum(s.inboundCopy, view);
  });
}
