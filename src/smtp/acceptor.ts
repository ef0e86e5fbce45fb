/**
 * The responder's listening side: accepts the diverted connections, finds out which protected
 * server each one was meant for, applies the connection limits, and runs one SMTP session each.
 *
 * Trusts: the flow table (via `originalDestination`) as the only proof that a connection was
 * diverted. Security: the responder port is also reachable directly; a connection with no flow
 * entry was not diverted by SSG (somebody dialled the port) and is closed without a greeting —
 * otherwise anyone could use the gateway as a relay to arbitrary addresses.
 * Limits: `smtp.maxSessions` in all and `smtp.maxSessionsPerClient` per client IP (421 past either,
 * as Postfix's `smtpd_client_connection_count_limit` and Exim's `smtp_accept_max_per_host` do).
 */
import type { SsgConfig } from "../config/config.ts";
import type { EventLog } from "../log/log.ts";
import type { Judge } from "../policy/verdict.ts";
import { serveSession, type VerdictActions } from "./session.ts";
import type { SessionIo } from "./session_io.ts";
import { MemoryBudget } from "./memory_budget.ts";
import { connectTcp } from "./relay_connector.ts";

/** Where a diverted connection was going. */
export interface Destination {
  /** The protected server's address as text. */
  ip: string;
  /** The protected server's TCP port. */
  port: number;
}

/** What the acceptor needs from the rest of the gateway. */
export interface AcceptorOptions {
  /** Local addresses the responder listens on (one per family). */
  addresses: string[];
  /** Responder port. */
  port: number;
  /** The running configuration (limits, timeouts, hostname). */
  config: SsgConfig;
  /** The policy. */
  judge: Judge;
  /** Event log. */
  log: EventLog;
  /** The original destination of a diverted connection from this client address and port. */
  originalDestination: (ip: string, port: number) => Promise<Destination | undefined>;
  /** Carries out quarantine/tag/bcc/redirect/alert/blacklist verdicts. */
  actions?: VerdictActions;
  /**
   * How to reach a server for the session of `client` (default: `connectTcp`, the gateway's
   * address). main passes `RelayConnector.connect` (relay.source); tests may override.
   */
  connect?: (dest: Destination, timeoutMs: number, client: Destination) => Promise<SessionIo>;
}

/** How long sessions get to finish after a stop before their connections are cut. */
const DRAIN_MS = 10_000;
const encoder = new TextEncoder();

