/**
 * Spam scoring through Rspamd's normal worker (port 11333 by default): one HTTP/1.0 `POST
 * /checkv2` per message, the whole message as the body and the SMTP envelope in the request
 * headers Rspamd's protocol defines (https://rspamd.com/doc/developers/protocol.html): `IP`,
 * `Helo`, `From`, one `Rcpt` per recipient, `Hostname` (only when known: SSG resolves no reverse
 * DNS, and a made-up "unknown" would earn the client Rspamd's no-rDNS penalties), `User` for a
 * client the server authenticated, `Queue-Id`, and `Password` when configured (a controller or
 * proxy worker may require it). The JSON reply gives the score, the action Rspamd recommends and
 * the symbols that fired.
 *
 * Trusts: Rspamd's reply only as far as its syntax — a 200 status, a body of at most
 * `MAX_REPLY_BYTES` that parses as JSON with a finite `score`, an `action` of plain words and a
 * `symbols` map; anything else is an error, never "clean". The envelope comes from the client
 * (untrusted): control characters are removed from every header value, so no value can end its
 * header line or add another. Limits: one connection per message (`Connection: close`; no pool to
 * go stale), a whole-request deadline (connect to last byte of the reply) and `maxBytes` — a
 * larger message is not sent and is reported as an error, so the caller's failure verdict
 * applies: what was not scored never passes as clean.
 * Rejected: `fetch` (joins repeated `Rcpt` headers into one comma-separated value, which Rspamd
 * reads as one malformed address, and reads unbounded bodies unless wrapped); `rspamc` (a process
 * per message); the milter protocol (needs a milter client, and Rspamd's proxy worker).
 */
import { exchangeWithin, writeAll } from "./exchange_within.ts";

/** Where Rspamd listens and how long and how much a request may take. */
export interface RspamdOptions {
  /** Host and port of Rspamd's normal worker (or its controller/proxy). */
  address: { hostname: string; port: number };
  /** Path prefix before `/checkv2` ("" normally; e.g. "/rspamd" behind a reverse proxy). */
  pathPrefix?: string;
  /** Whole-request deadline in milliseconds. */
  timeoutMs: number;
  /** Largest message sent, in bytes. */
  maxBytes: number;
  /** Sent as the `Password` header when set. */
  password?: string;
}

/** The SMTP envelope Rspamd is told about (all of it from the session). */
export interface RspamdEnvelope {
  /** The client's IP address. */
  ip: string;
  /** The HELO/EHLO name ("" when none). */
  helo: string;
  /** The reverse-path ("" for the null sender). */
  mailFrom: string;
  /** The accepted forward-paths. */
  rcptTo: readonly string[];
  /** The client's verified host name, when known. */
  hostname?: string;
  /** The user the server authenticated (SMTP AUTH), when any. */
  user?: string;
  /** An id for Rspamd's log (SSG's transaction id). */
  queueId?: string;
}

/** One symbol Rspamd inserted, with its score. */
export interface RspamdSymbol {
  /** Symbol name, e.g. "GTUBE". */
  name: string;
  /** Its contribution to the score. */
  score: number;
}

/** What Rspamd said about one message. */
export type RspamdResult =
  | {
    status: "scored";
    /** The message's total score. */
    score: number;
    /** The score of Rspamd's reject action, when given. */
    requiredScore?: number;
    /** The action Rspamd recommends: "no action", "greylist", "add header", "rewrite subject", "soft reject", "reject". */
    action: string;
    /** The symbols that fired, highest score first (at most `MAX_SYMBOLS`). */
    symbols: RspamdSymbol[];
  }
  | { status: "error"; reason: string };

/** Longest reply body read from Rspamd (its JSON for a message with many URLs stays well under). */
export const MAX_REPLY_BYTES = 1024 * 1024;
/** Most symbols kept from one reply. */
export const MAX_SYMBOLS = 500;
/** Longest header block of Rspamd's reply. */
const MAX_HEAD_BYTES = 16 * 1024;
const encoder = new TextEncoder();

/** An Rspamd client: `check()` sends one message and returns the result (never throws). */
export class RspamdClient {
  readonly #o: RspamdOptions;

  /** Checks nothing yet: Rspamd may start after SSG; each request connects anew. */
  constructor(options: RspamdOptions) {
    this.#o = options;
  }

  /** The endpoint as text, for logs. */
  get address(): string {
    const a = this.#o.address;
    const host = a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname;
    return `http://${host}:${a.port}${this.#o.pathPrefix ?? ""}/checkv2`;
  }

