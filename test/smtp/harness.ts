/**
 * Test harness for SMTP transcripts: in-memory duplex pipes, a scripted fake upstream server that
 * records every byte it receives, and a helper that drives one session from a client's side.
 *
 * Nothing here touches the network; every wait is bounded by `WAIT_MS`.
 */
import type { RelayConfig, SmtpConfig } from "../../src/config/config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import type { Envelope, Judge, Verdict } from "../../src/policy/verdict.ts";
import {
  serveSession,
  type SessionContext,
  type SessionIo,
  type SessionSummary,
} from "../../src/smtp/session.ts";

/** The date every test session stamps into its Received header. */
export const FIXED_DATE = new Date(Date.UTC(2026, 10, 27, 22, 57, 1));

/** The Received header of a test session's transaction `txid` with one recipient `rcpt`. */
export function receivedFor(
  rcpt: string | undefined,
  txid = "S1.1",
  helo = "client.example",
): string {
  const by = `\tby mx.example (SSG) with ESMTP id ${txid}`;
  const date = "Fri, 27 Nov 2026 22:57:01 +0000";
  return `Received: from ${helo} ([192.0.2.10])\r\n` +
    (rcpt === undefined ? `${by};\r\n\t${date}\r\n` : `${by}\r\n\tfor <${rcpt}>; ${date}\r\n`);
}

/** Longest any helper waits for the session before failing the test. */
export const WAIT_MS = 5000;

/** Bytes of a latin1 string (one byte per char: lets tests write NUL, bare CR, 8-bit bytes). */
export function bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

/** A latin1 string of bytes. */
export function text(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

/** One direction of an in-memory connection; writes are delivered immediately as separate chunks. */
class Channel {
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  ended = false;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  constructor() {
    this.readable = new ReadableStream<Uint8Array>({
      start: (c) => {
        this.#controller = c;
      },
      cancel: () => {
        this.ended = true;
      },
    });
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => {
        if (this.ended) throw new Error("connection closed");
        this.#controller.enqueue(chunk.slice());
      },
      close: () => this.end(),
    });
  }
  end(): void {
    if (this.ended) return;
    this.ended = true;
    try {
      this.#controller.close();
    } catch { /* already closed */ }
  }
}

/** The two ends of an in-memory TCP-like connection. */
export interface Duplex {
  a: SessionIo & { endOutput(): void };
  b: SessionIo & { endOutput(): void };
}

/** Creates a connected pair; `close()` on either side ends both directions (like a TCP close). */
export function duplex(): Duplex {
  const ab = new Channel();
  const ba = new Channel();
  const close = () => {
    ab.end();
    ba.end();
  };
  return {
    a: { readable: ba.readable, writable: ab.writable, close, endOutput: () => ab.end() },
    b: { readable: ab.readable, writable: ba.writable, close, endOutput: () => ba.end() },
  };
}

/** Reads a peer's output with bounded waits. */
export class Peer {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #io: SessionIo & { endOutput(): void };
  /** Everything received so far (latin1). */
  received = "";
  #consumed = 0;
  /** Whether the other side closed. */
  closed = false;

  constructor(io: SessionIo & { endOutput(): void }) {
    this.#io = io;
    this.#reader = io.readable.getReader();
    this.#writer = io.writable.getWriter();
    this.#writer.closed.catch(() => {});
  }

  /** Writes bytes or a latin1 string as one chunk. */
  async write(data: string | Uint8Array): Promise<void> {
    await this.#writer.write(typeof data === "string" ? bytes(data) : data);
  }

  /** Ends our sending direction (half-close). */
  endOutput(): void {
    this.#io.endOutput();
  }

  /** Closes both directions. */
  close(): void {
    this.#io.close();
  }