/** Accepts diverted connections and runs their SMTP sessions. */
export class Acceptor {
  #opts: AcceptorOptions;
  #listeners: Deno.TcpListener[] = [];
  #sessions = new Map<string, { conn: Deno.Conn; done: Promise<unknown> }>();
  #perClient = new Map<string, number>();
  #shutdown = new AbortController();
  /** One bound on message bytes held by all sessions together. */
  #memory: MemoryBudget;
  #totals = {
    sessions: 0,
    transactions: 0,
    forwarded: 0,
    discarded: 0,
    rejected: 0,
    failed: 0,
    clientErrors: 0,
    refusedNoFlow: 0,
    refusedLimit: 0,
  };
  #closed: Promise<void>;
  #resolveClosed!: () => void;
  #closing: Promise<void> | undefined;
  #seq = 0;
  #prefix = crypto.getRandomValues(new Uint8Array(3)).reduce(
    (s, b) => s + b.toString(16).padStart(2, "0"),
    "",
  );

  /**
   * Sets up the acceptor; nothing listens until `start()`. All sessions share one bound on
   * stored message bytes, `smtp.maxInflightBytes`.
   */
  constructor(opts: AcceptorOptions) {
    this.#opts = opts;
    this.#memory = new MemoryBudget(opts.config.smtp.maxInflightBytes);
    this.#closed = new Promise((r) => this.#resolveClosed = r);
  }

  /** Resolves once the acceptor has stopped (after `close()`). */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /** Number of sessions running now. */
  get activeSessions(): number {
    return this.#sessions.size;
  }

  /**
   * Counters since start (for the periodic `ssg.stats` log line): sessions ended, transactions,
   * messages by outcome, client-caused errors, refusals at accept, and what is running now.
   */
  stats(): Record<string, number> {
    return {
      ...this.#totals,
      sessionsActive: this.#sessions.size,
      inflightBytes: this.#memory.used,
    };
  }

  /** Opens the listeners (throws if an address can't be bound) and starts accepting. */
  start(): void {
    for (const hostname of this.#opts.addresses) {
      const listener = Deno.listen({ hostname, port: this.#opts.port, transport: "tcp" });
      this.#listeners.push(listener);
      this.#opts.log.event("responder.listen", { address: hostname, port: this.#opts.port });
      void this.#acceptLoop(listener);
    }
  }

  async #acceptLoop(listener: Deno.TcpListener): Promise<void> {
    while (!this.#shutdown.signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (this.#shutdown.signal.aborted || err instanceof Deno.errors.BadResource) return;
        // EMFILE and friends: log, back off briefly, keep serving the sessions we have.
        this.#opts.log.event("responder.accept_error", { error: String(err) }, "error");
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      void this.#handle(conn);
    }
  }

  async #handle(conn: Deno.TcpConn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const client = { ip: remote.hostname, port: remote.port };
    const id = `${this.#prefix}${(++this.#seq).toString(36).padStart(4, "0")}`;
    const { log, config } = this.#opts;

    const server = await this.#opts.originalDestination(client.ip, client.port);
    if (!server) {
      log.event("smtp.refused", {
        session: id,
        client: `${client.ip}:${client.port}`,
        reason: "no diverted flow for this connection (direct connection to the responder port)",
      }, "warning");
      this.#totals.refusedNoFlow++;
      safeClose(conn);
      return;
    }
    const count = this.#perClient.get(client.ip) ?? 0;
    const limit = this.#sessions.size >= config.smtp.maxSessions
      ? "too many sessions"
      : count >= config.smtp.maxSessionsPerClient
      ? "too many sessions from this client"
      : undefined;
    if (limit) {
      log.event("smtp.limit", {
        session: id,
        client: `${client.ip}:${client.port}`,
        server: `${server.ip}:${server.port}`,
        limit,
      }, "warning");
      this.#totals.refusedLimit++;
      await conn.write(
        encoder.encode(`421 4.7.0 ${config.gateway.hostname} ${limit}, try again later\r\n`),
      )
        .catch(() => {});
      safeClose(conn);
      return;
    }
    this.#perClient.set(client.ip, count + 1);
    const connect = this.#opts.connect ?? connectTcp;
    const done = serveSession(conn, {
      id,
      client,
      server,
      hostname: config.gateway.hostname,
      smtp: config.smtp,
      relay: config.relay,
      judge: this.#opts.judge,
      log,
      connectUpstream: (dest, timeoutMs) => connect(dest, timeoutMs, client),
      shutdown: this.#shutdown.signal,
      actions: this.#opts.actions,
      memory: this.#memory,
    }).then((summary) => {
      const t = this.#totals;
      t.sessions++;
      t.transactions += summary.transactions;
      t.forwarded += summary.forwarded;
      t.discarded += summary.discarded;
      t.rejected += summary.rejected;
      t.failed += summary.failed;
      t.clientErrors += summary.errors;
    }).catch((err) => {
      // serveSession answers misbehaving peers itself; reaching here is a bug, not a peer problem.
      log.event("smtp.crash", { session: id, error: String(err?.stack ?? err) }, "error");
    }).finally(() => {
      safeClose(conn);
      this.#sessions.delete(id);
      const n = (this.#perClient.get(client.ip) ?? 1) - 1;
      if (n <= 0) this.#perClient.delete(client.ip);
      else this.#perClient.set(client.ip, n);
    });
    this.#sessions.set(id, { conn, done });
  }

  /**
   * Stops accepting, asks every session to end (they answer 421 at their next turn), waits up to
   * 10 s, then cuts what is left. No transaction is acknowledged on the way out: a cut session never
   * got its 250, so the client keeps the message and retries. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#shutdown.abort();
      for (const l of this.#listeners) {
        try {
          l.close();
        } catch { /* already closed */ }
      }
      const all = Promise.all([...this.#sessions.values()].map((s) => s.done));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([all, new Promise((r) => timer = setTimeout(r, DRAIN_MS))]);
      clearTimeout(timer);
      for (const s of this.#sessions.values()) safeClose(s.conn);
      await all;
      this.#resolveClosed();
    })();
    return this.#closing;
  }
}

function safeClose(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}
