/**
 * The session's connection to the protected server: opened on first need (or taken from the
 * connections earlier sessions left idle, relay_pool.ts, when MAIL needs it), reused across the
 * session's transactions, reset when a transaction is abandoned, dropped (with 421 to the
 * client) when the server goes away, and at the session's end either kept for the next session
 * or closed with QUIT (`release`).
 *
 * Trusts: the server's replies only through `RelayClient` (codes checked, text sanitised).
 * Limits: every wait is the relay's (connect, reply and data timeouts in `relay:`). Any failure
 * to reach the server is a 4xx to the client, never a 250 (nothing is lost; the client retries).
 */
import { type MailParams, RelayClient, RelayError } from "./relay_client.ts";
import { RelayPool } from "./relay_pool.ts";
import { reply, type SmtpReply } from "./reply.ts";
import type { SessionCore } from "./session_core.ts";

/** The session's relay connection and its transaction state. */
export class ServerLink {
  #core: SessionCore;
  /** The relay client; undefined before first use and after a failure. */
  relay: RelayClient | undefined;
  /** Whether the server holds a MAIL of ours that needs an RSET. */
  inTransaction = false;
  /** The relay was taken from the pool and has not answered a command for this session yet. */
  #fromPool = false;

  /** A link for the session `core`. */
  constructor(core: SessionCore) {
    this.#core = core;
  }

