/**
 * The main-thread facade of the packet path: starts the queue Worker, mirrors its flows so the
 * responder can ask "where was this connection going?", forwards blacklist entries, and stops it.
 *
 * The Worker posts flow events in batches (one message per receive batch, not per packet), and a
 * flow's "new" event (at the client's handshake ACK; half-open flows are never posted) before that
 * ACK's verdict, so `lookup()` normally succeeds as soon as the responder accepts the connection;
 * `waitFor()` covers the rare case where accept() wins the race.
 *
 * What it limits: the mirror holds at most `flows.max` entries (the Worker's table bound; the
 * oldest goes first if "end" events were ever lost), waiters are bounded in time.
 *
 * Bundling: the Worker is created from `new URL("./queue_worker.ts", import.meta.url)`, so a
 * compiled or bundled build must include `ffi/queue_worker.ts` (and its imports) as a separate
 * module, e.g. `deno compile --include ffi/queue_worker.ts`.
 */
import type { GatewayConfig } from "../src/config/config.ts";
import { DIVERT_MARK } from "../src/divert/firewall.ts";
import type { EventLog } from "../src/log/log.ts";
import type { RelayRegistry } from "../src/flow/relay_registry.ts";
import { parseIp } from "../src/packet/ip_address.ts";
import { canonicalIp } from "./ip_key.ts";
import { FlowMirror, type OriginalDestination } from "./flow_mirror.ts";
import { loadNative } from "./native.ts";
import type { FromWorker, ToWorker, WorkerStart } from "./queue_protocol.ts";

export type { OriginalDestination };

/** Options of `DivertService.start`. */
export interface DivertServiceOptions {
  /** The validated `gateway:` section: queue, protected networks, ports, responder, flow bounds. */
  config: GatewayConfig;
  /** Responder IPv4 address (already resolved from "auto"); required when IPv4 is protected. */
  responder4?: string;
  /** Responder IPv6 address (already resolved from "auto"); required when IPv6 is protected. */
  responder6?: string;
  /** Receives the packet path's events: divert.*, flow.new / flow.end, Worker warnings. */
  log: EventLog;
  /**
   * skb->mark for rewritten inbound packets (default DIVERT_MARK; 0: none). Caution: the
   * Firewall guard drops packets to the responder without it, so 0 requires `guard: false`.
   */
  mark?: number;
  /** Called once if the Worker fails after start (the queue is then unbound: bypass applies). */
  onFailure?: (err: Error) => void;
  /** Start timeout in ms (default 5000). */
  startTimeoutMs?: number;
  /**
   * The relay source registry (`relay.source: client`): shared with the Worker, which rewrites
   * the relay sockets' packets to the client's address. Absent: the relay keeps the gateway's.
   */
  relayRegistry?: RelayRegistry;
  /**
   * Idle expiry of relay flows, s (default `flows.idleSeconds`). Caution: a relay connection
   * legitimately stays silent while its client sends a long message (up to the SMTP session
   * timeout) or while the server works on end-of-data; a relay flow forgotten then would cut it.
   */
  relayIdleSeconds?: number;
}

/** Raised when the packet path cannot start. */
export class DivertError extends Error {
  /** The error class name, "DivertError". */
  override name = "DivertError";
  /** Linux errno when a system call caused it. */
  readonly errno: number | undefined;
  /** Creates the error; `options.errno` is kept as `errno`, `options.cause` as `cause`. */
  constructor(message: string, options?: { cause?: unknown; errno?: number }) {
    super(message, options);
    this.errno = options?.errno;
  }
}

/** The running packet path. */
export class DivertService {
  #worker: Worker;
  #log: EventLog;
  #flows: FlowMirror;
  #nextStatsId = 1;
  #statsWaiters = new Map<number, (s: Record<string, number>) => void>();
  #closing: Promise<void> | undefined;
  #stopped: (() => void) | undefined;
  #stoppedPromise: Promise<void>;
  #lastStats: Record<string, number> = {};
  #failed = false;
  #onFailure: ((err: Error) => void) | undefined;
  #control = new Int32Array(new SharedArrayBuffer(4));
  /** The Worker's netlink socket, until the Worker reports it closed. */
  #fd = -1;

  private constructor(worker: Worker, log: EventLog, max: number, onFailure?: (e: Error) => void) {
    this.#worker = worker;
    this.#log = log;
    this.#flows = new FlowMirror(max, log);
    this.#onFailure = onFailure;
    this.#stoppedPromise = new Promise((r) => (this.#stopped = r));
  }

