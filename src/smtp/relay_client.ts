/**
 * The before-queue relay: an SMTP client towards the protected server, driven command by command
 * by the session so that the client hears the server's own answers (reliability-anchors §1.7,
 * model A; Postfix's smtpd_proxy_filter and Exim's cutthrough are the published analogues).
 *
 * Trusts: the server's replies only as far as their three-digit code; reply text is sanitised
 * (control characters, length, line count) before the session shows it to the client
 * (Security: untrusted bytes — a compromised or confused server must not inject into the client's
 * stream).
 *
 * Bounds: connect within `connectTimeout`; every reply within `replyTimeout`, the reply to the
 * final "." within `dataTimeout` (RFC 5321 §4.5.3.2.6: 10 minutes); reply lines at most
 * `MAX_SERVER_LINE` octets and `MAX_REPLY_LINES` lines. Any failure makes the client unusable and
 * raises `RelayError`; the session then answers 4xx so the sender keeps the message and retries
 * (RFC 5321 §4.5.4.1) — nothing is lost.
 *
 * Sends: EHLO with our host name (HELO if EHLO is refused); SIZE= and BODY= only when the server
 * advertised SIZE and 8BITMIME; the message dot-stuffed, CRLF only, as one write.
 *
 * STARTTLS (RFC 3207), `relay.starttls: opportunistic` (the default): when the server advertises
 * it, the client upgrades and says EHLO again (§4.2: the pre-TLS extensions are forgotten). The
 * server's certificate is not verified (see `start_tls.ts`: encryption against passive
 * eavesdropping on the internal link, RFC 7435). Like Postfix's `smtp_tls_security_level = may`,
 * a refused STARTTLS (non-220) continues in plaintext on the same connection, and a failed
 * handshake is retried once in plaintext on a new connection; either way `tlsFailure` says why
 * (the session logs `relay.tls_failed`). Security: bytes the server sent after its 220 are
 * discarded, never read as post-TLS replies. `off`: STARTTLS is never used.
 */
import type { RelayConfig } from "../config/config.ts";
import { raceDeadline, secondsToMs } from "./deadline.ts";
import { dotStuff } from "./dot_stuff.ts";
import { LineReader } from "./line_reader.ts";
import { isEnhancedCode, MAX_REPLY_LINES, sanitizeText, type SmtpReply } from "./reply.ts";
import { closeQuietly, type SessionIo, setNoDelay } from "./session_io.ts";
import { startClientTls } from "./start_tls.ts";

/** Longest reply line accepted from the server, CRLF included (RFC 5321 §4.5.3.1.5 says 512;
 * we allow slack for servers that exceed it, and bound it all the same). */
export const MAX_SERVER_LINE = 2048;

/** Most lines read of one server reply (only `MAX_REPLY_LINES` are kept); past it the server
 * is broken or hostile. */
export const MAX_SERVER_REPLY_LINES = 200;

/** Longest wait for the server's 221 after QUIT, in milliseconds. */
export const QUIT_WAIT_MS = 5000;

/** Why the relay failed. */
export type RelayFailure = "connect" | "timeout" | "closed" | "protocol" | "refused" | "tls";

/** The relay to the server failed; the session answers 4xx. */
export class RelayError extends Error {
  /** What went wrong. */
  readonly kind: RelayFailure;
  /** The server's reply when the failure was a refusal (e.g. its greeting was 554). */
  readonly reply?: SmtpReply;
  /** Creates the error; `options.reply` is the server's refusal, `options.cause` the cause. */
  constructor(
    kind: RelayFailure,
    message: string,
    options?: { cause?: unknown; reply?: SmtpReply },
  ) {
    super(message, { cause: options?.cause });
    this.name = "RelayError";
    this.kind = kind;
    this.reply = options?.reply;
  }
}

