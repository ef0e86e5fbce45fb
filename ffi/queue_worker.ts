/// <reference lib="deno.worker" />
/**
 * The queue Worker: owns the NFQUEUE socket and the Diverter, and runs the packet loop on its own
 * thread so that the main event loop (SMTP sessions) never waits for packet I/O.
 *
 * Loop: block in `recvmmsg` (≤ 50 ms, SO_RCVTIMEO) for the first datagram, take every other one
 * already waiting (up to 32), run each packet through `Diverter.handle()` (which rewrites in
 * place), encode all verdicts into one buffer, post the batch's flow events to the main thread,
 * THEN send the verdicts with one `send()`. Posting first means a flow's "new" event (told when
 * the client's handshake ACK passes, see Diverter) is on its way before that ACK is released, so
 * the main thread normally knows the flow before the kernel hands the connection to the responder
 * (the DivertService still offers `waitFor` for the rare race). Half-open flows are never posted:
 * a SYN flood costs the main thread nothing; it is logged here as one `divert.pressure` line per
 * PRESSURE_INTERVAL_MS with the interval's counts.
 *
 * No Promise and no JS callback per packet: the only awaits are the yields to this Worker's own
 * event loop when the main thread has announced a message (`block`, `stats`, `stop`) through a
 * shared counter; see `sleep0`.
 *
 * What it trusts: the kernel's netlink framing (bounds-checked anyway). Packet bytes are
 * untrusted and only the Diverter parses them.
 */
import { Diverter, type FlowEvent } from "../src/divert/diverter.ts";
import { FlowTable } from "../src/flow/flow_table.ts";
import { RelayRegistry } from "../src/flow/relay_registry.ts";
import { formatIp } from "../src/packet/ip_address.ts";
import { BlockList } from "./block_list.ts";
import { cidrContains, parseCidr } from "../src/packet/cidr.ts";
import type { Cidr } from "../src/config/config.ts";
import { canonicalIp } from "./ip_key.ts";
import { Errno, NfqError } from "./nfq_error.ts";
import { computeTcpChecksum } from "../src/packet/checksum.ts";
import { PacketView, parsePacket, ParseStatus } from "../src/packet/packet_view.ts";
import {
  NF_ACCEPT,
  NF_DROP,
  NF_INET_PRE_ROUTING,
  NFQA_SKB_CSUMNOTREADY,
  NFQA_SKB_GSO,
  parseDatagram,
  QueuedPacket,
  VerdictWriter,
} from "./nfnetlink.ts";
import { MAX_VERDICT_REFS, NfqSocket } from "./nfq_socket.ts";
import type { FlowEventMessage, FromWorker, ToWorker, WorkerStart } from "./queue_protocol.ts";

/** Bytes of verdicts sent per `send()` at most (below the socket's send buffer, see nfq_socket). */
const SEND_CAPACITY = 256 * 1024;
/** Most blacklist entries kept. */
const MAX_BLOCKED = 65536;
/** Least time between two warnings of the same kind, ms. */
const WARN_INTERVAL_MS = 10_000;
/** Interval of the `divert.pressure` line, ms (one line per interval while under pressure). */
const PRESSURE_INTERVAL_MS = 10_000;
/**
 * SYNs per interval above which the interval is logged even without evictions: ~100 new
 * connections a second is far above what a mail gateway sees from real clients.
 */
const PRESSURE_SYNS = 1_000;

function post(msg: FromWorker): void {
  self.postMessage(msg);
}

/** The running state of the Worker. */
class QueueLoop {
  readonly sock: NfqSocket;
  readonly table: FlowTable;
  readonly diverter: Diverter;
  readonly writer: VerdictWriter;
  readonly mark: number;
  readonly blocked = new BlockList(MAX_BLOCKED);
  /** Static blacklisted networks (the rule file's `blacklist.clients`), replaced on reload. */
  blockedNetworks: Cidr[] = [];
  stopping = false;
  events: FlowEventMessage[] = [];
  counters = {
    nfqPackets: 0,
    nfqBatches: 0,
    nfqMaxBatch: 0,
    nfqSends: 0,
    nfqMalformed: 0,
    nfqGso: 0,
    nfqFullChecksums: 0,
    nfqNoPayload: 0,
    nfqCapped: 0,
    verdictErrors: 0,
    sendErrors: 0,
    diverterErrors: 0,
    flowEventPosts: 0,
  };
  #lastWarn = new Map<string, number>();
  #pressureAt = 0;
  #pressureBase = { syns: 0, evicted: 0, full: 0, handshake: 0, created: 0 };
  #pkt = new QueuedPacket();
  #view = new PacketView();
  #now = 0;
  #sink;