  /**
   * Spawns the Worker and resolves once the queue is bound and configured; rejects with a
   * DivertError that says why otherwise (no CAP_NET_ADMIN, queue taken, library missing).
   */
  static start(opts: DivertServiceOptions): Promise<DivertService> {
    const g = opts.config;
    const responder4 = opts.responder4 === undefined ? undefined : parseIp(opts.responder4);
    const responder6 = opts.responder6 === undefined ? undefined : parseIp(opts.responder6);
    if (opts.responder4 !== undefined && responder4?.length !== 4) {
      return Promise.reject(
        new DivertError(`responder4 "${opts.responder4}" is not an IPv4 address`),
      );
    }
    if (opts.responder6 !== undefined && responder6?.length !== 16) {
      return Promise.reject(
        new DivertError(`responder6 "${opts.responder6}" is not an IPv6 address`),
      );
    }
    for (const fam of [4, 6] as const) {
      const r = fam === 4 ? responder4 : responder6;
      if (!r && g.protect.some((c) => c.family === fam)) {
        return Promise.reject(
          new DivertError(
            `IPv${fam} networks are protected but no IPv${fam} responder address was given`,
          ),
        );
      }
    }
    const worker = new Worker(new URL("./queue_worker.ts", import.meta.url), { type: "module" });
    const svc = new DivertService(worker, opts.log, g.flows.max, opts.onFailure);
    const start: WorkerStart = {
      type: "start",
      queue: {
        num: g.queue.num,
        maxlen: g.queue.maxlen,
        rcvbuf: g.queue.rcvbuf,
        failOpen: g.queue.failOpen ?? false,
        // The GSO flag (see nfq_socket.ts); SSG_NFQ_GSO=0 turns it off (for measurements).
        gso: Deno.env.get("SSG_NFQ_GSO") !== "0",
      },
      protect: g.protect,
      ports: g.ports,
      responder4,
      responder6,
      responderPort: g.responder.port,
      flows: { max: g.flows.max, idleSeconds: g.flows.idleSeconds },
      mark: opts.mark ?? DIVERT_MARK,
      control: svc.#control,
      relay: opts.relayRegistry
        ? {
          first: opts.relayRegistry.first,
          last: opts.relayRegistry.last,
          words: opts.relayRegistry.words,
          idleSeconds: opts.relayIdleSeconds ?? g.flows.idleSeconds,
        }
        : undefined,
    };
    return new Promise<DivertService>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        fail(
          new DivertError(
            `the packet worker did not bind NFQUEUE ${g.queue.num} within the time limit`,
          ),
        );
      }, opts.startTimeoutMs ?? 5000);
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        worker.terminate();
        svc.#stopped?.();
        reject(err);
      };
      worker.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        const err = new DivertError(`packet worker failed: ${e.message}`, { cause: e.error });
        if (!settled) fail(err);
        else {
          // The Worker died without its cleanup: close its socket from here.
          svc.#releaseSocket();
          svc.#stopped?.();
          svc.#fail(err);
        }
      };
      worker.onmessage = (e: MessageEvent<FromWorker>) => {
        const msg = e.data;
        if (!settled) {
          if (msg.type === "ready") {
            settled = true;
            svc.#fd = msg.fd;
            clearTimeout(timer);
            opts.log.event("divert.start", {
              queue: g.queue.num,
              maxlen: g.queue.maxlen,
              rcvbuf: msg.rcvbuf,
              failOpen: g.queue.failOpen ?? false,
              responder4: opts.responder4,
              responder6: opts.responder6,
              port: g.responder.port,
            });
            resolve(svc);
            return;
          }
          if (msg.type === "error") {
            fail(
              new DivertError(`Cannot start packet diversion: ${msg.message}`, {
                errno: msg.errno,
              }),
            );
            return;
          }
        }
        svc.#onMessage(msg);
      };
      worker.postMessage(start satisfies ToWorker);
    });
  }

  /** Posts to the Worker and announces it through the shared counter (see queue_worker.ts). */
  #post(msg: ToWorker): void {
    Atomics.add(this.#control, 0, 1);
    this.#worker.postMessage(msg);
  }

  /**
   * Stops a Worker that is hung or dead and closes the netlink socket it held, so the kernel
   * unbinds the queue (then `bypass` applies) instead of holding diverted packets forever.
   * Caution: only while the Worker has not reported the socket closed (the fd number could be
   * reused by then).
   */
  #releaseSocket(): void {
    this.#worker.terminate();
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    try {
      loadNative().libc.close(fd);
      this.#log.event("divert.socket_released", { fd }, "warning");
    } catch { /* the library loaded in the Worker; it loads here too */ }
  }

  #fail(err: Error): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#log.event("divert.failed", { error: err.message }, "error");
    this.#onFailure?.(err);
  }

  #onMessage(msg: FromWorker): void {
    switch (msg.type) {
      case "flows":
        for (const e of msg.events) this.#flows.apply(e);
        break;
      case "stats": {
        const w = this.#statsWaiters.get(msg.id);
        this.#statsWaiters.delete(msg.id);
        this.#lastStats = msg.stats;
        w?.(msg.stats);
        break;
      }
      case "warning":
        this.#log.event(msg.event, msg.fields, "warning");
        break;
      case "error":
        if (!this.#closing) this.#fail(new DivertError(msg.message, { errno: msg.errno }));
        break;
      case "stopped":
        this.#fd = -1; // the Worker closed its socket
        this.#lastStats = msg.stats;
        for (const [, w] of this.#statsWaiters) w(msg.stats);
        this.#statsWaiters.clear();
        if (!this.#closing) this.#fail(new DivertError("the packet worker stopped unexpectedly"));
        this.#stopped?.();
        break;
      case "ready":
        break;
    }
  }

  /** The original destination of the diverted connection from clientIp:clientPort, if known. */
  lookup(clientIp: string, clientPort: number): OriginalDestination | undefined {
    return this.#flows.lookup(clientIp, clientPort);
  }

  /** The flow id the log uses for that connection, if known. */
  flowId(clientIp: string, clientPort: number): number | undefined {
    return this.#flows.flowId(clientIp, clientPort);
  }

  /**
   * Like `lookup`, but waits up to `timeoutMs` for the flow's "new" event (a connection may be
   * accepted a moment before that event is delivered). Resolves undefined on timeout.
   */
  waitFor(
    clientIp: string,
    clientPort: number,
    timeoutMs: number,
  ): Promise<OriginalDestination | undefined> {
    if (this.#closing || this.#failed) return Promise.resolve(this.lookup(clientIp, clientPort));
    return this.#flows.waitFor(clientIp, clientPort, timeoutMs);
  }

  /** Drops new connections (SYNs) from `ip` at the packet level until `untilMs` (epoch ms); a
   * deadline in the past (e.g. 0) lifts an earlier block. */
  block(ip: string, untilMs: number): void {
    if (this.#closing || this.#failed) return;
    if (canonicalIp(ip) === undefined) {
      this.#log.event("divert.block_invalid", { ip }, "warning");
      return;
    }
    this.#post({ type: "block", ip, untilMs });
  }

  /**
   * Drops new connections from these networks (CIDR texts) at the packet level, replacing the
   * previous set: the rule file's static `blacklist.clients`, re-sent on reload.
   */
  blockNetworks(cidrs: string[]): void {
    if (this.#closing || this.#failed) return;
    this.#post({ type: "networks", cidrs: [...cidrs] });
  }

  /** Worker counters (packets, batches, ENOBUFS, verdict errors) plus the Diverter's. */
  stats(): Promise<Record<string, number>> {
    const local = { mirrorFlows: this.#flows.size, waiters: this.#flows.waiting };
    if (this.#closing || this.#failed) return Promise.resolve({ ...this.#lastStats, ...local });
    const id = this.#nextStatsId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#statsWaiters.delete(id);
        resolve({ ...this.#lastStats, ...local });
      }, 2000);
      this.#statsWaiters.set(id, (s) => {
        clearTimeout(timer);
        resolve({ ...s, ...local });
      });
      this.#post({ type: "stats", id });
    });
  }

  /** Stops the Worker (it unbinds the queue and closes its socket). Safe to call twice. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = (async () => {
      // After a failure the Worker may still be in its cleanup: wait for it either way.
      if (!this.#failed) this.#post({ type: "stop" });
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#stoppedPromise,
        new Promise<void>((r) => (timer = setTimeout(r, 3000))),
      ]);
      clearTimeout(timer);
      this.#releaseSocket(); // a no-op for the socket when the Worker stopped cleanly
      this.#flows.releaseWaiters();
      this.#log.event("divert.stop", this.#lastStats);
    })();
    return this.#closing;
  }
}