  /** Sends `message` with `envelope` to Rspamd; an error result for every failure. */
  async check(message: Uint8Array, envelope: RspamdEnvelope): Promise<RspamdResult> {
    if (message.length > this.#o.maxBytes) {
      return {
        status: "error",
        reason: `message of ${message.length} bytes is over the limit of ${this.#o.maxBytes}`,
      };
    }
    const a = this.#o.address;
    return await exchangeWithin({
      service: "rspamd",
      address: this.address,
      timeoutMs: this.#o.timeoutMs,
      connect: () => Deno.connect({ hostname: a.hostname, port: a.port }),
      exchange: async (conn) => {
        // The head and the body are two writes: no Nagle wait between them and the reply.
        (conn as Deno.TcpConn).setNoDelay(true);
        await writeAll(conn, encoder.encode(requestHead(this.#o, envelope, message.length)));
        await writeAll(conn, message);
        return parseResponse(await readResponse(conn));
      },
    });
  }
}

/** A header value with control characters removed (Security: untrusted envelope text). */
function clean(v: string): string {
  // deno-lint-ignore no-control-regex
  return v.replace(/[\x00-\x1f\x7f]/g, "").slice(0, 2048);
}

/** The request line and headers of one check (exported for tests). */
export function requestHead(o: RspamdOptions, e: RspamdEnvelope, length: number): string {
  const a = o.address;
  const host = a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname;
  const lines = [
    `POST ${o.pathPrefix ?? ""}/checkv2 HTTP/1.0`,
    `Host: ${host}:${a.port}`,
    "Connection: close",
    `Content-Length: ${length}`,
    `IP: ${clean(e.ip)}`,
  ];
  if (e.helo) lines.push(`Helo: ${clean(e.helo)}`);
  if (e.hostname) lines.push(`Hostname: ${clean(e.hostname)}`);
  lines.push(`From: ${e.mailFrom === "" ? "<>" : clean(e.mailFrom)}`);
  for (const r of e.rcptTo) lines.push(`Rcpt: ${clean(r)}`);
  if (e.user) lines.push(`User: ${clean(e.user)}`);
  if (e.queueId) lines.push(`Queue-Id: ${clean(e.queueId)}`);
  if (o.password !== undefined) lines.push(`Password: ${clean(o.password)}`);
  return lines.join("\r\n") + "\r\n\r\n";
}

/** An HTTP response as read: status, lower-case header names, body. */
interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: Uint8Array;
}

/** Reads the status line, headers and body (by Content-Length, chunks, or to close); bounded. */
async function readResponse(conn: Deno.Conn): Promise<RawResponse> {
  let buf = new Uint8Array(64 * 1024);
  let used = 0;
  let headEnd = -1;
  const more = async (): Promise<boolean> => {
    if (used === buf.length) {
      if (buf.length >= MAX_HEAD_BYTES + MAX_REPLY_BYTES + 64 * 1024) {
        throw new Error(`reply over ${MAX_REPLY_BYTES} bytes`);
      }
      const next = new Uint8Array(buf.length * 2);
      next.set(buf);
      buf = next;
    }
    const n = await conn.read(buf.subarray(used));
    if (n === null) return false;
    used += n;
    return true;
  };
  while (headEnd < 0) {
    headEnd = indexOfCrlfCrlf(buf, used);
    if (headEnd >= 0) break;
    if (used > MAX_HEAD_BYTES) throw new Error(`reply header over ${MAX_HEAD_BYTES} bytes`);
    if (!await more()) throw new Error("connection closed before the reply header ended");
  }
  const head = new TextDecoder("latin1").decode(buf.subarray(0, headEnd)).split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(head[0]);
  if (!status) throw new Error(`not an HTTP reply: "${printable(head[0])}"`);
  const headers = new Map<string, string>();
  for (const line of head.slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  const start = headEnd + 4;
  const lengthText = headers.get("content-length");
  const chunked = /\bchunked\b/i.test(headers.get("transfer-encoding") ?? "");
  if (lengthText !== undefined && !chunked) {
    if (!/^\d{1,10}$/.test(lengthText)) throw new Error(`bad Content-Length "${lengthText}"`);
    const length = Number(lengthText);
    if (length > MAX_REPLY_BYTES) throw new Error(`reply of ${length} bytes is over the limit`);
    while (used - start < length) {
      if (!await more()) throw new Error("connection closed before the reply body ended");
    }
    return { status: Number(status[1]), headers, body: buf.slice(start, start + length) };
  }
  while (await more()) {
    if (used - start > MAX_REPLY_BYTES + 64 * 1024) throw new Error("reply over the limit");
  }
  const raw = buf.slice(start, used);
  return { status: Number(status[1]), headers, body: chunked ? dechunk(raw) : raw };
}

/** The body of a chunked transfer (RFC 9112 §7.1), trailers ignored. */
function dechunk(raw: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let at = 0;
  let total = 0;
  for (;;) {
    const eol = indexOfCrlf(raw, at);
    if (eol < 0) throw new Error("truncated chunked reply");
    const size = parseInt(new TextDecoder().decode(raw.subarray(at, eol)).split(";")[0], 16);
    if (!Number.isFinite(size) || size < 0) throw new Error("bad chunk size in reply");
    if (size === 0) break;
    if (eol + 2 + size > raw.length) throw new Error("truncated chunked reply");
    parts.push(raw.subarray(eol + 2, eol + 2 + size));
    total += size;
    if (total > MAX_REPLY_BYTES) throw new Error("reply over the limit");
    at = eol + 2 + size + 2;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Turns Rspamd's HTTP reply into a result; anything unexpected is an error (exported for tests). */
export function parseResponse(r: RawResponse): RspamdResult {
  const text = new TextDecoder().decode(r.body);
  if (r.status !== 200) {
    let why = printable(text.slice(0, 200));
    try {
      const j = JSON.parse(text);
      if (j && typeof j.error === "string") why = printable(j.error.slice(0, 200));
    } catch { /* not JSON */ }
    return { status: "error", reason: `rspamd answered HTTP ${r.status}${why ? `: ${why}` : ""}` };
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return {
      status: "error",
      reason: `rspamd answered with no JSON: "${printable(text.slice(0, 200))}"`,
    };
  }
  return parseCheckResult(j);
}

/** Validates the JSON of a `/checkv2` reply. */
export function parseCheckResult(j: unknown): RspamdResult {
  if (typeof j !== "object" || j === null || Array.isArray(j)) {
    return { status: "error", reason: "rspamd's reply is not a JSON object" };
  }
  const o = j as Record<string, unknown>;
  if (typeof o.error === "string") {
    return { status: "error", reason: `rspamd: ${printable(o.error.slice(0, 200))}` };
  }
  if (typeof o.score !== "number" || !Number.isFinite(o.score)) {
    return { status: "error", reason: "rspamd's reply has no numeric score" };
  }
  if (typeof o.action !== "string" || !/^[a-z][a-z _-]{0,31}$/.test(o.action)) {
    return { status: "error", reason: "rspamd's reply has no valid action" };
  }
  const symbols: RspamdSymbol[] = [];
  if (o.symbols !== undefined) {
    if (typeof o.symbols !== "object" || o.symbols === null || Array.isArray(o.symbols)) {
      return { status: "error", reason: "rspamd's reply has a malformed symbols map" };
    }
    for (const [name, v] of Object.entries(o.symbols as Record<string, unknown>)) {
      if (!/^[\x21-\x7e]{1,128}$/.test(name)) continue;
      const s = (v as { score?: unknown } | null)?.score;
      symbols.push({ name, score: typeof s === "number" && Number.isFinite(s) ? s : 0 });
    }
  }
  symbols.sort((a, b) => b.score - a.score || (a.name < b.name ? -1 : 1));
  const required = typeof o.required_score === "number" && Number.isFinite(o.required_score)
    ? o.required_score
    : undefined;
  return {
    status: "scored",
    score: o.score,
    ...(required === undefined ? {} : { requiredScore: required }),
    action: o.action,
    symbols: symbols.slice(0, MAX_SYMBOLS),
  };
}

/** "score 15/15 (reject); symbols GTUBE(0)" — the evidence form, with the top `top` symbols. */
export function describeResult(r: RspamdResult, top = 5): string {
  if (r.status === "error") return `not scored: ${r.reason}`;
  const shown = r.symbols.slice(0, top).map((s) => `${s.name}(${round(s.score)})`);
  const rest = r.symbols.length > top ? ` +${r.symbols.length - top} more` : "";
  const required = r.requiredScore === undefined ? "" : `/${round(r.requiredScore)}`;
  return `score ${round(r.score)}${required} (${r.action}); ${
    shown.length ? `symbols ${shown.join(" ")}${rest}` : "no symbols"
  }`;
}

function round(n: number): string {
  return String(Math.round(n * 100) / 100);
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, "?");
}

function indexOfCrlfCrlf(b: Uint8Array, end: number): number {
  for (let i = 0; i + 3 < end; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

function indexOfCrlf(b: Uint8Array, from: number): number {
  for (let i = from; i + 1 < b.length; i++) if (b[i] === 13 && b[i + 1] === 10) return i;
  return -1;
}
