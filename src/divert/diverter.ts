/**
 * The packet path (the paper's PFM, in userspace): for every packet the NFQUEUE worker reads,
 * decide accept / accept-rewritten / drop, rewriting addresses in place.
 *
 * - Inbound: TCP to a protected address (`protect`) and port (`ports`). A SYN without ACK is
 *   recorded in the SynCache (half-open: which server this client address and port asked for, in
 *   fixed typed arrays, no object) and its destination becomes the local responder
 *   (`responder4`/`responder6`, `responderPort`); the client's handshake ACK turns the entry into
 *   a Flow (FlowTable), and every later packet of the flow is rewritten the same way. Packets of
 *   unknown flows pass unmodified: the real server answers them (with RST, unless the connection
 *   was opened directly while SSG was down — such connections keep working).
 * - Outbound: TCP from the responder address and port. Looked up by destination (the client), in
 *   the FlowTable then (the SYN-ACK) the SynCache; the source becomes the original server address
 *   and port. Unknown → drop: the responder's own
 *   address must never reach a client (a stray RST from the local stack after a flow ended, for
 *   example).
 * - Anything else passes unmodified. The firewall queues only the two kinds above (four with
 *   the relay source, below), so "anything else" is rare: a misconfiguration or a packet we
 *   cannot read (a fragment: see packet_view.ts).
 *
 * The relay source (`relay.source: client`, option `relay`): SSG's own relay connection to the
 * server leaves with the CLIENT's address, so the server's access rules, mynetworks, SPF and logs
 * see the real client. Two more kinds of packets, told apart from the diverted flow by the hook
 * they arrive on and by the direction of the server port:
 * - Relay out (LOCAL_OUT hook only): from a port of the relay range to a protected address and
 *   port. The connector bound that socket to the port and registered, in shared memory
 *   (RelayRegistry), which client it speaks for, before connecting; the SYN creates a relay flow
 *   and every packet's source becomes the client's address and, when the server's route to the
 *   client is proven (FLAG_KEEP_PORT), the client's own port — else the socket's local port.
 * - Relay in (PRE_ROUTING hook only): FROM a protected address and port, to anything: the server's
 *   replies, addressed to the client and routed through the gateway. A relay flow's replies get
 *   their destination rewritten back to the relay socket's local address and port; anything else
 *   (a connection opened directly while SSG was down) passes unmodified.
 * Why this never collides with the diverted flow of the same client: on the wire the relay leg
 * C:cp → S:25 has the very 5-tuple of the client's own (diverted) connection — that is the point:
 * the server sees what a direct connection would show. On the gateway the two are apart by
 * construction: the client's packets (C → S:25) arrive on PRE_ROUTING with the server port as
 * DESTINATION; the relay's packets (C → S:25) are locally generated and only cross LOCAL_OUT;
 * the server's replies (S:25 → C) arrive on PRE_ROUTING with the server port as SOURCE, and the
 * responder's replies (S:25 → C, after rewrite) only cross LOCAL_OUT. Relay flows live in their
 * own FlowTable (same O(1) hash, same expiry, bounded by the port range), keyed by the wire
 * client address and port and checked against the server address and port; outbound packets find
 * their relay flow by local port (an array index). Rejected: a socket mark (SO_MARK) to tell the
 * relay socket's packets apart — Deno exposes no socket option before connect, and the port range
 * carries the same information while also narrowing the firewall rule; the interface (the
 * topology's business, not ours: client and server may share one).
 * Hazard, and why the client's port is kept only after proof: when the server's route to the
 * client bypasses the gateway, its SYN-ACK to C:cp reaches the real client, whose stack has a
 * connection C:cp ↔ S:25 (the diverted one): it answers with a challenge ACK, the server resets
 * with exactly the sequence number the client expects, and the client's session would die. So a
 * first contact (and every re-check) uses the socket's own port on the wire, and the connector
 * sets FLAG_KEEP_PORT only for servers whose SYN-ACK came back through the gateway.
 *
 * New flows are refused (the SYN dropped, never passed to the server: fail closed, the client
 * retries) when the client is blocked (`isBlocked`, the packet-level blacklist), when the table is
 * full of established flows (then also the handshake ACK of a half-open one is dropped until a
 * slot frees), or when there is no responder address of the packet's family. SYNs that also carry
 * RST or FIN are dropped.
 *
 * Alternatives rejected: kernel NAT (`dnat`/`redirect` with conntrack) does this rewrite faster,
 * but it keeps the original destination where userspace can only get it through conntrack
 * queries, it cannot enforce a per-SYN blacklist decision made by the policy, and it is not the
 * paper's design; it stays a possible fast path for later. Full checksum recomputation is simpler
 * but reads every payload byte (~0.6 µs for 1400 bytes here, ~10× the rest of `handle()`).
 *
 * Hot path: one reused PacketView, a port bitmap, CIDR tests on bytes, a flow lookup by hash over
 * the bytes, in-place rewriting with incremental checksums. Strings and objects are made only when
 * a flow starts or ends, and for the `isBlocked` call on SYNs.
 *
 * Flow events: "new" is told when the client completes the handshake (its first ACK), not at the
 * SYN, and "end" only for flows that were told: a spoofed SYN flood makes no events at all, so the
 * main thread's memory does not grow with it (issue 8: 400 k half-open flows posted as events
 * grew SSG's RSS by ~400 MB). The responder only needs the flow once the kernel accepts the
 * connection, which is after that ACK.
 *
 * Half-open connections never become objects (issue 8): a SYN flood only overwrites SynCache
 * slots, oldest first, so the packet Worker's memory is the same before, during and after it
 * (measured: RSS +138 MB kept after 1.4 M spoofed SYNs with half-open Flows; ~+25 MB with the
 * SynCache). A real client's entry survives `capacity` newer SYNs (0.6 s at 100 k SYNs/s with
 * 65,536 entries), far more than a handshake round trip; established flows are never displaced.
 * Rejected: a mapping with no state at all — the responder's SYN-ACK carries nothing the server
 * address could be derived from (one listener for every protected address), and making the
 * responder's ISN a cookie would mean translating sequence numbers for the whole connection.
 *
 * Security: untrusted bytes — everything in the packet is chosen by the client. A non-SYN packet
 * is rewritten only when client address, client port, server address and server port all match
 * the flow, so a stranger cannot inject into a diverted connection without the 4-tuple (and then
 * the responder's TCP checks sequence numbers as for any connection).
 */