  /** Reads one more chunk; false when the stream ended or `ms` passed. */
  async #more(ms: number): Promise<boolean> {
    if (this.closed) return false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), ms));
    const r = await Promise.race([this.#reader.read(), timeout]);
    clearTimeout(timer);
    if (r === "timeout") {
      throw new Error(`Timed out after ${ms} ms; received: ${JSON.stringify(this.received)}`);
    }
    if (r.done) {
      this.closed = true;
      return false;
    }
    this.received += text(r.value);
    return true;
  }

  /** Reads the next complete SMTP reply (all its lines). */
  async reply(ms = WAIT_MS): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const rest = this.received.slice(this.#consumed);
      const m = /^(?:\d{3}-[^\n]*\r\n)*\d{3}(?: [^\n]*)?\r\n/.exec(rest);
      if (m) {
        this.#consumed += m[0].length;
        return m[0];
      }
      if (!(await this.#more(Math.max(1, deadline - Date.now())))) {
        throw new Error(`Stream ended without a complete reply; received: ${JSON.stringify(rest)}`);
      }
    }
  }

  /** Reads until the other side closes; returns what arrived after the last `reply()`. */
  async rest(ms = WAIT_MS): Promise<string> {
    const deadline = Date.now() + ms;
    while (await this.#more(Math.max(1, deadline - Date.now())));
    const r = this.received.slice(this.#consumed);
    this.#consumed = this.received.length;
    return r;
  }
}

/** The reply codes in a block of replies (one per reply, from its last line). */
export function codes(replies: string): number[] {
  const out: number[] = [];
  for (const line of replies.split("\r\n")) {
    const m = /^(\d{3})(?: |$)/.exec(line);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

/** Responder settings for tests (RFC defaults, short timeouts). */
export function smtpConfig(over: Partial<SmtpConfig> = {}): SmtpConfig {
  return {
    maxMessageBytes: 10_000_000,
    maxInflightBytes: 1 << 30,
    maxRecipients: 100,
    recipientOvershootLimit: 1000,
    maxCommandLine: 512,
    maxTextLine: 1000,
    bareLineEndings: "reject",
    maxErrors: 20,
    maxTransactions: 100,
    maxSessions: 10,
    maxSessionsPerClient: 10,
    maxSessionsPerNetwork: 10,
    networkPrefix: { ipv4: 24, ipv6: 64 },
    minDataRate: 0,
    timeouts: { command: 5, data: 5, session: 30 },
    pipelining: true,
    ...over,
  };
}

/** Relay settings for tests. */
export function relayConfig(over: Partial<RelayConfig> = {}): RelayConfig {
  return { connectTimeout: 2, replyTimeout: 2, dataTimeout: 2, ...over };
}

// ---- the fake upstream server -------------------------------------------------------------------

/** A message the fake server received. */
export interface ReceivedMessage {
  mailFrom: string;
  rcpts: string[];
  /** DATA exactly as sent on the wire (dot-stuffed, without the final ".\r\n"). */
  wire: string;
  /** The content after un-stuffing. */
  content: string;
  /** It came as BDAT (wire and content are then the same bytes). */
  bdat?: boolean;
}

/** How the fake server answers. A handler returning null never answers (to test timeouts);
 * returning "close" closes the connection without a reply; a reply ending in "!close" is sent
 * (without the marker) and then the connection is closed. */
export interface FakeServerOptions {
  greeting?: string | null;
  ehlo?: ((arg: string) => string | null) | string | null;
  helo?: (arg: string) => string | null;
  mail?: (arg: string) => string | null;
  rcpt?: (arg: string) => string | null;
  data?: () => string | null;
  dataEnd?: (m: ReceivedMessage) => string | null;
  rset?: () => string | null;
  /** Answer to STARTTLS (default 500: not recognised); advertise it through `ehlo`. */
  starttls?: () => string | null;
  /** Wait this long before answering QUIT (a slow server teardown). */
  quitDelayMs?: number;
  /** Answer to any other line (VRFY, EXPN, HELP, ETRN, AUTH, SASL responses: `line` is the
   * raw line); undefined: 500. */
  other?: (verb: string, arg: string, line: string) => string | null | undefined;
}

/** Default EHLO reply of the fake server. */
export const FAKE_EHLO =
  "250-server.example\r\n250-PIPELINING\r\n250-SIZE 50000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";

/** A scripted SMTP server that records everything it receives. */
export class FakeServer {
  /** Every byte received (latin1). */
  raw = "";
  /** Command lines received (without CRLF). */
  commands: string[] = [];
  /** Messages received. */
  messages: ReceivedMessage[] = [];
  /** Resolves when the connection ends. */
  done: Promise<void>;
  #io: SessionIo;
  #opts: FakeServerOptions;
  #writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(io: SessionIo, opts: FakeServerOptions = {}) {
    this.#io = io;
    this.#opts = opts;
    this.#writer = io.writable.getWriter();
    this.#writer.closed.catch(() => {});
    this.done = this.#run().catch(() => {}).finally(() => {
      try {
        io.close();
      } catch { /* closed */ }
    });
  }

  /** Closes the connection from the server's side (a restart, an idle timeout). */
  closeNow(): Promise<void> {
    try {
      this.#io.close();
    } catch { /* closed */ }
    return this.done;
  }

  async #send(s: string | null): Promise<boolean> {
    if (s === null) return true; // stay silent
    if (s === "close") {
      this.#io.close();
      return false;
    }
    if (s.endsWith("!close")) {
      await this.#writer.write(bytes(s.slice(0, -"!close".length)));
      this.#io.close();
      return false;
    }
    await this.#writer.write(bytes(s.endsWith("\r\n") ? s : s + "\r\n"));
    return true;
  }

  async #run(): Promise<void> {
    const o = this.#opts;
    const reader = this.#io.readable.getReader();
    let buf = "";
    let mailFrom = "";
    let rcpts: string[] = [];
    let inData = false;
    /** BDAT in progress: bytes still to read, whether it is LAST, and the chunks so far. */
    let bdatChunk: { left: number; last: boolean } | undefined;
    let chunks = "";
    if (
      !(await this.#send(o.greeting === undefined ? "220 server.example ESMTP fake" : o.greeting))
    ) {
      return;
    }
    for (;;) {
      const r = await reader.read();
      if (r.done) return;
      const chunk = text(r.value);
      this.raw += chunk;
      buf += chunk;
      for (;;) {
        if (bdatChunk) {
          const take = Math.min(bdatChunk.left, buf.length);
          chunks += buf.slice(0, take);
          buf = buf.slice(take);
          bdatChunk.left -= take;
          if (bdatChunk.left > 0) break;
          const last = bdatChunk.last;
          bdatChunk = undefined;
          if (!last) {
            if (!(await this.#send("250 2.0.0 Ok: chunk"))) return;
            continue;
          }
          const m = { mailFrom, rcpts, wire: chunks, content: chunks, bdat: true };
          this.messages.push(m);
          chunks = "";
          mailFrom = "";
          rcpts = [];
          if (!(await this.#send(o.dataEnd ? o.dataEnd(m) : "250 2.0.0 Ok: queued as FAKE"))) {
            return;
          }
          continue;
        }
        if (inData) {
          const probe = "\r\n" + buf;
          const end = probe.indexOf("\r\n.\r\n");
          if (end < 0) break;
          const wire = probe.slice(2, end + 2);
          buf = probe.slice(end + 5);
          inData = false;
          const content = wire.split("\r\n").map((l) => (l.startsWith(".") ? l.slice(1) : l)).join(
            "\r\n",
          );
          const m = { mailFrom, rcpts, wire, content };
          this.messages.push(m);
          mailFrom = "";
          rcpts = [];
          if (!(await this.#send(o.dataEnd ? o.dataEnd(m) : "250 2.0.0 Ok: queued as FAKE"))) {
            return;
          }
          continue;
        }
        const nl = buf.indexOf("\r\n");
        if (nl < 0) break;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        this.commands.push(line);
        const verb = line.split(" ")[0].toUpperCase();
        const arg = line.slice(verb.length + 1);
        let answer: string | null;
        switch (verb) {
          case "EHLO":
            answer = typeof o.ehlo === "function"
              ? o.ehlo(arg)
              : o.ehlo === undefined
              ? FAKE_EHLO
              : o.ehlo ?? "502 5.5.1 EHLO not supported";
            break;
          case "HELO":
            answer = o.helo ? o.helo(arg) : "250 server.example";
            break;
          case "MAIL":
            answer = o.mail ? o.mail(arg) : "250 2.1.0 Ok";
            if (answer?.startsWith("2")) mailFrom = /<(.*)>/.exec(arg)?.[1] ?? "";
            break;
          case "RCPT":
            answer = o.rcpt ? o.rcpt(arg) : "250 2.1.5 Ok";
            if (answer?.startsWith("2")) rcpts.push(/<(.*)>/.exec(arg)?.[1] ?? "");
            break;
          case "DATA":
            answer = o.data ? o.data() : "354 End data with <CR><LF>.<CR><LF>";
            if (answer?.startsWith("354")) inData = true;
            break;
          case "RSET":
            mailFrom = "";
            rcpts = [];
            answer = o.rset ? o.rset() : "250 2.0.0 Ok";
            break;
          case "BDAT": {
            const b = /^(\d+)( LAST)?$/.exec(arg);
            if (!b) {
              answer = "501 5.5.4 Syntax: BDAT count [LAST]";
              break;
            }
            bdatChunk = { left: Number(b[1]), last: b[2] !== undefined };
            continue;
          }
          case "STARTTLS":
            answer = o.starttls ? o.starttls() : "500 5.5.2 Error: command not recognized";
            break;
          case "QUIT":
            if (o.quitDelayMs) await new Promise((r) => setTimeout(r, o.quitDelayMs));
            await this.#send("221 2.0.0 Bye");
            this.#io.close();
            return;
          default:
            answer = o.other?.(verb, arg, line) ?? "500 5.5.2 Error: command not recognized";
        }
        if (!(await this.#send(answer))) return;
      }
    }
  }
}

/** A connectUpstream that starts a new FakeServer per connection; `servers` lists them. */
export function fakeUpstream(opts: FakeServerOptions = {}): {
  connect: SessionContext["connectUpstream"];
  servers: FakeServer[];
  connects: { ip: string; port: number; timeoutMs: number }[];
} {
  const servers: FakeServer[] = [];
  const connects: { ip: string; port: number; timeoutMs: number }[] = [];
  const connect = (server: { ip: string; port: number }, timeoutMs: number) => {
    connects.push({ ...server, timeoutMs });
    const d = duplex();
    servers.push(new FakeServer(d.b, opts));
    return Promise.resolve(d.a as SessionIo);
  };
  return { connect, servers, connects };
}

/** A connectUpstream for a server that is down (connection refused). */
export function refusedUpstream(): SessionContext["connectUpstream"] {
  return () =>
    Promise.reject(new Deno.errors.ConnectionRefused("Connection refused (os error 111)"));
}

/** A connectUpstream whose connect never completes (a black-holed SYN). */
export function hangingUpstream(): SessionContext["connectUpstream"] {
  return () => new Promise<SessionIo>(() => {});
}

/** A judge that forwards everything and records what it saw. */
export function recordingJudge(
  decide: (message: string, env: Envelope) => Verdict | Promise<Verdict> = () => ({
    action: "forward",
  }),
): Judge & { calls: { message: string; envelope: Envelope }[] } {
  const calls: { message: string; envelope: Envelope }[] = [];
  const judge = (async (message: Uint8Array, envelope: Envelope) => {
    calls.push({ message: text(message), envelope });
    return await decide(text(message), envelope);
  }) as Judge & { calls: typeof calls };
  judge.calls = calls;
  return judge;
}

/** Options of `startSession`. */
export interface StartOptions {
  smtp?: Partial<SmtpConfig>;
  relay?: Partial<RelayConfig>;
  upstream?: FakeServerOptions;
  connect?: SessionContext["connectUpstream"];
  judge?: Judge;
  /** The policy's RCPT-time check (greylisting). */
  checkRecipient?: SessionContext["checkRecipient"];
  shutdown?: AbortSignal;
  judgeTimeoutMs?: number;
  pregreetMs?: number;
  minDataRate?: number;
  /** Action modules (quarantine, tag, bcc/redirect, after). */
  actions?: SessionContext["actions"];
  /** Shared in-flight memory budget. */
  memory?: SessionContext["memory"];
  /** Learnt server profiles: the session mirrors the server (issue 7). */
  profiles?: SessionContext["profiles"];
  /** Told what the session learns early (client, HELO, sender). */
  prefetch?: SessionContext["prefetch"];
  /** Relay connections kept between sessions. */
  relayPool?: SessionContext["relayPool"];
  /** The policy's checks started at MAIL FROM (SPF). */
  startChecks?: SessionContext["startChecks"];
  /** Do not read the greeting first. */
  noGreeting?: boolean;
  /** `transcript` only: half-close the client's side after writing the input. */
  endInput?: boolean;
  /**
   * When given, records in order every chunk the session writes to the client ("write:" and
   * the text) and the session giving its admission slot back ("client-done").
   */
  events?: string[];
}

/** A running session seen from the client. */
export interface Running {
  client: Peer;
  log: MemoryLog;
  servers: FakeServer[];
  connects: { ip: string; port: number; timeoutMs: number }[];
  judge: ReturnType<typeof recordingJudge>;
  summary: Promise<SessionSummary>;
  greeting: string;
}

/** Starts a session over an in-memory pipe and reads its greeting. */
export async function startSession(o: StartOptions = {}): Promise<Running> {
  const d = duplex();
  const log = new MemoryLog();
  const up = fakeUpstream(o.upstream);
  const judge = (o.judge as ReturnType<typeof recordingJudge>) ?? recordingJudge();
  const client = new Peer(d.a);
  let io: SessionIo = d.b;
  const events = o.events;
  if (events) {
    const inner = d.b.writable.getWriter();
    io = {
      ...d.b,
      writable: new WritableStream<Uint8Array>({
        write: (chunk) => {
          events.push(`write:${text(chunk)}`);
          return inner.write(chunk);
        },
        close: () => inner.close(),
      }),
    };
  }
  const summary = serveSession(io, {
    id: "S1",
    client: { ip: "192.0.2.10", port: 40000 },
    server: { ip: "198.51.100.25", port: 25 },
    hostname: "mx.example",
    smtp: smtpConfig(o.smtp),
    relay: relayConfig(o.relay),
    judge,
    checkRecipient: o.checkRecipient,
    log,
    connectUpstream: o.connect ?? up.connect,
    shutdown: o.shutdown ?? new AbortController().signal,
    judgeTimeoutMs: o.judgeTimeoutMs,
    pregreetMs: o.pregreetMs,
    minDataRate: o.minDataRate,
    clock: () => FIXED_DATE,
    actions: o.actions,
    memory: o.memory,
    profiles: o.profiles,
    prefetch: o.prefetch,
    startChecks: o.startChecks,
    relayPool: o.relayPool,
    clientDone: events ? () => events.push("client-done") : undefined,
  });
  const greeting = o.noGreeting ? "" : await client.reply();
  return { client, log, servers: up.servers, connects: up.connects, judge, summary, greeting };
}

/**
 * Runs a whole transcript: starts a session, sends `input` (one chunk per array element, all
 * without waiting for replies, i.e. pipelined), then reads until the session closes.
 */
export async function transcript(
  input: string | (string | Uint8Array)[],
  o: StartOptions = {},
): Promise<Running & { output: string; codes: number[]; result: SessionSummary }> {
  const run = await startSession(o);
  for (const chunk of typeof input === "string" ? [input] : input) {
    // A session that closed early (421, 521) makes further writes fail, as EPIPE would.
    if (!(await run.client.write(chunk).then(() => true, () => false))) break;
  }
  if (o.endInput) run.client.endOutput();
  const output = await run.client.rest();
  const result = await run.summary;
  await Promise.all(run.servers.map((s) => s.done));
  return { ...run, output, codes: codes(output), result };
}

/** The client's EHLO + one transaction, as the pipelined lines a typical client sends. */
export function envelope(from = "alice@example.org", rcpts = ["bob@example.net"]): string {
  return `EHLO client.example\r\nMAIL FROM:<${from}>\r\n` +
    rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join("") + "DATA\r\n";
}

/**
 * A loopback listener whose connections (at most `max`) are each served by `serve`. `stop()`
 * closes it and resolves with what every `serve` call resolved to, in accept order.
 */
export function listenLoopback<T>(
  serve: (conn: Deno.Conn, index: number) => Promise<T>,
  max = 1000,
): { port: number; stop(): Promise<T[]> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const running: Promise<T>[] = [];
  const loop = (async () => {
    for (let i = 0; i < max; i++) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      running.push(serve(conn, i));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async stop() {
      listener.close();
      await loop;
      return await Promise.all(running);
    },
  };
}
