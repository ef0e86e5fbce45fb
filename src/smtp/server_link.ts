/**
 * The session's connection to the protected server: opened on first need, reused across the
 * session's transactions, reset when a transaction is abandoned, and dropped (with 421 to the
 * client) when the server goes away.
 *
 * Trusts: the server's replies only through `RelayClient` (codes checked, text sanitised).
 * Limits: every wait is the relay's (connect, reply and data timeouts in `relay:`). Any failure
 * to reach the server is a 4xx to the client, never a 250 (nothing is lost; the client retries).
 */
import { type MailParams, RelayClient, RelayError } from "./relay_client.ts";
import { reply, type SmtpReply } from "./reply.ts";
import type { SessionCore } from "./session_core.ts";

/** The session's relay connection and its transaction state. */
export class ServerLink {
  #core: SessionCore;
  /** The relay client; undefined before first use and after a failure. */
  relay: RelayClient | undefined;
  /** Whether the server holds a MAIL of ours that needs an RSET. */
  inTransaction = false;

  /** A link for the session `core`. */
  constructor(core: SessionCore) {
    this.#core = core;
  }

  /** The relay client, connected on first use; undefined (and 451 sent) when unreachable. */
  async open(): Promise<RelayClient | undefined> {
    if (this.relay?.usable) return this.relay;
    this.relay = undefined;
    this.inTransaction = false;
    try {
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
      const reused = this.relay?.usable === true;
      const relay = await this.open();
      if (!relay) return undefined;
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
          continue;
        }
        this.lost(e, "mail");
        return undefined;
      }
      if (reused && attempt === 0 && r.code === 421) {
        this.error(new RelayError("closed", "Server closed the idle connection"), "mail");
        relay.close();
        continue;
      }
      return r;
    }
    return undefined; // not reached: the second attempt always returns
  }
}

/** The reply for a parameter whose extension the server does not offer (RFC 5321 §4.1.1.11). */
export function unsupported(extension: string): SmtpReply {
  return reply(555, "5.5.4", `Unsupported option: ${extension}`);
}