import type { Cidr } from "../config/config.ts";
import {
  PacketView,
  parsePacket,
  ParseStatus,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  tcpSeq,
} from "../packet/packet_view.ts";
import { rewriteDestination, rewriteSource } from "../packet/rewrite.ts";
import type { Flow, FlowEndReason, FlowTable } from "../flow/flow_table.ts";
import { SynCache } from "../flow/syn_cache.ts";
import { FLAG_KEEP_PORT, RelayRegistration, type RelayRegistry } from "../flow/relay_registry.ts";

/** The netfilter hook a packet was queued from (NF_INET_*), as the queue reports it. */
export const PacketHook = {
  /** NF_INET_PRE_ROUTING: arriving from a network. */
  PreRouting: 0,
  /** NF_INET_LOCAL_OUT: generated by this host. */
  LocalOut: 3,
  /** Not known (tests of the diverted flow; relay packets are then never recognised). */
  Unknown: -1,
} as const;

/** What to do with a packet: the NFQUEUE verdict. */
export const DivertVerdict = {
  /** Accept, unmodified (no payload in the verdict). */
  Accept: 0,
  /** Accept; the packet bytes were rewritten in place and must be sent back as the payload. */
  AcceptModified: 1,
  /** Drop. */
  Drop: 2,
} as const;
/** 0 accept unmodified, 1 accept modified (bytes rewritten in place), 2 drop. */
export type DivertVerdict = typeof DivertVerdict[keyof typeof DivertVerdict];

/** A flow began (its SYN was diverted) or ended (expired, reset, replaced). */
export interface FlowEvent {
  /** "new" when the SYN was diverted, "end" when the flow left the table. */
  type: "new" | "end";
  /** IP version of the flow. */
  family: 4 | 6;
  /** Client address as text. */
  clientIp: string;
  /** Client TCP port. */
  clientPort: number;
  /** Original destination (the protected server) address as text. */
  serverIp: string;
  /** Original destination TCP port. */
  serverPort: number;
  /** Why the flow ended ("rst", "fin", "idle", "replaced", "removed"); only on "end". */
  reason?: string;
  /** The flow's id (unique per FlowTable), for logs. */
  id?: number;
}

