/**
 * Decoding off the event loop (issue 9): a small pool of Workers that turn a raw message into
 * `MessageFacts` (and, when a rule tests `bulk`, its content fingerprint), so that the thread
 * serving every SMTP session does not spend its time in MIME decoding. Judging stays on the main
 * thread, with the state store: counters, dynamic lists, bulk clusters and quarantine have one
 * owner, so nothing needs to be kept coherent across threads. A worker only computes a pure
 * function of the bytes it is given.
 *
 * What it trusts: the worker's code (ours, `decode_worker.ts`). What it limits: each job waits at
 * most the decode time budget plus `GRACE_MS`; a worker that errors, exits or overruns is
 * terminated and replaced, and its jobs are decoded on the calling thread instead (the same
 * function, so the verdict never depends on which thread decoded). `decode()` never rejects.
 *
 * Rejected: serving whole sessions from several Workers with `reusePort` — the acceptor's flow
 * look-up, admission counters, relay-source ports and the state store would each need sharing.
 *
 * @module
 */
import { type Fingerprint, fingerprint } from "../state/bulk_fingerprint.ts";
import {
  decodeForNeeds,
  type DecodeLimits,
  DEFAULT_DECODE_LIMITS,
  type MessageFacts,
} from "./message.ts";
import { hasPlainHeader } from "./plain_message.ts";
import type { DecodeNeeds } from "./decode_needs.ts";

/** One decoding job. */
export interface DecodeRequest {
  /** The raw message. */
  raw: Uint8Array;
  /** How much of it the rules read. */
  needs: DecodeNeeds;
  /** Decode bounds. */
  limits: Partial<DecodeLimits>;
  /** Check the body's bounds even when the rules do not read it (`decodeForNeeds`). */
  checkBounds: boolean;
  /** Also compute the bulk fingerprint of the decoded subject and text. */
  fingerprint: boolean;
}

/** What a job gives back. */
export interface Decoded {
  /** The facts the rules look at. */
  facts: MessageFacts;
  /** The bulk fingerprint (asked for, and the message has words). */
  fingerprint?: Fingerprint;
}

/** Decodes a message (on this thread or another); never rejects. */
export type FactsDecoder = (req: DecodeRequest) => Promise<Decoded>;

/** The fingerprint the bulk leaf uses for these facts. */
export function factsFingerprint(facts: MessageFacts): Fingerprint | undefined {
  return fingerprint(`${facts.subject}\n${facts.text || facts.html}`);
}

/** Decodes on the calling thread. */
export async function decodeHere(req: DecodeRequest): Promise<Decoded> {
  const facts = await decodeForNeeds(req.raw, req.needs, req.limits, req.checkBounds);
  return { facts, fingerprint: req.fingerprint ? factsFingerprint(facts) : undefined };
}

/**
 * How many decoding workers to start: `SSG_DECODE_WORKERS` when set (0: decode on the main
 * thread), else none on one core (measured: the hand-over costs ~5% more CPU per message and
 * nothing runs in parallel), else one per core beyond the first two (the main thread and the
 * packet Worker each take one), at least one and at most 4.
 */
export function decodeWorkerCount(cores: number, override?: string): number {
  if (override !== undefined && /^\d+$/.test(override.trim())) {
    return Math.min(16, Number(override.trim()));
  }
  if (!(cores > 1)) return 0;
  return Math.max(1, Math.min(4, cores - 2));
}

/**
 * Largest message decoded on the calling thread when no MIME parser runs for it: a plain
 * message (`plain_message.ts`) or one whose rules need only headers or nothing. Below this, the
 * hand-over costs more than the decoding (measured on a 10 KB plain message: ~0.2 ms of the
 * main thread to copy it out and the facts back, against ~0.05 ms to read it here); above it,
 * reading the body in one go (its MIME walk, ~4 µs per KB) would hold the event loop too long.
 */
export const DECODE_HERE_MAX_BYTES = 64 * 1024;

