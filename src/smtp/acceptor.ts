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
 * Both count what clients hold: a session's slot is given back when its conversation with the
 * client ends (after the 221, before SSG's own teardown — the QUIT to the server, the close), so
 * an MTA that opens its next connection right after 221 is never refused for a connection it no
 * longer has. `reconfigure()` (SIGHUP) changes the limits for the next connection at once.
 */
import type { SsgConfig } from "../config/config.ts";
import type { EventLog } from "../log/log.ts";
import type { Judge, RecipientCheck, StartChecks } from "../policy/verdict.ts";
import { serveSession, SHED, type VerdictActions } from "./session.ts";
import type { SessionIo } from "./session_io.ts";
import type { SessionContext } from "./session_context.ts";
import { MemoryBudget } from "./memory_budget.ts";
import { Admission, clientNetwork, type Ticket } from "./admission.ts";
import { RelayPool } from "./relay_pool.ts";
import { ServerProfiles } from "./server_profiles.ts";
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
  /** The policy's RCPT-time check (greylisting), passed to every session. */
  checkRecipient?: RecipientCheck;
  /** Early look-ups (see `SessionContext.prefetch`). */
  prefetch?: SessionContext["prefetch"];
  /** The policy's checks started at MAIL FROM (SPF). */
  startChecks?: StartChecks;
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

/** How often `smtp.pressure` may be logged (only when something was refused, shed or stressed). */
const PRESSURE_INTERVAL_MS = 10_000;

/** How long sessions get to finish after a stop before their connections are cut. */
const DRAIN_MS = 10_000;
const encoder = new TextEncoder();

/** Accepts diverted connections and runs their SMTP sessions. */
export class Acceptor {
  #opts: AcceptorOptions;
  #listeners: Deno.TcpListener[] = [];
  #sessions = new Map<string, { conn: Deno.Conn; done: Promise<unknown> }>();
  /** What each protected server looks like (greeting, EHLO), shared by all sessions. */
  #profiles: ServerProfiles;
  /** Relay connections kept open between sessions (relay_pool.ts). */
  #relayPool = new RelayPool();
  /** The connection limits, shedding and stress (see `admission.ts`). */
  #admission: Admission;
  /** "limit network" pairs already logged as refused in this pressure interval. */
  #loggedRefusals = new Set<string>();
  #pressureTimer: ReturnType<typeof setInterval> | undefined;
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
    shed: 0,
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
    this.#admission = new Admission(opts.config.smtp);
    this.#profiles = ServerProfiles.forConfig(opts.config.smtp);
    this.#closed = new Promise((r) => this.#resolveClosed = r);
  }

  /** Resolves once the acceptor has stopped (after `close()`). */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /** The addresses the responder listens on (after `start()`; port 0 becomes the real port). */
  get listenAddrs(): Deno.NetAddr[] {
    return this.#listeners.map((l) => l.addr as Deno.NetAddr);
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
      sessionsHeld: this.#admission.held,
      inflightBytes: this.#memory.used,
      ...this.#relayPool.stats(),
    };
  }

  /**
   * Applies a reloaded configuration: the next connection is checked against its session limits
   * and runs under its smtp/relay settings; the shared in-memory bound changes at once. Sessions
   * already running keep the settings they started with.
   */
  reconfigure(config: SsgConfig): void {
    this.#memory.limit = config.smtp.maxInflightBytes;
    this.#admission.setLimits(config.smtp);
    const before = this.#opts.config.smtp;
    if (
      before.serverProfileTtl !== config.smtp.serverProfileTtl ||
      before.serverProfileMax !== config.smtp.serverProfileMax
    ) {
      // A new cache of the new size and age; servers are learnt again at their next session.
      this.#profiles = ServerProfiles.forConfig(config.smtp);
    }
    this.#opts = { ...this.#opts, config };
  }

  /** Opens the listeners (throws if an address can't be bound) and starts accepting. */
  start(): void {
    // Under attack, one line per interval says what happened (refusals, sheds, stress, who).
    this.#pressureTimer = setInterval(() => this.#logPressure(), PRESSURE_INTERVAL_MS);
    Deno.unrefTimer(this.#pressureTimer as unknown as number);
    for (const hostname of this.#opts.addresses) {
      const listener = Deno.listen({ hostname, port: this.#opts.port, transport: "tcp" });
      this.#listeners.push(listener);
      this.#opts.log.event("responder.listen", { address: hostname, port: this.#opts.port });
      void this.#acceptLoop(listener);
    }
  }

  #logPressure(): void {
    const p = this.#admission.pressure();
    this.#loggedRefusals.clear();
    const refused = Object.values(p.refused).reduce((a, b) => a + b, 0);
    if (refused === 0 && p.shed === 0 && p.stressed === 0) return;
    this.#opts.log.event("smtp.pressure", {
      interval_s: PRESSURE_INTERVAL_MS / 1000,
      refused,
      ...Object.fromEntries(
        Object.entries(p.refused).map(([k, v]) => [`refused_${k.replace(/ /g, "_")}`, v]),
      ),
      shed: p.shed,
      stressed_sessions: p.stressed,
      held: p.held,
      top_networks: p.top,
    }, "warning");
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
    // Our own stop signal for this session: aborted by a gateway stop, or to shed it.
    const own = new AbortController();
    const admit = this.#admission.admit(id, client.ip, () => own.abort(SHED));
    for (const shedId of admit.shed) {
      log.event("smtp.shed", {
        session: shedId,
        for: id,
        client: `${client.ip}:${client.port}`,
        reason: "slow or idle session ended to serve a new one",
      }, "warning");
    }
    this.#totals.shed += admit.shed.length;
    if (!admit.ok) {
      this.#totals.refusedLimit++;
      // One line per limit and network per interval; the rest are counted in smtp.pressure.
      const key = `${admit.limit} ${clientNetwork(client.ip, config.smtp.networkPrefix)}`;
      if (!this.#loggedRefusals.has(key)) {
        this.#loggedRefusals.add(key);
        log.event("smtp.limit", {
          session: id,
          client: `${client.ip}:${client.port}`,
          server: `${server.ip}:${server.port}`,
          limit: admit.limit,
          note: "further refusals of this network are counted in smtp.pressure",
        }, "warning");
      }
      await conn.write(
        encoder.encode(
          `421 4.7.0 ${config.gateway.hostname} ${admit.limit}, try again later\r\n`,
        ),
      ).catch(() => {});
      safeClose(conn);
      return;
    }
    const ticket = admit.ticket;
    const release = () => ticket.release();
    const connect = this.#opts.connect ?? connectTcp;
    const done = serveSession(watchedIo(conn, ticket), {
      id,
      client,
      server,
      hostname: config.gateway.hostname,
      smtp: admit.stressed ? this.#admission.stressed(config.smtp) : config.smtp,
      relay: config.relay,
      judge: this.#opts.judge,
      checkRecipient: this.#opts.checkRecipient,
      prefetch: this.#opts.prefetch,
      startChecks: this.#opts.startChecks,
      log,
      connectUpstream: (dest, timeoutMs) => connect(dest, timeoutMs, client),
      shutdown: AbortSignal.any([this.#shutdown.signal, own.signal]),
      minDataRate: config.smtp.minDataRate > 0 ? config.smtp.minDataRate : undefined,
      actions: this.#opts.actions,
      memory: this.#memory,
      profiles: this.#profiles,
      relayPool: this.#relayPool,
      clientDone: release,
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
      release();
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
      clearInterval(this.#pressureTimer);
      this.#logPressure();
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
      await this.#relayPool.close();
      this.#resolveClosed();
    })();
    return this.#closing;
  }
}

/** Bytes asked of one read from a client connection (SMTP commands and DATA blocks). */
const READ_CHUNK_BYTES = 16 * 1024;

/** Connections already closed: a second close() would throw BadResource (a stack trace built
 * and thrown away; measured ~0.04 ms per message under load, issue 9). */
const closedConns = new WeakSet<Deno.Conn>();

function safeClose(conn: Deno.Conn): void {
  if (closedConns.has(conn)) return;
  closedConns.add(conn);
  try {
    conn.close();
  } catch { /* already closed */ }
}

/**
 * The client connection as the session sees it, with each read and write reported to the
 * admission (what `Admission` needs to tell a slow session from a busy one). Writes complete when
 * the socket took them, as on the connection itself.
 */
function watchedIo(
  conn: Deno.TcpConn,
  ticket: Ticket,
): SessionIo & { setNoDelay(on: boolean): void } {
  // Reads and writes go to the connection itself, not through conn.readable/conn.writable plus a
  // TransformStream and a second WritableStream (issue 9: three stream layers per chunk). As with
  // Deno's own streams, cancelling the readable closes the connection.
  // One read buffer per connection; each chunk handed on is a copy of the bytes read (a 6-byte
  // command line no longer costs a fresh 16 KiB allocation: less garbage per message).
  const buf = new Uint8Array(READ_CHUNK_BYTES);
  const readable = new ReadableStream<Uint8Array>({
    async pull(c) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (e) {
        try {
          c.error(e);
        } catch { /* cancelled meanwhile */ }
        return;
      }
      if (n === null) {
        try {
          c.close();
        } catch { /* cancelled meanwhile */ }
        return;
      }
      const chunk = buf.slice(0, n);
      ticket.read(chunk);
      c.enqueue(chunk);
    },
    cancel: () => safeClose(conn),
  }, { highWaterMark: 0 });
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      ticket.wrote();
      for (let off = 0; off < chunk.length;) off += await conn.write(chunk.subarray(off));
    },
    close: () => safeClose(conn),
    abort: () => safeClose(conn),
  });
  return {
    readable,
    writable,
    close: () => safeClose(conn),
    setNoDelay: (on: boolean) => conn.setNoDelay(on),
  };
}