  /**
   * The relay client, connected on first use; undefined (and 451 sent) when unreachable.
   * `pooled`: a connection an earlier session left idle may be used (only MAIL asks: it alone
   * retries on a new connection when the idle one turns out closed).
   */
  async open(pooled = false): Promise<RelayClient | undefined> {
    if (this.relay?.usable) return this.relay;
    this.relay = undefined;
    this.inTransaction = false;
    try {
      if (pooled) {
        const kept = this.#takeKept();
        if (kept) return kept;
      }
      return await this.connect();
    } catch (e) {
      this.error(e, "connect");
      this.#core.send(
        reply(451, "4.4.1", "Mail server temporarily unavailable, try again later"),
      );
      return undefined;
    }
  }

  /** Connects and says EHLO; throws `RelayError` (the caller chooses the reply). */
  async connect(): Promise<RelayClient> {
    const ctx = this.#core.ctx;
    const t0 = performance.now();
    const relay = await RelayClient.open({
      server: ctx.server,
      hostname: ctx.hostname,
      connect: ctx.connectUpstream,
      config: ctx.relay,
      // Who the server should see (relay.source / XCLIENT). On a first contact the connection is
      // made before the client's EHLO, so HELO is not known yet and XCLIENT omits it.
      client: { ...ctx.client, helo: this.#core.helo, proto: this.#core.protocol },
    });
    this.relay = relay;
    this.inTransaction = false;
    this.#fromPool = false;
    // Every connection refreshes what SSG knows of the server (hello_phase.ts mirrors it).
    ctx.profiles?.learn(ctx.server, {
      greeting: relay.greeting?.lines ?? [],
      ehloName: relay.ehloName,
      extensions: relay.extensions,
      tls: relay.tls !== undefined,
      plainExtensions: relay.plainExtensions,
    });
    ctx.log.event("relay.connect", {
      session: ctx.id,
      server: `${ctx.server.ip}:${ctx.server.port}`,
      ms: Math.round(performance.now() - t0),
      extensions: [...relay.extensions.keys()],
      tls: relay.tls ? `${relay.tls.protocol} ${relay.tls.cipher}` : "none",
      source: relay.source, // relay.source: the address the server saw (relay_connector)
      announced: relay.announced,
      announce_note: relay.announceNote,
    });
    if (relay.tlsFailure) {
      ctx.log.event("relay.tls_failed", {
        session: ctx.id,
        server: `${ctx.server.ip}:${ctx.server.port}`,
        reason: relay.tlsFailure,
        fallback: "plaintext",
      }, "warning");
    }
    return relay;
  }

  /** The pool key of this session's server, when its connections may be kept (gateway source). */
  #poolKey(): string | undefined {
    const ctx = this.#core.ctx;
    if (!ctx.relayPool || ctx.relay.source !== "gateway") return undefined;
    return RelayPool.key(ctx.server, ctx.hostname);
  }

  /** An idle connection of an earlier session, announced for this client; undefined if none. */
  #takeKept(): RelayClient | undefined {
    const ctx = this.#core.ctx;
    const key = this.#poolKey();
    const relay = key ? ctx.relayPool!.take(key, ctx.relay) : undefined;
    if (!relay) return undefined;
    relay.reannounce({ ...ctx.client, helo: this.#core.helo, proto: this.#core.protocol });
    this.relay = relay;
    this.inTransaction = false;
    this.#fromPool = true;
    ctx.log.event("relay.reuse", {
      session: ctx.id,
      server: `${ctx.server.ip}:${ctx.server.port}`,
      sessions: relay.sessions,
      age_s: Math.round((performance.now() - relay.openedAt) / 1000),
      tls: relay.tls ? `${relay.tls.protocol} ${relay.tls.cipher}` : "none",
      announced: relay.announced,
    }, "debug");
    return relay;
  }

  /**
   * The session is over: its connection is kept for the next session when it may be (relay_pool
   * module doc; an open transaction is reset first), else closed with QUIT. Never throws.
   */
  async release(): Promise<void> {
    const relay = this.relay;
    if (!relay) return;
    const key = this.#poolKey();
    if (key && relay.reusable) {
      await this.reset();
      if (
        this.relay === relay && relay.reusable &&
        this.#core.ctx.relayPool!.give(key, relay, this.#core.ctx.relay)
      ) {
        this.relay = undefined;
        return;
      }
    }
    this.relay = undefined;
    await relay.quit();
  }

  /** Logs a relay failure. */
  error(e: unknown, during: string): void {
    const ctx = this.#core.ctx;
    ctx.log.event("relay.error", {
      session: ctx.id,
      server: `${ctx.server.ip}:${ctx.server.port}`,
      during,
      kind: e instanceof RelayError ? e.kind : "internal",
      error: e instanceof Error ? e.message : String(e),
      cause: e instanceof Error && e.cause ? String(e.cause) : undefined,
    }, "warning");
  }

  /** Closes and forgets the relay connection. */
  drop(): void {
    this.relay?.close();
    this.relay = undefined;
    this.inTransaction = false;
  }

  /** The server went away mid-session: 421 4.4.2 and close, the client retries. */
  lost(e: unknown, during: string): void {
    const core = this.#core;
    this.error(e, during);
    this.drop();
    core.tx = undefined;
    core.send(
      reply(
        421,
        "4.4.2",
        `${core.name} Lost connection to the mail server, try again later`,
      ),
    );
    core.end = "relay-lost";
  }

  /** Cancels the server-side transaction, if any; a failure only drops the connection. */
  async reset(): Promise<void> {
    if (!this.inTransaction || !this.relay) return;
    this.inTransaction = false;
    try {
      const r = await this.relay.rset();
      if (r.code !== 250) throw new RelayError("protocol", `Server answered RSET with ${r.code}`);
    } catch (e) {
      this.error(e, "rset");
      this.relay.close();
      this.relay = undefined;
    }
  }

  /** A server reply of 421 means it is closing: the caller passes it on; the session ends too. */
  closing(r: SmtpReply): boolean {
    if (r.code !== 421) return false;
    this.drop();
    this.#core.tx = undefined;
    this.#core.end = "relay-lost";
    return true;
  }

  /**
   * Sends MAIL upstream. A reused connection may have been closed by the server while idle
   * (its own command timeout, often with a 421 we only read now): then, once, the connection is
   * replaced and MAIL sent again. Returns undefined when the reply to the client was already given.
   */
  async mail(address: string, params: MailParams): Promise<SmtpReply | undefined> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const idle = this.relay?.usable === true;
      // A second attempt never takes another idle connection: it may be as dead as the first.
      const relay = await this.open(attempt === 0);
      if (!relay) return undefined;
      const fromPool = this.#fromPool;
      this.#fromPool = false;
      const reused = idle || fromPool;
      const lacking = relay.lacks(params);
      // Offered from a cached profile, gone from the server now: refused as the server would
      // refuse an unknown parameter — never dropped (a DSN request lost) or sent regardless.
      if (lacking) return unsupported(lacking);
      let r: SmtpReply;
      try {
        r = await relay.mail(address, params);
      } catch (e) {
        if (reused && attempt === 0 && e instanceof RelayError && e.kind === "closed") {
          this.error(e, "mail-on-idle-connection");
          relay.close();
          if (fromPool) this.#stale();
          continue;
        }
        this.lost(e, "mail");
        return undefined;
      }
      if (reused && attempt === 0 && r.code === 421) {
        this.error(new RelayError("closed", "Server closed the idle connection"), "mail");
        relay.close();
        if (fromPool) this.#stale();
        continue;
      }
      if (fromPool && attempt === 0 && r.code >= 400 && r.code < 500) {
        // A limit of the connection, not of this mail (Exchange's messages per connection,
        // Postfix's smtpd_client_message_rate_limit counted per session...): once more on a
        // connection of this session's own; its answer, whatever it is, goes to the client.
        this.error(
          new RelayError("refused", `Server answered MAIL on a kept connection with ${r.code}`),
          "mail-on-kept-connection",
        );
        void relay.quit();
        this.relay = undefined;
        continue;
      }
      return r;
    }
    return undefined; // not reached: the second attempt always returns
  }

  /** A kept connection was closed by the server: the pool drops its others to that server. */
  #stale(): void {
    const key = this.#poolKey();
    if (key) this.#core.ctx.relayPool!.stale(key);
  }
}

/** The reply for a parameter whose extension the server does not offer (RFC 5321 §4.1.1.11). */
export function unsupported(extension: string): SmtpReply {
  return reply(555, "5.5.4", `Unsupported option: ${extension}`);
}
