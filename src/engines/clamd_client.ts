/**
 * Virus scanning through ClamAV's daemon (clamd): the whole message streamed once with INSTREAM
 * over clamd's Unix or TCP socket; clamd itself decodes MIME, archives and nested attachments as
 * far as its limits allow.
 *
 * Protocol (clamd(8), "INSTREAM"): `zINSTREAM\0`, then chunks of `<4-byte big-endian length>
 * <bytes>`, ended by a zero length; one NUL-terminated reply: `stream: OK`, `stream: <Signature>
 * FOUND`, or `... ERROR` (e.g. `INSTREAM size limit exceeded. ERROR` past clamd's
 * StreamMaxLength). The `z` prefix makes every reply NUL-terminated.
 *
 * Trusts: clamd's reply only as far as its syntax (bounded to `MAX_REPLY_BYTES`, parsed by one
 * anchored pattern); anything else is an error, never "clean". Limits: one connection per scan
 * (clamd's own MaxThreads bounds the concurrency), a whole-scan deadline, and `maxBytes` — a
 * message larger than that is not sent (clamd would refuse it mid-stream) and is reported as an
 * error, so the caller's failure verdict applies: what SSG could not scan never passes as clean.
 * Rejected: clamd's SCAN/FILDES (need a shared file system or fd passing, and a spool file SSG does
 * not have); the `clamdscan` command (a process per message).
 */
import { exchangeWithin, writeAll } from "./exchange_within.ts";

/** Where clamd listens and how long a scan may take. */
export interface ClamdOptions {
  /** A Unix socket path (`/run/clamav/clamd.ctl` on Debian) or `host:port`. */
  address: { path: string } | { hostname: string; port: number };
  /** Whole-scan deadline in milliseconds. */
  timeoutMs: number;
  /** Largest message sent for scanning, in bytes (keep it ≤ clamd's StreamMaxLength). */
  maxBytes: number;
}

/** What clamd said about one message. */
export type ScanResult =
  | { status: "clean" }
  | { status: "infected"; signature: string }
  | { status: "error"; reason: string };

/** Bytes per INSTREAM chunk. */
const CHUNK = 64 * 1024;
/** Longest reply read from clamd. */
const MAX_REPLY_BYTES = 4096;
const encoder = new TextEncoder();

/** A clamd client: `scan()` streams one message and returns the verdict (never throws). */
export class ClamdClient {
  readonly #o: ClamdOptions;

  /** Checks nothing yet: clamd may start after SSG; each scan connects anew. */
  constructor(options: ClamdOptions) {
    this.#o = options;
  }

  /** The address as text, for logs. */
  get address(): string {
    const a = this.#o.address;
    return "path" in a ? a.path : `${a.hostname}:${a.port}`;
  }

  /** Streams `message` to clamd; an error result for every failure (down, slow, too big). */
  async scan(message: Uint8Array): Promise<ScanResult> {
    if (message.length > this.#o.maxBytes) {
      return {
        status: "error",
        reason: `message of ${message.length} bytes is over the scan limit of ${this.#o.maxBytes}`,
      };
    }
    const a = this.#o.address;
    return await exchangeWithin({
      service: "clamd",
      address: this.address,
      timeoutMs: this.#o.timeoutMs,
      connect: () =>
        "path" in a
          ? Deno.connect({ transport: "unix", path: a.path })
          : Deno.connect({ hostname: a.hostname, port: a.port }),
      exchange: async (conn) => {
        await writeAll(conn, encoder.encode("zINSTREAM\0"));
        const head = new Uint8Array(4);
        const view = new DataView(head.buffer);
        for (let off = 0; off < message.length; off += CHUNK) {
          const part = message.subarray(off, Math.min(message.length, off + CHUNK));
          view.setUint32(0, part.length);
          await writeAll(conn, head);
          await writeAll(conn, part);
        }
        view.setUint32(0, 0);
        await writeAll(conn, head);
        return parseReply(await readReply(conn));
      },
    });
  }
}

/** Reads clamd's NUL-terminated reply (bounded). */
async function readReply(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(MAX_REPLY_BYTES);
  let used = 0;
  while (used < buf.length) {
    const n = await conn.read(buf.subarray(used));
    if (n === null) break;
    used += n;
    if (buf.subarray(0, used).includes(0)) break;
  }
  const end = buf.subarray(0, used).indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? used : end));
}

/** `stream: OK` | `stream: <signature> FOUND` | anything else (an error). */
export function parseReply(reply: string): ScanResult {
  const text = reply.trim();
  if (text === "stream: OK") return { status: "clean" };
  const found = /^stream: ([\x21-\x7e][\x20-\x7e]{0,255}) FOUND$/.exec(text);
  if (found) return { status: "infected", signature: found[1] };
  const shown = text.replace(/[^\x20-\x7e]/g, "?").slice(0, 200);
  return { status: "error", reason: `clamd answered "${shown || "nothing"}"` };
}