/** Options of a Diverter. */
export interface DiverterOptions {
  /** Protected networks: only TCP to these is diverted. */
  protect: Cidr[];
  /** Protected destination ports (e.g. [25]). */
  ports: number[];
  /** Local IPv4 address of the responder (4 bytes); without it IPv4 SYNs are dropped. */
  responder4?: Uint8Array;
  /** Local IPv6 address of the responder (16 bytes); without it IPv6 SYNs are dropped. */
  responder6?: Uint8Array;
  /** TCP port the responder listens on. */
  responderPort: number;
  /** The flow table (its `onEnd` is taken over to emit "end" events). */
  table: FlowTable;
  /**
   * The half-open connections (SYN seen, handshake not yet acknowledged). Default: a SynCache of
   * the table's `max` entries (at most 262,144) and its `synTimeoutMs`.
   */
  synCache?: SynCache;
  /** Packet-level blacklist: true → the client's SYN is dropped. Called for SYNs only. */
  isBlocked?: (family: 4 | 6, addr: Uint8Array) => boolean;
  /** Told about every flow that starts or ends. Must not throw. */
  onFlow?: (e: FlowEvent) => void;
  /** Flows expired per handled packet at most (amortised expiry; default 2). */
  expireBudget?: number;
  /**
   * The relay source (see the module comment): the shared registry of client-mode relay sockets
   * and a FlowTable of its own for their flows. Absent: relay packets are never queued.
   */
  relay?: { registry: RelayRegistry; table: FlowTable };
}

/** A Diverter that cannot be built from its options. */
export class DiverterError extends Error {
  /** Creates the error; `name` is "DiverterError". */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DiverterError";
  }
}

/** Largest default SynCache (~90 bytes an entry, allocated at start: 23 MB). */
const MAX_DEFAULT_SYN_CACHE = 1 << 18;

function word(b: Uint8Array, o: number): number {
  return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
}

/** Decides and rewrites each queued packet. See the module comment. */
export class Diverter {
  /** The flow table (for tests and the owner's periodic `expire`). */
  readonly flows: FlowTable;
  /** The half-open connections (for tests and the owner's periodic `expire`). */
  readonly syns: SynCache;

  #view = new PacketView();
  #ports = new Uint8Array(65536);
  #net4: Int32Array;
  #mask4: Int32Array;
  /** IPv6 networks as 4 words of network and 4 of mask each. */
  #net6: Int32Array;
  #mask6: Int32Array;
  #responder4: Uint8Array | undefined;
  #responder6: Uint8Array | undefined;
  #r4w: number;
  #r6w0: number;
  #r6w1: number;
  #r6w2: number;
  #r6w3: number;
  #responderPort: number;
  #isBlocked: ((family: 4 | 6, addr: Uint8Array) => boolean) | undefined;
  #onFlow: ((e: FlowEvent) => void) | undefined;
  #expireBudget: number;

  // Counters (plain fields: cheap to bump).
  #in = 0;
  #out = 0;
  #other = 0;
  #unreadable = 0;
  #rewritten = 0;
  #passedUnknown = 0;
  #dropBlocked = 0;
  #dropFull = 0;
  #dropNoResponder = 0;
  #dropUnknownOutbound = 0;
  #dropUnreadableOutbound = 0;
  #dropUnreadableInbound = 0;
  #synRetransmits = 0;
  #syns = 0;
  #dropInvalid = 0;
  // Relay source.
  #relay: { registry: RelayRegistry; table: FlowTable } | undefined;
  #relayByPort: (Flow | undefined)[] = [];
  #reg = new RelayRegistration();
  #relayOut = 0;
  #relayIn = 0;
  #relayFlows = 0;
  #relayKeptPort = 0;
  #relayPassedUnregistered = 0;
  #relayPassedUnknownIn = 0;
  #dropRelayUnknownOut = 0;
  #dropRelayMismatch = 0;
  #dropRelayBusy = 0;