/** How to reach the server. */
export interface RelayOptions {
  /** The protected server (the client's original destination). */
  server: { ip: string; port: number };
  /** Our name for EHLO. */
  hostname: string;
  /** Opens the TCP connection (main passes Deno.connect; tests pass fakes). */
  connect: (server: { ip: string; port: number }, timeoutMs: number) => Promise<SessionIo>;
  /** Timeouts. */
  config: RelayConfig;
  /**
   * The client this relay speaks for. When the connection left with the gateway's address
   * (`relaySource: "gateway"` on the io, see relay_connector.ts) it is announced to the server
   * with XCLIENT, else XFORWARD, when the server offers either (`announceClient`).
   */
  client?: ClientIdentity;
}

/** Parameters of MAIL FROM the relay may pass on. */
export interface MailParams {
  /** SIZE= (RFC 1870). */
  size?: number;
  /** BODY= (RFC 6152). */
  body?: string;
  /** SMTPUTF8 (RFC 6531). */
  smtputf8?: boolean;
  /** RET= (RFC 3461). */
  ret?: string;
  /** ENVID= xtext (RFC 3461), verbatim. */
  envid?: string;
  /** AUTH= (RFC 4954), verbatim. */
  auth?: string;
}

/** Parameters of RCPT TO the relay may pass on (RFC 3461), verbatim. */
export interface RcptParams {
  /** NOTIFY=. */
  notify?: string;
  /** ORCPT=. */
  orcpt?: string;
}

/** What the relay tells a server about the real client (XCLIENT / XFORWARD attributes). */
export interface ClientIdentity {
  /** The client's address. */
  ip: string;
  /** The client's TCP port. */
  port: number;
  /** The name the client gave in HELO/EHLO, if any. */
  helo?: string;
  /** "ESMTP" after EHLO, "SMTP" after HELO. */
  proto?: "SMTP" | "ESMTP";
}

/** How the client's identity reached the server: by its address on the wire ("source"), by
 * XCLIENT, by XFORWARD, or not at all ("none"). */
export type ClientAnnouncement = "source" | "xclient" | "xforward" | "none";

const encoder = new TextEncoder();
const decoder = new TextDecoder("latin1");

/** One SMTP client connection to the server, reused across the transactions of a session. */
export class RelayClient {
  #io: SessionIo;
  #reader: LineReader;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #config: RelayConfig;
  #extensions = new Map<string, string>();
  #plainExtensions: Map<string, string> | undefined;
  #ehloName = "";
  #usable = true;
  #closed = false;
  #greeting: SmtpReply | undefined;
  #tls: { protocol: string; cipher: string } | undefined;
  #tlsFailure: string | undefined;
  #source: "client" | "gateway" | undefined;
  #announced: ClientAnnouncement = "none";
  #announceNote: string | undefined;
  /** XFORWARD line sent before every MAIL (its attributes last one transaction). */
  #xforward: string | undefined;
  /** Commands written whose reply is not read yet (a connection with one is never reused). */
  #pending = 0;
  /** AUTH was sent: the server's session belongs to one client and is never reused. */
  #private = false;
  /** Client sessions this connection has served (see relay_pool.ts). */
  #sessions = 1;
  /** When it was opened (performance.now()). */
  readonly openedAt = performance.now();

  private constructor(io: SessionIo, config: RelayConfig) {
    this.#io = io;
    this.#config = config;
    setNoDelay(io);
    this.#reader = new LineReader(io.readable);
    this.#writer = io.writable.getWriter();
    // A write to a dead peer rejects; the error is reported by the next reply read instead.
    this.#writer.closed.catch(() => {});
  }