  constructor(sock: NfqSocket, start: WorkerStart) {
    this.sock = sock;
    this.mark = start.mark >>> 0;
    // Rewritten packets are sent back from the receive buffer itself (no copy; see VerdictWriter).
    this.writer = new VerdictWriter(start.queue.num, SEND_CAPACITY, {
      source: sock.buffer,
      maxRefs: MAX_VERDICT_REFS,
    });
    this.table = new FlowTable({ max: start.flows.max, idleSeconds: start.flows.idleSeconds });
    const relay = start.relay
      ? {
        registry: RelayRegistry.attach(start.relay.first, start.relay.last, start.relay.words),
        table: new FlowTable({
          max: start.relay.last - start.relay.first + 1,
          idleSeconds: start.relay.idleSeconds,
        }),
      }
      : undefined;
    this.diverter = new Diverter({
      relay,
      protect: start.protect,
      ports: start.ports,
      responder4: start.responder4,
      responder6: start.responder6,
      responderPort: start.responderPort,
      table: this.table,
      isBlocked: (family, addr) => this.#isBlocked(family, addr),
      onFlow: (e: FlowEvent) => this.events.push({ ...e }),
    });
    const buf = sock.buffer;
    this.#sink = {
      packet: (p: QueuedPacket) => this.#packet(buf, p),
      error: (errno: number) => {
        // An acknowledgement with error for one of our verdicts (e.g. ENOENT: unknown packet id).
        if (errno === Errno.EPERM) {
          // Kernels that refuse payload mangling inside user namespaces answer EPERM to every
          // rewritten verdict (performance-anchors.md §2.3): nothing diverted can work.
          this.counters.verdictErrors++;
          this.warn("divert.mangle_refused", {
            errno,
            hint: "the kernel refuses rewritten packets here (a user namespace or container?)",
          });
        } else if (errno !== 0) {
          this.counters.verdictErrors++;
          this.warn("divert.verdict_error", { errno });
        }
      },
      malformed: () => this.counters.nfqMalformed++,
    };
  }

  #isBlocked(family: 4 | 6, addr: Uint8Array): boolean {
    // Called for SYNs only; formatting the address is cheap next to a new flow.
    if (this.blocked.size > 0 && this.blocked.has(formatIp(addr, 0, family))) return true;
    for (const c of this.blockedNetworks) {
      if (c.family === family && cidrContains(c, addr, 0, family)) return true;
    }
    return false;
  }

  #packet(buf: Uint8Array, p: QueuedPacket): void {
    this.counters.nfqPackets++;
    const w = this.writer;
    if (p.payloadLength === 0) {
      // Copy mode is full-packet, so this does not happen; never hold a packet we cannot judge.
      this.counters.nfqNoPayload++;
      if (!w.fits(0, false)) this.flush();
      w.put(p.id, NF_ACCEPT);
      return;
    }
    const packet = buf.subarray(p.payloadStart, p.payloadStart + p.payloadLength);
    let v: number;
    try {
      v = this.diverter.handle(packet, this.#now, p.hook);
    } catch (e) {
      // A bug must not kill the packet loop (the queue would be unbound: bypass). Fail closed
      // for this packet, count it, say so.
      this.counters.diverterErrors++;
      this.warn("divert.diverter_error", { error: e instanceof Error ? e.message : String(e) });
      v = 2;
    }
    if ((p.skbInfo & NFQA_SKB_GSO) !== 0) this.counters.nfqGso++;
    if (v === 1 && (p.skbInfo & NFQA_SKB_CSUMNOTREADY) !== 0) {
      // A partial checksum (GSO flag on, see nfq_socket.ts): after a payload verdict the kernel
      // no longer completes it, so write the full one (the rewrite already changed the bytes).
      if (parsePacket(packet, this.#view) === ParseStatus.Tcp) {
        const c = computeTcpChecksum(packet, this.#view);
        const o = this.#view.tcpOffset + 16;
        packet[o] = c >> 8;
        packet[o + 1] = c & 0xff;
        this.counters.nfqFullChecksums++;
      } else v = 2; // rewritten yet unreadable cannot happen; fail closed anyway
    }
    if (v === 1 && p.capLen !== 0) {
      // A truncated copy cannot be returned rewritten (the verdict would cut the packet short);
      // the copy range is 65531 bytes, so this needs a GSO packet of 65532-65535 bytes (TSO
      // stays below; a GRO packet of an odd MSS could reach it) or an MTU above 65531. Fail
      // closed (counted): TCP retransmits the data as smaller packets.
      this.counters.nfqCapped++;
      v = 2;
    }
    const mark = v === 1 && this.mark !== 0 && p.hook === NF_INET_PRE_ROUTING
      ? this.mark
      : undefined;
    const payloadLength = v === 1 ? packet.length : 0;
    if (!w.fits(payloadLength, mark !== undefined)) this.flush();
    if (v === 0) w.put(p.id, NF_ACCEPT);
    else if (v === 1) w.put(p.id, NF_ACCEPT, packet, mark);
    else w.put(p.id, NF_DROP);
  }

  /** Handles the `n` datagrams of the last receive. */
  batch(n: number): void {
    this.#now = Date.now();
    this.counters.nfqBatches++;
    if (n > this.counters.nfqMaxBatch) this.counters.nfqMaxBatch = n;
    const sock = this.sock;
    for (let i = 0; i < n; i++) {
      const s = sock.start(i);
      parseDatagram(sock.buffer, sock.view, s, s + sock.length(i), this.#sink, this.#pkt);
    }
    this.flush();
  }

  /** Posts pending flow events, then sends pending verdicts (in that order: see module doc). */
  flush(): void {
    this.postEvents();
    const w = this.writer;
    if (w.count === 0) return;
    try {
      this.sock.sendVerdicts(w);
      this.counters.nfqSends++;
    } catch (e) {
      // The packets stay queued in the kernel until the queue is torn down; count and go on.
      this.counters.sendErrors++;
      this.warn("divert.send_error", { error: e instanceof Error ? e.message : String(e) });
    }
    w.clear();
  }

  postEvents(): void {
    if (this.events.length === 0) return;
    post({ type: "flows", events: this.events });
    this.counters.flowEventPosts++;
    this.events = [];
  }

  /** Expires idle flows when no packets arrive (the table only expires amortised per packet). */
  idle(): void {
    this.table.expire(Date.now(), 1024);
    this.diverter.syns.expire(Date.now(), 1024);
    this.diverter.relayFlows?.expire(Date.now(), 1024);
    this.postEvents();
  }

  /**
   * Once per PRESSURE_INTERVAL_MS: when the interval saw more than PRESSURE_SYNS SYNs, or any
   * half-open flow evicted or SYN dropped for a full table, posts one `divert.pressure` line with
   * the interval's counts (a SYN flood is logged as one line per interval, never one per SYN).
   */
  pressure(now: number): void {
    if (now - this.#pressureAt < PRESSURE_INTERVAL_MS) return;
    const first = this.#pressureAt === 0;
    const seconds = (now - this.#pressureAt) / 1000;
    this.#pressureAt = now;
    const d = this.diverter.stats();
    const cur = {
      syns: d.synsSeen,
      evicted: d.flowsEvicted,
      full: d.droppedTableFull,
      handshake: d.flowsEndedHandshake,
      created: d.flowsCreated,
    };
    const b = this.#pressureBase;
    this.#pressureBase = cur;
    if (first) return;
    const syns = cur.syns - b.syns;
    const evicted = cur.evicted - b.evicted;
    const full = cur.full - b.full;
    if (syns <= PRESSURE_SYNS && evicted === 0 && full === 0) return;
    post({
      type: "warning",
      event: "divert.pressure",
      fields: {
        seconds: Math.round(seconds),
        syns,
        synsPerSecond: Math.round(syns / seconds),
        flowsCreated: cur.created - b.created,
        halfOpen: d.flowsHalfOpen,
        flowsActive: d.flowsActive,
        max: this.table.max,
        evicted,
        tableFullDrops: full,
        handshakeTimeouts: cur.handshake - b.handshake,
        enobufs: this.sock.enobufs,
      },
    });
  }

  warn(event: string, fields: Record<string, string | number>): void {
    const now = Date.now();
    if ((this.#lastWarn.get(event) ?? 0) + WARN_INTERVAL_MS > now) return;
    this.#lastWarn.set(event, now);
    post({ type: "warning", event, fields });
  }

  stats(): Record<string, number> {
    const out: Record<string, number> = { ...this.counters };
    for (const [k, v] of Object.entries(this.diverter.stats())) out[k] = v;
    out.nfqEnobufs = this.sock.enobufs;
    out.nfqTruncated = this.sock.truncated;
    out.blockedAddresses = this.blocked.size;
    // This Worker's own V8 heap (the process RSS alone cannot tell it from the main thread's).
    const mem = Deno.memoryUsage();
    out.workerHeapUsedMb = Math.round(mem.heapUsed / 1048576);
    out.workerHeapTotalMb = Math.round(mem.heapTotal / 1048576);
    return out;
  }
}

let loop: QueueLoop | undefined;

/**
 * Gives this Worker's event loop a turn so that messages from the main thread are dispatched.
 *
 * Caution: measured on Deno 2.9, a MessageChannel round trip does NOT let the Worker's own
 * `onmessage` run (it starved for seconds), while `setTimeout(0)` does but is clamped to ~3 ms.
 * So the loop yields only when the main thread has announced a message (`control[0]`, bumped
 * with Atomics by DivertService for every post). Not on idle timeouts either: a packet arriving
 * during a clamped yield would wait for it.
 */
function sleep0(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

/** Messages the main thread announced vs. handled here (see sleep0). */
let control: Int32Array | undefined;
let handled = 0;

async function run(l: QueueLoop): Promise<void> {
  let lastEnobufs = 0;
  try {
    while (!l.stopping) {
      const n = l.sock.receive();
      if (n > 0) l.batch(n);
      l.pressure(Date.now());
      if (n <= 0) {
        l.idle();
        if (l.sock.enobufs !== lastEnobufs) {
          l.warn("divert.enobufs", { count: l.sock.enobufs });
          lastEnobufs = l.sock.enobufs;
        }
      }
      // Bounded: a message the main thread announced is dispatched within a few turns.
      for (
        let i = 0;
        i < 50 && control && Atomics.load(control, 0) !== handled && !l.stopping;
        i++
      ) {
        await sleep0();
      }
    }
  } catch (e) {
    post({
      type: "error",
      message: `packet loop failed: ${e instanceof Error ? e.message : String(e)}`,
      errno: e instanceof NfqError ? e.errno : undefined,
    });
  } finally {
    l.flush();
    const stats = l.stats();
    l.sock.close();
    post({ type: "stopped", stats });
    self.close();
  }
}

function start(msg: WorkerStart): void {
  let sock: NfqSocket | undefined;
  try {
    sock = NfqSocket.open({
      queueNum: msg.queue.num,
      maxlen: msg.queue.maxlen,
      rcvbuf: msg.queue.rcvbuf,
      failOpen: msg.queue.failOpen,
      gso: msg.queue.gso ?? true,
      slots: msg.slots,
    });
    loop = new QueueLoop(sock, msg);
  } catch (e) {
    sock?.close();
    post({
      type: "error",
      message: e instanceof Error ? e.message : String(e),
      errno: e instanceof NfqError ? e.errno : undefined,
    });
    self.close();
    return;
  }
  post({ type: "ready", rcvbuf: sock.rcvbuf, fd: sock.fd });
  run(loop);
}

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const msg = e.data;
  if (msg.type !== "start") handled++;
  switch (msg.type) {
    case "start":
      control = msg.control;
      if (!loop) start(msg);
      break;
    case "block": {
      const key = canonicalIp(msg.ip);
      if (loop && key) loop.blocked.add(key, msg.untilMs);
      break;
    }
    case "networks":
      if (loop) loop.blockedNetworks = msg.cidrs.map((t) => parseCidr(t));
      break;
    case "stats":
      if (loop) post({ type: "stats", id: msg.id, stats: loop.stats() });
      break;
    case "stop":
      if (loop) loop.stopping = true;
      else self.close();
      break;
  }
};