  /** Builds the lookup tables from `opts`; throws DiverterError on a bad address or port. */
  constructor(opts: DiverterOptions) {
    if (opts.responder4 && opts.responder4.length !== 4) {
      throw new DiverterError(`responder4 must be 4 bytes, got ${opts.responder4.length}`);
    }
    if (opts.responder6 && opts.responder6.length !== 16) {
      throw new DiverterError(`responder6 must be 16 bytes, got ${opts.responder6.length}`);
    }
    if (
      !Number.isInteger(opts.responderPort) || opts.responderPort < 1 || opts.responderPort > 65535
    ) {
      throw new DiverterError(`responderPort must be 1..65535, got ${opts.responderPort}`);
    }
    for (const p of opts.ports) {
      if (!Number.isInteger(p) || p < 1 || p > 65535) {
        throw new DiverterError(`Protected port must be 1..65535, got ${p}`);
      }
      this.#ports[p] = 1;
    }
    const v4 = opts.protect.filter((c) => c.family === 4);
    this.#net4 = new Int32Array(v4.length);
    this.#mask4 = new Int32Array(v4.length);
    v4.forEach((c, i) => {
      const mask = c.prefix === 0 ? 0 : (~0 << (32 - c.prefix));
      this.#mask4[i] = mask;
      this.#net4[i] = word(c.bytes, 0) & mask;
    });
    const v6 = opts.protect.filter((c) => c.family === 6);
    this.#net6 = new Int32Array(4 * v6.length);
    this.#mask6 = new Int32Array(4 * v6.length);
    v6.forEach((c, i) => {
      for (let w = 0; w < 4; w++) {
        const bits = Math.max(0, Math.min(32, c.prefix - 32 * w));
        const mask = bits === 0 ? 0 : (~0 << (32 - bits));
        this.#mask6[4 * i + w] = mask;
        this.#net6[4 * i + w] = word(c.bytes, 4 * w) & mask;
      }
    });
    this.#responder4 = opts.responder4 ? new Uint8Array(opts.responder4) : undefined;
    this.#responder6 = opts.responder6 ? new Uint8Array(opts.responder6) : undefined;
    this.#r4w = this.#responder4 ? word(this.#responder4, 0) : 0;
    const r6 = this.#responder6 ?? new Uint8Array(16);
    this.#r6w0 = word(r6, 0);
    this.#r6w1 = word(r6, 4);
    this.#r6w2 = word(r6, 8);
    this.#r6w3 = word(r6, 12);
    this.#responderPort = opts.responderPort;
    this.#isBlocked = opts.isBlocked;
    this.#onFlow = opts.onFlow;
    this.#expireBudget = opts.expireBudget ?? 2;
    this.flows = opts.table;
    this.syns = opts.synCache ?? new SynCache({
      capacity: Math.min(opts.table.max, MAX_DEFAULT_SYN_CACHE),
      synTimeoutMs: opts.table.synTimeoutMs,
    });
    const previous = opts.table.onEnd;
    opts.table.onEnd = (flow: Flow, reason: FlowEndReason) => {
      previous?.(flow, reason);
      // Only flows whose "new" was told (established ones): a half-open flow was never mirrored.
      if (flow.established) this.#emit("end", flow, reason);
    };
    if (opts.relay) {
      if (opts.relay.table === opts.table) {
        throw new DiverterError("the relay flows need a FlowTable of their own");
      }
      this.#relay = opts.relay;
      const { registry, table } = opts.relay;
      this.#relayByPort = new Array<Flow | undefined>(registry.size).fill(undefined);
      const before = table.onEnd;
      table.onEnd = (flow: Flow, reason: FlowEndReason) => {
        before?.(flow, reason);
        const i = flow.localPort - registry.first;
        if (this.#relayByPort[i] === flow) this.#relayByPort[i] = undefined;
      };
    }
  }

  #emit(type: "new" | "end", f: Flow, reason?: string): void {
    if (!this.#onFlow) return;
    const e: FlowEvent = {
      type,
      family: f.family,
      clientIp: f.clientIp,
      clientPort: f.clientPort,
      serverIp: f.serverIp,
      serverPort: f.serverPort,
      id: f.id,
    };
    if (reason !== undefined) e.reason = reason;
    this.#onFlow(e);
  }

  #isProtected(p: Uint8Array, v: PacketView): boolean {
    return this.#isProtectedAt(p, v.dstOffset, v.family);
  }

