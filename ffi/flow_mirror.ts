/**
 * The main thread's copy of the Worker's flows: client address+port → original destination, fed
 * by the Worker's flow events, read by the responder for every accepted connection. Logs
 * `flow.new` / `flow.end` with the flow id.
 *
 * What it limits: at most `max` entries (the Worker's table bound; should an "end" event ever be
 * lost, the oldest entry goes first), and every waiter resolves within its timeout.
 */
import type { EventLog } from "../src/log/log.ts";
import { canonicalIp } from "./ip_key.ts";
import type { FlowEventMessage } from "./queue_protocol.ts";

/** The original destination of a diverted connection. */
export interface OriginalDestination {
  /** The server's address as text (IPv4 dotted quad or IPv6). */
  ip: string;
  /** The server's TCP port. */
  port: number;
}

interface Entry {
  id: number;
  ip: string;
  port: number;
  created: number;
}

type Waiter = (d: OriginalDestination | undefined) => void;

/** Client → original destination, mirrored from flow events. */
export class FlowMirror {
  /** Most entries kept. */
  readonly max: number;
  #log: EventLog;
  #flows = new Map<string, Entry>();
  #waiters = new Map<string, Set<Waiter>>();
  #nextId = 1;

  /** Creates an empty mirror holding at most `max` entries (at least 1), logging to `log`. */
  constructor(max: number, log: EventLog) {
    this.max = Math.max(1, max);
    this.#log = log;
  }

  /** Entries held. */
  get size(): number {
    return this.#flows.size;
  }
  /** Connections waiting for their flow. */
  get waiting(): number {
    let n = 0;
    for (const s of this.#waiters.values()) n += s.size;
    return n;
  }

  #key(ip: string, port: number): string {
    return `${canonicalIp(ip) ?? ip}|${port}`;
  }

  /** Applies one flow event from the Worker. */
  apply(e: FlowEventMessage, now = Date.now()): void {
    const client = canonicalIp(e.clientIp) ?? e.clientIp;
    const key = `${client}|${e.clientPort}`;
    if (e.type === "new") {
      this.#flows.delete(key); // port reuse: the new flow replaces the old (re-inserted last)
      while (this.#flows.size >= this.max) {
        const oldest = this.#flows.keys().next().value;
        if (oldest === undefined) break;
        this.#flows.delete(oldest);
      }
      const entry: Entry = {
        id: e.id ?? this.#nextId++,
        ip: e.serverIp,
        port: e.serverPort,
        created: now,
      };
      this.#flows.set(key, entry);
      this.#log.event("flow.new", {
        flow: entry.id,
        client,
        clientPort: e.clientPort,
        server: e.serverIp,
        serverPort: e.serverPort,
      }, "debug"); // debug: a SYN flood must not become a log flood (smtp.connect is info)
      const ws = this.#waiters.get(key);
      if (ws) {
        this.#waiters.delete(key);
        for (const w of ws) w({ ip: entry.ip, port: entry.port });
      }
    } else {
      const entry = this.#flows.get(key);
      // Only the flow the event is about: a newer flow on the same client port stays.
      if (entry && entry.ip === e.serverIp && entry.port === e.serverPort) this.#flows.delete(key);
      this.#log.event("flow.end", {
        flow: entry?.id ?? e.id,
        client,
        clientPort: e.clientPort,
        server: e.serverIp,
        serverPort: e.serverPort,
        reason: e.reason,
        ms: entry ? now - entry.created : undefined,
      }, "debug");
    }
  }

  /** The original destination for clientIp:clientPort, if known. */
  lookup(clientIp: string, clientPort: number): OriginalDestination | undefined {
    const e = this.#flows.get(this.#key(clientIp, clientPort));
    return e ? { ip: e.ip, port: e.port } : undefined;
  }

  /** The flow id for clientIp:clientPort, if known. */
  flowId(clientIp: string, clientPort: number): number | undefined {
    return this.#flows.get(this.#key(clientIp, clientPort))?.id;
  }

  /** Like lookup, but waits up to `timeoutMs` for the flow's "new" event. */
  waitFor(
    clientIp: string,
    clientPort: number,
    timeoutMs: number,
  ): Promise<OriginalDestination | undefined> {
    const now = this.lookup(clientIp, clientPort);
    if (now || timeoutMs <= 0) return Promise.resolve(now);
    const key = this.#key(clientIp, clientPort);
    return new Promise((resolve) => {
      let set = this.#waiters.get(key);
      if (!set) this.#waiters.set(key, set = new Set());
      const waiters = set;
      const done: Waiter = (d) => {
        clearTimeout(timer);
        waiters.delete(done);
        if (waiters.size === 0 && this.#waiters.get(key) === waiters) this.#waiters.delete(key);
        resolve(d);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      waiters.add(done);
    });
  }

  /** Resolves every waiter with undefined (at shutdown). */
  releaseWaiters(): void {
    const all = [...this.#waiters.values()].flatMap((s) => [...s]);
    this.#waiters.clear();
    for (const w of all) w(undefined);
  }
}