/** Whether `req` is decoded more cheaply on the calling thread than by a worker. */
export function cheaperHere(req: DecodeRequest): boolean {
  if (req.raw.length > DECODE_HERE_MAX_BYTES) return false;
  if (req.needs !== "full") return true;
  const lim = { ...DEFAULT_DECODE_LIMITS, ...req.limits };
  // The header decides (its body is read once, by the decode); a plain header over a body that
  // is not UTF-8 goes through mailparser here, within the size bound above.
  return hasPlainHeader(req.raw, lim.maxHeaderBytes, lim.maxHeaders);
}

/** Extra time a worker gets past the decode budget before it is given up on. */
const GRACE_MS = 5_000;

interface Job {
  req: DecodeRequest;
  resolve: (d: Decoded) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface Slot {
  worker: Worker;
  jobs: Map<number, Job>;
}

/** A fixed number of decoding Workers; `decode` is bound and safe to pass around. */
export class DecodePool {
  readonly #slots: Slot[] = [];
  readonly #url: URL;
  #seq = 0;
  #closed = false;
  /** Jobs decoded on the calling thread because a worker failed (for the stats). */
  fallbacks = 0;

  readonly #offload: () => boolean;

  /**
   * Starts `size` workers (at least 1). `offload` says whether a message goes to a worker now
   * (default: always); false decodes on the calling thread, which is quicker for a lone message
   * (no hand-over, no waking another thread: measured +3–5 ms median per message on a loaded
   * 2-core machine when every message was handed over, sessions one at a time).
   */
  constructor(size: number, opts: { url?: URL; offload?: () => boolean } = {}) {
    this.#url = opts.url ?? new URL("./decode_worker.ts", import.meta.url);
    this.#offload = opts.offload ?? (() => true);
    this.#size = Math.max(1, size);
  }

  readonly #size: number;

  /** Number of workers (started at the first message handed over: idle memory stays low). */
  get size(): number {
    return this.#size;
  }

  /** Workers running now. */
  get started(): number {
    return this.#slots.length;
  }

  #start(): Slot {
    const worker = new Worker(this.#url.href, { type: "module" });
    const slot: Slot = { worker, jobs: new Map() };
    worker.onmessage = (e: MessageEvent) => {
      const { id, facts, fingerprint, error } = e.data as {
        id: number;
        facts?: MessageFacts;
        fingerprint?: Fingerprint;
        error?: string;
      };
      const job = slot.jobs.get(id);
      if (!job) return;
      slot.jobs.delete(id);
      clearTimeout(job.timer);
      if (facts && !error) job.resolve({ facts, fingerprint });
      else this.#here(job);
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#replace(slot);
    };
    return slot;
  }

  /** Decodes `job` on this thread (a worker failed it). */
  #here(job: Job): void {
    this.fallbacks++;
    decodeHere(job.req).then(job.resolve);
  }

  /** Terminates a failed worker, decodes its jobs here, and starts a new one. */
  #replace(slot: Slot): void {
    const i = this.#slots.indexOf(slot);
    if (i < 0) return;
    try {
      slot.worker.terminate();
    } catch { /* already gone */ }
    const jobs = [...slot.jobs.values()];
    slot.jobs.clear();
    for (const j of jobs) {
      clearTimeout(j.timer);
      this.#here(j);
    }
    if (this.#closed) this.#slots.splice(i, 1);
    else this.#slots[i] = this.#start();
  }

  /** Decodes on the least busy worker (or here, when that is cheaper); never rejects. */
  readonly decode: FactsDecoder = (req) => {
    if (this.#closed || !this.#offload() || cheaperHere(req)) return decodeHere(req);
    while (this.#slots.length < this.#size) this.#slots.push(this.#start());
    let slot = this.#slots[0];
    for (const s of this.#slots) if (s.jobs.size < slot.jobs.size) slot = s;
    const id = ++this.#seq;
    return new Promise<Decoded>((resolve) => {
      const budget = (req.limits.timeoutMs ?? 30_000) + GRACE_MS;
      const job: Job = {
        req,
        resolve,
        timer: setTimeout(() => this.#replace(slot), budget),
      };
      slot.jobs.set(id, job);
      // The bytes are copied (structured clone): the session still forwards the message.
      slot.worker.postMessage({ id, ...req });
    });
  };

  /** Stops the workers; jobs still running are decoded here. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const slot of [...this.#slots]) this.#replace(slot);
  }
}
