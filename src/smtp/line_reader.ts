/**
 * A bounded byte reader over a peer's stream: CRLF lines for commands and replies, raw chunks for
 * DATA, and a look at whether input is pending (RFC 2920 §3: flush replies when it is not).
 *
 * Security: untrusted bytes. The buffer never grows past one line limit plus one chunk of the
 * underlying stream: when no LF is found within `limit` bytes, `readLine` answers "too-long" at once
 * (it does not wait for the LF) and the rest of that line is then skipped without being stored, up
 * to `discardLimit` bytes, past which the peer is flooding ("flood"). Alternatives rejected:
 * buffering to the LF (memory grows with the attacker's line), or chopping the line into several
 * commands (Postfix does that for DATA only; for commands it would execute attacker-chosen text).
 *
 * RFC 5321 §2.3.8: only CRLF ends a line. A line that ends in a bare LF is still returned (so the
 * caller can answer it), flagged `bareLf`; the caller decides by policy. A bare CR is content.
 *
 * Every wait is bounded by a time limit and the caller's abort signal (see `raceDeadline`).
 * A read that loses its race stays pending and is reused by the next wait, so no byte is lost.
 */
import { raceDeadline } from "./deadline.ts";

/** What a bounded wait for input ended with, when it did not deliver bytes. */
export type InputStop = "eof" | "timeout" | "aborted";

/** The outcome of `LineReader.readLine`. */
export type LineResult =
  | { kind: "line"; line: Uint8Array; bareLf: boolean }
  | { kind: "too-long" }
  | { kind: "flood" }
  | { kind: InputStop };

/** The outcome of `LineReader.readChunk`. */
export type ChunkResult = { kind: "data"; bytes: Uint8Array } | { kind: InputStop };

/** Bytes of an over-long line skipped before the peer is considered to be flooding (64 KiB, the
 * OpenSMTPD line bound). */
export const DEFAULT_DISCARD_LIMIT = 64 * 1024;

type Pending = { value?: Uint8Array; done: boolean };

const LF = 0x0a;
const CR = 0x0d;