  #isProtectedAt(p: Uint8Array, dstOffset: number, family: 4 | 6): boolean {
    if (family === 4) {
      const a = word(p, dstOffset);
      const nets = this.#net4;
      const masks = this.#mask4;
      for (let i = 0; i < nets.length; i++) if ((a & masks[i]) === nets[i]) return true;
      return false;
    }
    const o = dstOffset;
    const a0 = word(p, o), a1 = word(p, o + 4), a2 = word(p, o + 8), a3 = word(p, o + 12);
    const nets = this.#net6;
    const masks = this.#mask6;
    for (let i = 0; i < nets.length; i += 4) {
      if (
        (a0 & masks[i]) === nets[i] && (a1 & masks[i + 1]) === nets[i + 1] &&
        (a2 & masks[i + 2]) === nets[i + 2] && (a3 & masks[i + 3]) === nets[i + 3]
      ) return true;
    }
    return false;
  }

  /** Whether the address at `o` is the responder's address of `family`. */
  #isResponder(p: Uint8Array, o: number, family: 4 | 6): boolean {
    if (family === 4) return this.#responder4 !== undefined && word(p, o) === this.#r4w;
    return this.#responder6 !== undefined && word(p, o) === this.#r6w0 &&
      word(p, o + 4) === this.#r6w1 && word(p, o + 8) === this.#r6w2 &&
      word(p, o + 12) === this.#r6w3;
  }

  /**
   * Decides one packet at time `now` (ms; the FlowTable's clock). May rewrite `packet` in place;
   * returns AcceptModified exactly when it did.
   */
  handle(packet: Uint8Array, now: number, hook: number = PacketHook.Unknown): DivertVerdict {
    const v = this.#view;
    const status = parsePacket(packet, v);
    if (this.#expireBudget > 0) {
      this.flows.expire(now, this.#expireBudget);
      this.syns.expire(now, this.#expireBudget);
      this.#relay?.table.expire(now, this.#expireBudget);
    }
    if (status !== ParseStatus.Tcp) return this.#handleUnreadable(packet);

    if (v.srcPort === this.#responderPort && this.#isResponder(packet, v.srcOffset, v.family)) {
      return this.#outbound(packet, v, now);
    }
    const relay = this.#relay;
    if (
      relay !== undefined && hook === PacketHook.LocalOut && relay.registry.inRange(v.srcPort) &&
      this.#ports[v.dstPort] === 1 && this.#isProtected(packet, v)
    ) {
      return this.#relayOutbound(packet, v, now, relay);
    }
    if (this.#ports[v.dstPort] === 1 && this.#isProtected(packet, v)) {
      return this.#inbound(packet, v, now);
    }
    if (
      relay !== undefined && hook === PacketHook.PreRouting && this.#ports[v.srcPort] === 1 &&
      this.#isProtectedAt(packet, v.srcOffset, v.family)
    ) {
      return this.#relayInbound(packet, v, now, relay.table);
    }
    this.#other++;
    return DivertVerdict.Accept;
  }

  /** A packet of a relay socket (LOCAL_OUT, from the relay port range to a protected server). */
  #relayOutbound(
    packet: Uint8Array,
    v: PacketView,
    now: number,
    relay: { registry: RelayRegistry; table: FlowTable },
  ): DivertVerdict {
    this.#relayOut++;
    const { registry, table } = relay;
    const i = v.srcPort - registry.first;
    let flow = this.#relayByPort[i];
    const flags = v.flags;
    if ((flags & (TCP_SYN | TCP_ACK)) === TCP_SYN && (flags & (TCP_RST | TCP_FIN)) === 0) {
      const reg = this.#reg;
      if (!registry.read(v.srcPort, reg)) {
        // Not a relay socket of ours (some other program bound a port of the range): it keeps
        // the gateway's address, as SSG's own mail does.
        this.#relayPassedUnregistered++;
        return flow === undefined
          ? DivertVerdict.Accept
          : this.#relayRewriteOut(packet, v, flow, now);
      }
      const seq = tcpSeq(packet, v);
      if (flow !== undefined && flow.gen === reg.gen && flow.synSeq === seq) {
        return this.#relayRewriteOut(packet, v, flow, now); // retransmitted SYN
      }
      if (
        reg.family !== v.family || reg.serverPort !== v.dstPort ||
        !sameBytes(reg.server, 0, packet, v.dstOffset, v.addrLength)
      ) {
        // The registration is for another server: a bug or a stale slot. Fail closed.
        this.#dropRelayMismatch++;
        return DivertVerdict.Drop;
      }
      if (flow !== undefined) table.remove(flow, "replaced");
      // The wire port: the client's own when the route is proven and no other relay flow holds
      // it; else the socket's local port; else (both held) drop: the SYN is retransmitted.
      let wirePort = -1;
      if (
        (reg.flags & FLAG_KEEP_PORT) !== 0 &&
        table.find(v.family, reg.client, 0, reg.clientPort) === undefined
      ) {
        wirePort = reg.clientPort;
        this.#relayKeptPort++;
      } else if (table.find(v.family, reg.client, 0, v.srcPort) === undefined) {
        wirePort = v.srcPort;
      }
      if (wirePort < 0) {
        this.#dropRelayBusy++;
        return DivertVerdict.Drop;
      }
      flow = table.add(
        v.family,
        reg.client,
        0,
        wirePort,
        packet,
        v.dstOffset,
        v.dstPort,
        seq,
        now,
      );
      if (flow === undefined) {
        this.#dropRelayBusy++;
        return DivertVerdict.Drop;
      }
      flow.local = packet.slice(v.srcOffset, v.srcOffset + v.addrLength);
      flow.localPort = v.srcPort;
      flow.gen = reg.gen;
      this.#relayByPort[i] = flow;
      this.#relayFlows++;
      return this.#relayRewriteOut(packet, v, flow, now);
    }
    if (flow === undefined) {
      if (registry.read(v.srcPort, this.#reg)) {
        // A registered socket whose flow is gone (expired): sending this with the gateway's
        // address would be a packet the server never saw the SYN of. Drop.
        this.#dropRelayUnknownOut++;
        return DivertVerdict.Drop;
      }
      this.#relayPassedUnregistered++;
      return DivertVerdict.Accept;
    }
    if (!this.#sameServer(packet, v, flow)) {
      this.#dropRelayMismatch++;
      return DivertVerdict.Drop;
    }
    return this.#relayRewriteOut(packet, v, flow, now);
  }

  #relayRewriteOut(packet: Uint8Array, v: PacketView, flow: Flow, now: number): DivertVerdict {
    const table = this.#relay!.table;
    const flags = v.flags;
    if ((flags & TCP_RST) !== 0) table.noteRst(flow, now);
    else {
      if ((flags & TCP_FIN) !== 0) table.noteFin(flow, true, now);
      if (!flow.established && (flags & (TCP_ACK | TCP_SYN)) === TCP_ACK) {
        table.noteEstablished(flow, now);
      }
      table.touch(flow, now);
    }
    rewriteSource(packet, v, flow.client, 0, flow.clientPort);
    this.#rewritten++;
    return DivertVerdict.AcceptModified;
  }

  /** A packet from a protected server's port arriving from the network (PRE_ROUTING). */
  #relayInbound(packet: Uint8Array, v: PacketView, now: number, table: FlowTable): DivertVerdict {
    this.#relayIn++;
    const flow = table.find(v.family, packet, v.dstOffset, v.dstPort);
    if (
      flow === undefined || flow.local === undefined || v.srcPort !== flow.serverPort ||
      !sameBytes(flow.server, 0, packet, v.srcOffset, v.addrLength)
    ) {
      // Not a relay flow: a connection opened directly (while SSG was down, or not diverted).
      this.#relayPassedUnknownIn++;
      return DivertVerdict.Accept;
    }
    const flags = v.flags;
    if ((flags & TCP_RST) !== 0) table.noteRst(flow, now);
    else {
      if ((flags & TCP_FIN) !== 0) table.noteFin(flow, false, now);
      table.touch(flow, now);
    }
    rewriteDestination(packet, v, flow.local, 0, flow.localPort);
    this.#rewritten++;
    return DivertVerdict.AcceptModified;
  }

  #handleUnreadable(packet: Uint8Array): DivertVerdict {
    this.#unreadable++;
    // Security: whatever we cannot read must still not carry the responder's address out.
    const version = packet.length > 0 ? packet[0] >> 4 : 0;
    if (
      (version === 4 && packet.length >= 20 && this.#isResponder(packet, 12, 4)) ||
      (version === 6 && packet.length >= 40 && this.#isResponder(packet, 8, 6))
    ) {
      this.#dropUnreadableOutbound++;
      return DivertVerdict.Drop;
    }
    // Security: the firewall queues only TCP to the protected servers' ports, so an unreadable
    // packet bound for a protected server is a fragment (the first one: later fragments carry no
    // port and are never queued), a source-routed packet or one with a routing header. Passing it
    // on would let a client reach the real server around the gateway (a fragmented SYN opens a
    // connection SSG never sees). Legitimate SMTP does not need any of these (PMTUD sets DF), so
    // fail closed: drop it.
    if (
      (version === 4 && packet.length >= 20 && this.#isProtectedAt(packet, 16, 4)) ||
      (version === 6 && packet.length >= 40 && this.#isProtectedAt(packet, 24, 6))
    ) {
      this.#dropUnreadableInbound++;
      return DivertVerdict.Drop;
    }
    return DivertVerdict.Accept;
  }

  #inbound(packet: Uint8Array, v: PacketView, now: number): DivertVerdict {
    this.#in++;
    const flags = v.flags;
    const family = v.family;
    const table = this.flows;
    const flow = table.find(family, packet, v.srcOffset, v.srcPort);
    const responder = family === 4 ? this.#responder4 : this.#responder6;
    if ((flags & TCP_SYN) !== 0 && (flags & (TCP_RST | TCP_FIN)) !== 0) {
      // SYN with RST or FIN: no TCP opens a connection so (RFC 9293 §3.10.7.2 ignores or resets
      // them); it is a scanner's probe. Neither divert it nor let it probe the real server.
      this.#dropInvalid++;
      return DivertVerdict.Drop;
    }
    if ((flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) {
      this.#syns++;
      if (this.#isBlocked?.(family, packet.subarray(v.srcOffset, v.srcOffset + v.addrLength))) {
        this.#dropBlocked++;
        return DivertVerdict.Drop;
      }
      if (responder === undefined) {
        this.#dropNoResponder++;
        return DivertVerdict.Drop;
      }
      const seq = tcpSeq(packet, v);
      if (
        flow !== undefined && !flow.closing && flow.synSeq === seq &&
        this.#sameServer(packet, v, flow)
      ) {
        // A retransmitted SYN (RFC 9293 §3.8.1) of an established flow: keep the flow.
        this.#synRetransmits++;
        table.touch(flow, now);
      } else {
        const syns = this.syns;
        const s = syns.find(family, packet, v.srcOffset, v.srcPort, now);
        if (
          s >= 0 && syns.seq(s) === seq &&
          syns.sameServer(s, packet, v.dstOffset, v.addrLength, v.dstPort)
        ) {
          this.#synRetransmits++; // a retransmitted SYN of a half-open connection
        } else {
          // A new connection, or the client reused its port: the old flow ends now.
          if (flow !== undefined) table.remove(flow, "replaced");
          if (table.size >= table.max) {
            // Fail closed while every slot holds an established flow (the client retries).
            table.expire(now, 64);
            if (table.size >= table.max) {
              this.#dropFull++;
              return DivertVerdict.Drop;
            }
          }
          // Half-open state lives in the fixed SynCache, never as a Flow: a SYN flood allocates
          // nothing (issue 8). No "new" event either: that is told at the handshake ACK.
          syns.insert(
            family,
            packet,
            v.srcOffset,
            v.srcPort,
            packet,
            v.dstOffset,
            v.dstPort,
            seq,
            now,
          );
        }
      }
      rewriteDestination(packet, v, responder, 0, this.#responderPort);
      this.#rewritten++;
      return DivertVerdict.AcceptModified;
    }
    if (flow === undefined || !this.#sameServer(packet, v, flow)) {
      return this.#inboundHalfOpen(packet, v, now, responder);
    }
    if ((flags & TCP_RST) !== 0) table.noteRst(flow, now);
    else {
      if ((flags & TCP_FIN) !== 0) table.noteFin(flow, true, now);
      table.touch(flow, now);
    }
    rewriteDestination(packet, v, responder!, 0, this.#responderPort);
    this.#rewritten++;
    return DivertVerdict.AcceptModified;
  }

  /**
   * A client packet (not a SYN) without an established flow: part of a handshake in the SynCache
   * (its ACK makes the Flow), or of a connection SSG never diverted (passed unmodified).
   */
  #inboundHalfOpen(
    packet: Uint8Array,
    v: PacketView,
    now: number,
    responder: Uint8Array | undefined,
  ): DivertVerdict {
    const syns = this.syns;
    const s = responder === undefined
      ? -1
      : syns.find(v.family, packet, v.srcOffset, v.srcPort, now);
    if (s < 0 || !syns.sameServer(s, packet, v.dstOffset, v.addrLength, v.dstPort)) {
      this.#passedUnknown++;
      return DivertVerdict.Accept;
    }
    const flags = v.flags;
    if ((flags & TCP_RST) !== 0) {
      syns.remove(s); // the client gave up; the responder's half-open socket is reset too
    } else if ((flags & TCP_ACK) !== 0) {
      // The client's handshake ACK: only now does the connection get a Flow.
      const table = this.flows;
      const flow = table.add(
        v.family,
        packet,
        v.srcOffset,
        v.srcPort,
        packet,
        v.dstOffset,
        v.dstPort,
        syns.seq(s),
        now,
      );
      if (flow === undefined) {
        // Full of established flows: keep the half-open entry; the client retransmits.
        this.#dropFull++;
        return DivertVerdict.Drop;
      }
      syns.remove(s);
      table.noteEstablished(flow, now);
      // Told now, before this ACK's verdict is sent (the Worker posts events first), so the
      // responder knows the flow when the kernel hands it the connection.
      this.#emit("new", flow);
      if ((flags & TCP_FIN) !== 0) table.noteFin(flow, true, now);
    }
    rewriteDestination(packet, v, responder!, 0, this.#responderPort);
    this.#rewritten++;
    return DivertVerdict.AcceptModified;
  }

  #sameServer(packet: Uint8Array, v: PacketView, flow: Flow): boolean {
    if (v.dstPort !== flow.serverPort) return false;
    const s = flow.server;
    const o = v.dstOffset;
    for (let i = 0; i < v.addrLength; i++) if (packet[o + i] !== s[i]) return false;
    return true;
  }

  #outbound(packet: Uint8Array, v: PacketView, now: number): DivertVerdict {
    this.#out++;
    const flow = this.flows.find(v.family, packet, v.dstOffset, v.dstPort);
    if (flow === undefined) {
      // The responder's SYN-ACK (or its RST) to a half-open connection.
      const syns = this.syns;
      const s = syns.find(v.family, packet, v.dstOffset, v.dstPort, now);
      if (s < 0 || syns.family(s) !== v.family) {
        this.#dropUnknownOutbound++;
        return DivertVerdict.Drop;
      }
      rewriteSource(packet, v, syns.addresses, syns.serverOffset(s), syns.serverPort(s));
      if ((v.flags & TCP_RST) !== 0) syns.remove(s);
      this.#rewritten++;
      return DivertVerdict.AcceptModified;
    }
    const flags = v.flags;
    if ((flags & TCP_RST) !== 0) this.flows.noteRst(flow, now);
    else {
      if ((flags & TCP_FIN) !== 0) this.flows.noteFin(flow, false, now);
      this.flows.touch(flow, now);
    }
    rewriteSource(packet, v, flow.server, 0, flow.serverPort);
    this.#rewritten++;
    return DivertVerdict.AcceptModified;
  }

  /** Removes flows that are due at `now` (all of them); returns how many. Call from a timer. */
  expire(now: number): number {
    return this.flows.expire(now) + this.syns.expire(now) + (this.#relay?.table.expire(now) ?? 0);
  }

  /** The relay flows' table, when the relay source is on (for tests and the owner's timer). */
  get relayFlows(): FlowTable | undefined {
    return this.#relay?.table;
  }

  /** Counters: packets, rewrites, drops by reason, flows. */
  stats(): Record<string, number> {
    const t = this.flows.stats();
    const h = this.syns.stats();
    return {
      packetsIn: this.#in,
      packetsOut: this.#out,
      packetsOther: this.#other,
      packetsUnreadable: this.#unreadable,
      rewritten: this.#rewritten,
      passedUnknownInbound: this.#passedUnknown,
      synRetransmits: this.#synRetransmits,
      synsSeen: this.#syns,
      droppedBlocked: this.#dropBlocked,
      droppedTableFull: this.#dropFull,
      droppedNoResponder: this.#dropNoResponder,
      droppedUnknownOutbound: this.#dropUnknownOutbound,
      droppedUnreadableOutbound: this.#dropUnreadableOutbound,
      droppedUnreadableInbound: this.#dropUnreadableInbound,
      droppedInvalid: this.#dropInvalid,
      dropped: this.#dropBlocked + this.#dropFull + this.#dropNoResponder +
        this.#dropUnknownOutbound + this.#dropUnreadableOutbound +
        this.#dropUnreadableInbound + this.#dropInvalid + this.#dropRelayUnknownOut +
        this.#dropRelayMismatch + this.#dropRelayBusy,
      flowsActive: t.active,
      flowsHalfOpen: h.size + t.halfOpen,
      flowsCreated: t.created,
      synCacheInserted: h.inserted,
      flowsExpired: t.endedRst + t.endedFin + t.endedIdle + t.endedHandshake + h.expired,
      flowsEndedHandshake: t.endedHandshake + h.expired,
      flowsEvicted: t.endedEvicted + h.evicted,
      flowsEndedRst: t.endedRst,
      flowsEndedFin: t.endedFin,
      flowsEndedIdle: t.endedIdle,
      flowsReplaced: t.endedReplaced,
      flowsRemoved: t.endedRemoved,
      ...this.#relayStats(),
    };
  }

  #relayStats(): Record<string, number> {
    if (!this.#relay) return {};
    const t = this.#relay.table.stats();
    return {
      relayPacketsOut: this.#relayOut,
      relayPacketsIn: this.#relayIn,
      relayFlowsCreated: this.#relayFlows,
      relayFlowsActive: t.active,
      relayFlowsKeptClientPort: this.#relayKeptPort,
      relayPassedUnregistered: this.#relayPassedUnregistered,
      relayPassedUnknownInbound: this.#relayPassedUnknownIn,
      relayDroppedUnknownOutbound: this.#dropRelayUnknownOut,
      relayDroppedMismatch: this.#dropRelayMismatch,
      relayDroppedBusy: this.#dropRelayBusy,
    };
  }
}

function sameBytes(a: Uint8Array, ao: number, b: Uint8Array, bo: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}