  /**
   * Connects, reads the greeting and says EHLO (HELO if EHLO is refused). Throws `RelayError`:
   * "connect" (refused/unreachable/connect timeout), "refused" (non-2xx greeting or HELO),
   * "timeout", "closed", "protocol".
   */
  static async open(opts: RelayOptions): Promise<RelayClient> {
    try {
      return await RelayClient.#open(opts);
    } catch (e) {
      if (!(e instanceof RelayError && e.kind === "tls")) throw e;
      // Opportunistic: a server whose TLS is broken still gets the mail, in plaintext.
      const client = await RelayClient.#open({
        ...opts,
        config: { ...opts.config, starttls: "off" },
      });
      client.#tlsFailure = e.message;
      return client;
    }
  }

  static async #open(opts: RelayOptions): Promise<RelayClient> {
    const connectMs = secondsToMs(opts.config.connectTimeout);
    const attempt = opts.connect(opts.server, connectMs).then(
      (io) => ({ io }),
      (error: unknown) => ({ error }),
    );
    const r = await raceDeadline(attempt, connectMs);
    if (!r.ok) {
      // Close the connection if it completes after we gave up on it.
      attempt.then((a) => "io" in a && closeQuietly(a.io));
      throw new RelayError("connect", `Cannot connect to ${fmt(opts.server)}: timeout`);
    }
    if ("error" in r.value) {
      throw new RelayError("connect", `Cannot connect to ${fmt(opts.server)}`, {
        cause: r.value.error,
      });
    }
    const client = new RelayClient(r.value.io, opts.config);
    const source = (r.value.io as { relaySource?: unknown }).relaySource;
    client.#source = source === "client" || source === "gateway" ? source : undefined;
    if (client.#source === "client") client.#announced = "source";
    try {
      await client.#handshake(opts.hostname);
      if (client.#source === "gateway" && opts.client) {
        await client.announceClient(opts.client, opts.hostname);
      }
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  /** The server's greeting. */
  get greeting(): SmtpReply | undefined {
    return this.#greeting;
  }

  /** The negotiated TLS protocol and cipher; undefined while in plaintext. */
  get tls(): { protocol: string; cipher: string } | undefined {
    return this.#tls;
  }

  /** Why STARTTLS was advertised but not used (refused or failed handshake), if it was. */
  get tlsFailure(): string | undefined {
    return this.#tlsFailure;
  }

  /** The first line of the server's EHLO reply (its host name); "" when it only spoke HELO. */
  get ehloName(): string {
    return this.#ehloName;
  }

  /** The address the connection left with ("client" or "gateway"), when the connector said. */
  get source(): "client" | "gateway" | undefined {
    return this.#source;
  }

  /** How the server learnt the client's identity (see ClientAnnouncement). */
  get announced(): ClientAnnouncement {
    return this.#announced;
  }

  /** Why no announcement was made, or what the server answered, when it matters for logs. */
  get announceNote(): string | undefined {
    return this.#announceNote;
  }

  /**
   * Tells the server who the real client is, when this connection carries the gateway's address:
   * XCLIENT (Postfix XCLIENT_README) when offered — ADDR, PORT, HELO, PROTO, NAME, each only if
   * the server lists it; NAME=[UNAVAILABLE] since SSG does no reverse lookup; values xtext-encoded
   * — after which the server starts a new session (220) and we say EHLO again, with the client's
   * HELO name as the README's example does. Else XFORWARD (Postfix XFORWARD_README), re-sent
   * before every MAIL because its attributes last one transaction. Outside a transaction only.
   * A refusal (e.g. 550: the gateway is not in smtpd_authorized_xclient_hosts) is not an error:
   * the session goes on with the gateway's identity and `announceNote` says why.
   */
  async announceClient(id: ClientIdentity, hostname: string): Promise<ClientAnnouncement> {
    const ehloName = id.helo !== undefined && /^[\x21-\x7e]{1,255}$/.test(id.helo)
      ? id.helo
      : hostname;
    const xclient = this.#extensions.get("XCLIENT");
    if (xclient !== undefined) {
      const line = "XCLIENT " + identityAttributes(id, attributeSet(xclient), true).join(" ");
      const r = await this.command(line);
      if (r.code === 220) {
        const ehlo = await this.command(`EHLO ${ehloName}`);
        if (ehlo.code !== 250) {
          throw new RelayError("refused", `Server refused EHLO after XCLIENT with ${ehlo.code}`, {
            reply: ehlo,
          });
        }
        this.#readExtensions(ehlo);
        this.#announced = "xclient";
        return this.#announced;
      }
      this.#announceNote = `XCLIENT answered ${r.code}`;
    }
    const xforward = this.#extensions.get("XFORWARD");
    if (xforward !== undefined) {
      const attrs = identityAttributes(id, attributeSet(xforward), false);
      this.#xforward = "XFORWARD " + attrs.join(" ");
      this.#announced = "xforward";
      return this.#announced;
    }
    this.#announceNote ??= "the server offers neither XCLIENT nor XFORWARD";
    return this.#announced;
  }

  /** The server's EHLO keywords before STARTTLS (what a plaintext client is offered), in order;
   * undefined when it only spoke HELO. */
  get plainExtensions(): ReadonlyMap<string, string> | undefined {
    return this.#plainExtensions;
  }

  /** EHLO keywords (upper case) the server advertised, with their parameters. */
  get extensions(): ReadonlyMap<string, string> {
    return this.#extensions;
  }

  /** False after any failure, QUIT or close: the session must open a new client. */
  get usable(): boolean {
    return this.#usable;
  }

  /** Client sessions this connection has served (1 until it is reused). */
  get sessions(): number {
    return this.#sessions;
  }

  /**
   * Whether another client's session may use this connection after this one (relay_pool.ts):
   * it is usable, left with the gateway's address (a connection with the client's address is
   * that client's), has no command waiting for its reply (replies stay in step), never carried
   * AUTH (the server's session would stay authenticated as this client), and did not announce
   * its client with XCLIENT (the server's session now IS that client: Postfix re-checks
   * smtpd_authorized_xclient_hosts against the announced client and refuses a second XCLIENT,
   * seen in test/netns/relay_source_test.ts).
   */
  get reusable(): boolean {
    return this.#usable && this.#source === "gateway" && this.#pending === 0 && !this.#private &&
      this.#announced !== "xclient";
  }

  /**
   * Hands this connection, idle between transactions, to the session of client `id`: with
   * XFORWARD the next MAIL carries the new client's attributes; the session count goes up.
   */
  reannounce(id: ClientIdentity): void {
    this.#sessions++;
    if (this.#announced === "xforward") {
      const offered = attributeSet(this.#extensions.get("XFORWARD") ?? "");
      this.#xforward = "XFORWARD " + identityAttributes(id, offered, false).join(" ");
    }
  }

  /**
   * Sends MAIL FROM, passing SIZE/BODY only when the server advertised SIZE and 8BITMIME.
   * SMTPUTF8, RET and ENVID are passed verbatim when given: the session checks first (with
   * `lacks`) that the server advertised them, so they are never dropped silently.
   */
  mail(address: string, params: MailParams = {}): Promise<SmtpReply> {
    let line = `MAIL FROM:<${address}>`;
    if (params.size !== undefined && this.#extensions.has("SIZE")) line += ` SIZE=${params.size}`;
    if (params.body !== undefined && this.#extensions.has("8BITMIME")) {
      line += ` BODY=${params.body}`;
    }
    if (params.smtputf8) line += " SMTPUTF8";
    if (params.ret !== undefined) line += ` RET=${params.ret}`;
    if (params.envid !== undefined) line += ` ENVID=${params.envid}`;
    if (params.auth !== undefined) line += ` AUTH=${params.auth}`;
    return this.command(line);
  }

  /** Sends RCPT TO, with NOTIFY and ORCPT verbatim when given (RFC 3461). */
  rcpt(address: string, params: RcptParams = {}): Promise<SmtpReply> {
    let line = `RCPT TO:<${address}>`;
    if (params.notify !== undefined) line += ` NOTIFY=${params.notify}`;
    if (params.orcpt !== undefined) line += ` ORCPT=${params.orcpt}`;
    return this.command(line);
  }

  /**
   * The first extension that MAIL/RCPT parameters need and this server did not advertise
   * (SMTPUTF8 for `smtputf8`, DSN for RET/ENVID/NOTIFY/ORCPT), or undefined.
   */
  lacks(params: MailParams & RcptParams): string | undefined {
    if (params.smtputf8 && !this.#extensions.has("SMTPUTF8")) return "SMTPUTF8";
    const dsn = params.ret ?? params.envid ?? params.notify ?? params.orcpt;
    if (dsn !== undefined && !this.#extensions.has("DSN")) return "DSN";
    if (params.auth !== undefined && !this.#extensions.has("AUTH")) return "AUTH";
    return undefined;
  }

  /** Sends RSET. */
  rset(): Promise<SmtpReply> {
    return this.command("RSET");
  }

  /**
   * Sends DATA; on 354 sends `content` (canonical CRLF text, not yet stuffed; the parts are
   * concatenated, e.g. our Received header and the message) dot-stuffed with the
   * final "." and returns the server's reply to it (waiting up to `dataTimeout`). When DATA itself
   * is not answered 354, returns that reply and sends nothing.
   */
  async data(...content: Uint8Array[]): Promise<SmtpReply> {
    const go = await this.command("DATA");
    if (go.code !== 354) return go;
    const dataMs = secondsToMs(this.#config.dataTimeout);
    return await this.#exchange(dotStuff(...content), dataMs);
  }

  /**
   * Sends the whole message as one `BDAT <n> LAST` chunk (RFC 3030; only when the server
   * advertised CHUNKING): the command line and the bytes, unstuffed, in one write, then the reply
   * within `dataTimeout`. `content` parts are concatenated (our Received header, the message).
   */
  async bdat(...content: Uint8Array[]): Promise<SmtpReply> {
    if (!this.#usable) throw new RelayError("closed", "Relay connection is not usable");
    const size = content.reduce((n, c) => n + c.length, 0);
    const head = encoder.encode(`BDAT ${size} LAST\r\n`);
    const out = new Uint8Array(head.length + size);
    out.set(head, 0);
    let o = head.length;
    for (const c of content) {
      out.set(c, o);
      o += c.length;
    }
    const dataMs = secondsToMs(this.#config.dataTimeout);
    return await this.#exchange(out, dataMs);
  }

  /** Sends one command line (CRLF added) and reads the reply within `replyTimeout`. */
  async command(line: string): Promise<SmtpReply> {
    if (!this.#usable) throw new RelayError("closed", "Relay connection is not usable");
    const ms = secondsToMs(this.#config.replyTimeout);
    if (this.#xforward !== undefined && line.startsWith("MAIL ")) {
      return await this.#xforwardThenMail(line, ms);
    }
    if (/^AUTH /i.test(line)) this.#private = true;
    return await this.#exchange(encoder.encode(line + "\r\n"), ms);
  }

  /**
   * XFORWARD, then MAIL. With PIPELINING (RFC 2920: XFORWARD and MAIL may both be in a group,
   * as Postfix's own SMTP client sends them) both lines go in one write and the two replies are
   * read in order: one round trip on the inside link instead of two. A refused XFORWARD stops
   * further XFORWARDs; the MAIL (already sent) still counts, as it does unpipelined.
   */
  async #xforwardThenMail(line: string, ms: number): Promise<SmtpReply> {
    const xforward = this.#xforward + "\r\n";
    if (!this.#extensions.has("PIPELINING")) {
      this.#xforwardAnswered(await this.#exchange(encoder.encode(xforward), ms));
      return await this.#exchange(encoder.encode(line + "\r\n"), ms);
    }
    this.#pending += 2;
    try {
      await this.#write(encoder.encode(xforward + line + "\r\n"), ms);
      this.#xforwardAnswered(await this.#readReply(ms));
      return await this.#readReply(ms);
    } finally {
      this.#pending -= 2;
    }
  }

  /** Writes `bytes` and reads one reply, each within `ms`; counted in `#pending` until the
   * reply is in. */
  async #exchange(bytes: Uint8Array, ms: number): Promise<SmtpReply> {
    this.#pending++;
    try {
      await this.#write(bytes, ms);
      return await this.#readReply(ms);
    } finally {
      this.#pending--;
    }
  }

  /** The reply to XFORWARD: a refusal stops further XFORWARDs (the mail still goes). */
  #xforwardAnswered(r: SmtpReply): void {
    if (r.code !== 250) {
      this.#xforward = undefined;
      this.#announced = "none";
      this.#announceNote = `XFORWARD answered ${r.code}`;
    }
  }

  /** Sends QUIT, waits briefly for 221, and closes. Never throws. */
  async quit(): Promise<SmtpReply | undefined> {
    let r: SmtpReply | undefined;
    if (this.#usable) {
      try {
        const ms = Math.min(QUIT_WAIT_MS, secondsToMs(this.#config.replyTimeout));
        await this.#write(encoder.encode("QUIT\r\n"), ms);
        r = await this.#readReply(ms);
      } catch { /* closing anyway */ }
    }
    this.close();
    return r;
  }

  /** Closes the connection; safe to call twice. */
  close(): void {
    this.#usable = false;
    if (this.#closed) return;
    this.#closed = true;
    this.#reader.cancel();
    closeQuietly(this.#io);
  }

  async #handshake(hostname: string): Promise<void> {
    const replyMs = secondsToMs(this.#config.replyTimeout);
    const greeting = await this.#readReply(replyMs);
    this.#greeting = greeting;
    if (greeting.code !== 220) {
      throw new RelayError("refused", `Server greeting was ${greeting.code}`, { reply: greeting });
    }
    const ehlo = await this.command(`EHLO ${hostname}`);
    if (ehlo.code === 250) {
      this.#readExtensions(ehlo);
      // What the server offers a client in plaintext, in its order (STARTTLS included): the
      // view a mirroring session gives a client that has not started TLS.
      this.#plainExtensions = new Map(this.#extensions);
      if (
        this.#extensions.has("STARTTLS") && (this.#config.starttls ?? "opportunistic") !== "off"
      ) {
        await this.#startTls(hostname, replyMs);
      }
      return;
    }
    if (ehlo.code >= 500 && ehlo.code <= 599) {
      const helo = await this.command(`HELO ${hostname}`);
      if (helo.code === 250) return;
      throw new RelayError("refused", `Server refused HELO with ${helo.code}`, { reply: helo });
    }
    throw new RelayError("refused", `Server refused EHLO with ${ehlo.code}`, { reply: ehlo });
  }

  #readExtensions(ehlo: SmtpReply): void {
    this.#extensions.clear();
    this.#ehloName = (ehlo.lines[0] ?? "").split(" ")[0];
    for (const line of ehlo.lines.slice(1)) {
      const [kw, ...rest] = line.split(" ");
      if (kw) this.#extensions.set(kw.toUpperCase(), rest.join(" "));
    }
  }

  /** STARTTLS, the handshake and the second EHLO; a refusal leaves the connection in plaintext. */
  async #startTls(hostname: string, replyMs: number): Promise<void> {
    const r = await this.command("STARTTLS");
    if (r.code !== 220) {
      this.#tlsFailure = `Server answered STARTTLS with ${r.code}`;
      return;
    }
    // Security: anything after the 220 came in plaintext; it is dropped, not read as a reply.
    this.#reader.release();
    this.#writer.releaseLock();
    try {
      const tls = await startClientTls(this.#io, {}, replyMs);
      this.#io = tls;
      this.#tls = { protocol: tls.protocol, cipher: tls.cipher };
    } catch (e) {
      this.#usable = false;
      this.#closed = true;
      closeQuietly(this.#io);
      throw new RelayError("tls", e instanceof Error ? e.message : String(e), { cause: e });
    }
    this.#reader = new LineReader(this.#io.readable);
    this.#writer = this.#io.writable.getWriter();
    this.#writer.closed.catch(() => {});
    const ehlo = await this.command(`EHLO ${hostname}`);
    if (ehlo.code !== 250) {
      throw new RelayError("refused", `Server refused EHLO after STARTTLS with ${ehlo.code}`, {
        reply: ehlo,
      });
    }
    this.#readExtensions(ehlo);
  }

  async #write(bytes: Uint8Array, ms: number): Promise<void> {
    const w = this.#writer.write(bytes).then(() => undefined, (e: unknown) => e ?? "write failed");
    const r = await raceDeadline(w, ms);
    if (!r.ok) {
      this.close();
      throw new RelayError("timeout", "Timed out writing to the server");
    }
    if (r.value !== undefined) {
      this.close();
      throw new RelayError("closed", "Server connection lost while writing", { cause: r.value });
    }
  }

  /** Reads one (possibly multi-line) reply. Enhanced codes are split off the text. */
  async #readReply(ms: number): Promise<SmtpReply> {
    const deadline = performance.now() + ms;
    const texts: string[] = [];
    let code = -1;
    let count = 0;
    for (;;) {
      const left = Math.max(0, deadline - performance.now());
      const r = await this.#reader.readLine(MAX_SERVER_LINE, left);
      if (r.kind !== "line") {
        this.close();
        if (r.kind === "timeout") {
          throw new RelayError("timeout", "Timed out waiting for the server");
        }
        if (r.kind === "eof" || r.kind === "aborted") {
          throw new RelayError("closed", "Server closed the connection");
        }
        throw new RelayError("protocol", "Server sent an over-long reply line");
      }
      const text = decoder.decode(r.line);
      const m = /^([2-5][0-9][0-9])([ -]|$)/.exec(text);
      const lineCode = m ? Number(m[1]) : -1;
      if (!m || (code !== -1 && lineCode !== code)) {
        this.close();
        throw new RelayError(
          "protocol",
          `Malformed server reply: ${sanitizeText(text.slice(0, 80))}`,
        );
      }
      code = lineCode;
      if (++count > MAX_SERVER_REPLY_LINES) {
        this.close();
        throw new RelayError("protocol", "Server reply has too many lines");
      }
      if (texts.length < MAX_REPLY_LINES) texts.push(text.slice(4));
      if (m[2] !== "-") break;
    }
    return splitEnhanced(code, texts);
  }
}

/**
 * Builds a sanitised reply from the server's code and raw text lines, moving a leading enhanced
 * status code of the right class (RFC 2034 §4) into `enhanced`.
 */
export function splitEnhanced(code: number, texts: string[]): SmtpReply {
  const cls = String(code)[0];
  let enhanced: string | undefined;
  const lines = texts.map((t) => {
    const sp = t.indexOf(" ");
    const head = sp < 0 ? t : t.slice(0, sp);
    if (isEnhancedCode(head) && head[0] === cls) {
      enhanced ??= head;
      return sanitizeText(sp < 0 ? "" : t.slice(sp + 1));
    }
    return sanitizeText(t);
  });
  return { code, enhanced, lines };
}

/** The attribute names an XCLIENT/XFORWARD EHLO keyword lists, upper case. */
function attributeSet(params: string): Set<string> {
  return new Set(params.split(/\s+/).filter((a) => a !== "").map((a) => a.toUpperCase()));
}

/**
 * `NAME=value` attributes for XCLIENT (`xclient`) or XFORWARD, only those in `offered`. IPv6
 * addresses carry the "IPV6:" prefix both extensions require; values are xtext (RFC 3461 §4).
 */
export function identityAttributes(
  id: ClientIdentity,
  offered: ReadonlySet<string>,
  xclient: boolean,
): string[] {
  const out: string[] = [];
  const add = (name: string, value: string) => {
    if (offered.has(name)) out.push(`${name}=${value}`);
  };
  add("ADDR", id.ip.includes(":") ? `IPV6:${id.ip}` : id.ip);
  add("PORT", String(id.port));
  add("HELO", id.helo ? xtext(id.helo) : "[UNAVAILABLE]");
  if (id.proto) add("PROTO", id.proto);
  add("NAME", "[UNAVAILABLE]");
  if (xclient) add("REVERSE_NAME", "[UNAVAILABLE]");
  return out;
}

/** RFC 3461 §4 xtext: "+", "=", controls, space and non-ASCII as +HH. */
export function xtext(value: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(value)) {
    out += b >= 0x21 && b <= 0x7e && b !== 0x2b && b !== 0x3d
      ? String.fromCharCode(b)
      : "+" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function fmt(s: { ip: string; port: number }): string {
  return s.ip.includes(":") ? `[${s.ip}]:${s.port}` : `${s.ip}:${s.port}`;
}