/** Reads bounded lines and chunks from a byte stream. */
export class LineReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf = new Uint8Array(4096);
  #start = 0;
  #end = 0;
  #pending: Promise<Pending> | undefined;
  #eof = false;
  #discarding = false;
  #discarded = 0;
  #discardLimit: number;
  #total = 0;

  /** Wraps `readable` (locks it). `discardLimit` bounds how much of one over-long line is skipped. */
  constructor(readable: ReadableStream<Uint8Array>, discardLimit = DEFAULT_DISCARD_LIMIT) {
    this.#reader = readable.getReader();
    this.#discardLimit = discardLimit;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Total bytes received from the stream so far. */
  get bytesRead(): number {
    return this.#total;
  }

  /** Whether the peer has closed its side (and everything buffered may still be read). */
  get ended(): boolean {
    return this.#eof;
  }

  /**
   * Waits until at least one unread byte is buffered. `waitMs` bounds the wait; `ms <= 0` only
   * notices bytes that are already readable.
   */
  async waitForData(waitMs: number, signal?: AbortSignal): Promise<"data" | InputStop> {
    if (this.buffered > 0) return "data";
    return await this.#fill(waitMs, signal);
  }

  /**
   * Reads one line terminated by LF whose total length, terminator included, is at most `limit`
   * bytes. The returned line excludes CRLF (or the bare LF). `waitMs` bounds the whole line, not
   * each byte, so a peer trickling one byte at a time cannot stretch it (a per-request deadline, as
   * Postfix's smtpd_per_request_deadline).
   */
  async readLine(limit: number, waitMs: number, signal?: AbortSignal): Promise<LineResult> {
    const deadline = performance.now() + waitMs;
    const remaining = () => Math.max(0, deadline - performance.now());
    for (;;) {
      if (this.#discarding) {
        const i = this.#indexOfLf(this.#start, this.#end);
        if (i >= 0) {
          this.#discarded += i + 1 - this.#start;
          this.#start = i + 1;
          this.#discarding = false;
          if (this.#discarded > this.#discardLimit) return { kind: "flood" };
          continue;
        }
        this.#discarded += this.#end - this.#start;
        this.#start = this.#end;
        if (this.#discarded > this.#discardLimit) return { kind: "flood" };
        const r = await this.#fill(remaining(), signal);
        if (r !== "data") return { kind: r };
        continue;
      }
      const scanEnd = Math.min(this.#end, this.#start + limit);
      const i = this.#indexOfLf(this.#start, scanEnd);
      if (i >= 0) {
        const crlf = i > this.#start && this.#buf[i - 1] === CR;
        const line = this.#buf.slice(this.#start, crlf ? i - 1 : i);
        this.#start = i + 1;
        return { kind: "line", line, bareLf: !crlf };
      }
      if (this.#end - this.#start >= limit) {
        // No LF within the limit: answer now, skip the rest of the line later.
        // The first `limit` bytes hold no LF; later buffered bytes may (and pipelined commands
        // after it), so only those are dropped here.
        this.#discarding = true;
        this.#discarded = limit;
        this.#start += limit;
        return { kind: "too-long" };
      }
      const r = await this.#fill(remaining(), signal);
      if (r !== "data") return { kind: r };
    }
  }

  /**
   * Returns every buffered byte, or waits (at most `waitMs`) for the next chunk. Caution: lifetime —
   * the returned view is only valid until the next call on this reader; use `unread` to give back
   * the unconsumed tail of it.
   */
  async readChunk(waitMs: number, signal?: AbortSignal): Promise<ChunkResult> {
    if (this.buffered === 0) {
      const r = await this.#fill(waitMs, signal);
      if (r !== "data") return { kind: r };
    }
    const bytes = this.#buf.subarray(this.#start, this.#end);
    this.#start = this.#end;
    return { kind: "data", bytes };
  }

  /** Gives back the last `count` bytes of the chunk that `readChunk` just returned. */
  unread(count: number): void {
    if (count < 0 || count > this.#start) throw new RangeError(`Cannot unread ${count} bytes`);
    this.#start -= count;
  }

  /**
   * Hands the stream back for a TLS upgrade (RFC 3207): discards every buffered byte and releases
   * the lock, leaving the stream open; returns how many bytes were discarded. Security: those
   * bytes arrived in plaintext after the STARTTLS command (or the server's 220); executing them
   * after the handshake is CVE-2011-0411, so they are dropped, never carried over. Throws when a
   * read is still in flight (its bytes could not be accounted for); the reader is unusable after.
   */
  release(): number {
    if (this.#pending) throw new Error("Cannot release the stream while a read is in flight");
    const dropped = this.buffered;
    this.#start = this.#end = 0;
    this.#discarding = false;
    this.#eof = true;
    this.#reader.releaseLock();
    return dropped;
  }

  /** Stops reading: cancels the stream (any pending read ends). Safe to call twice. */
  async cancel(): Promise<void> {
    this.#eof = true;
    try {
      await this.#reader.cancel();
    } catch { /* already closed or errored */ }
  }

  #indexOfLf(from: number, to: number): number {
    const i = this.#buf.subarray(from, to).indexOf(LF);
    return i < 0 ? -1 : from + i;
  }

  async #fill(waitMs: number, signal?: AbortSignal): Promise<"data" | InputStop> {
    if (this.#eof) return "eof";
    if (!this.#pending) {
      this.#pending = this.#reader.read().then(
        (r) => (r.done ? { done: true } : { value: r.value, done: false }),
        () => ({ done: true }),
      );
    }
    const r = await raceDeadline(this.#pending, waitMs, signal);
    if (!r.ok) return r.why;
    this.#pending = undefined;
    if (r.value.done || !r.value.value) {
      this.#eof = true;
      return "eof";
    }
    this.#append(r.value.value);
    return this.buffered > 0 ? "data" : await this.#fill(waitMs, signal);
  }

  #append(chunk: Uint8Array): void {
    this.#total += chunk.length;
    const live = this.#end - this.#start;
    if (this.#end + chunk.length > this.#buf.length) {
      if (live + chunk.length <= this.#buf.length && this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const grown = new Uint8Array(Math.max(this.#buf.length * 2, live + chunk.length));
        grown.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = grown;
      }
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }
}
