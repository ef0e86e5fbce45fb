/**
 * How the relay leg's TCP connection to the protected server is opened, and with whose address
 * (`relay.source`, see src/config/relay_source.ts for the two modes and the default).
 *
 * Client mode: a port of `relay.source_ports` is leased in the RelayRegistry (shared with the
 * queue Worker) with the client's address and port and the server, BEFORE `connect()`; the socket
 * is bound to that local port (`node:net` `localPort`: `Deno.connect` cannot bind) and the packet
 * path rewrites its packets to the client's address (src/divert/diverter.ts). Whether the server's
 * route back to the client passes the gateway is learnt per server:
 * - unknown (first contact, or the last verdict expired): connect within `source_probe_timeout`,
 *   with the socket's own port on the wire (never the client's: see the hazard in diverter.ts).
 *   A SYN-ACK → the route is proven ("client" cached for `source_fallback_ttl`); later
 *   connections keep the client's own port as well. No SYN-ACK → connect again with the gateway's
 *   address; if THAT succeeds the server is up and its replies to the client went elsewhere:
 *   "gateway" is cached for `source_fallback_ttl` and `relay.source_fallback` logged with the
 *   server and the reason; if it fails too the server is down (nothing cached, the session
 *   answers 4xx and the client retries).
 * - proven: the same bound, the client's port kept; no SYN-ACK re-runs the fallback check.
 * - fallback: connect with the gateway's address at once.
 * A refusal (RST) in client mode is final: a direct connection would have been refused as well.
 * A busy local port (its 4-tuple to this server is taken: BUSY_CODES) is skipped;
 * when every port is leased the connection uses the gateway's address (logged, not cached).
 *
 * Gateway mode (and every fallback): `Deno.connect` from a kernel-chosen port, which the firewall
 * does not queue. The returned io says `relaySource: "gateway"` and the relay client then
 * announces the client with XCLIENT (or XFORWARD) when the server offers it (relay_client.ts).
 * SSG's own mail (alerts, bcc, redirect, quarantine release: src/action) never comes here and
 * always keeps the gateway's address.
 *
 * What it limits: the verdict cache holds at most `MAX_CACHED_SERVERS` servers (the oldest goes
 * first); every connect is bounded by its timeout; a socket that connects after we gave up is
 * destroyed and its port released.
 */
import net from "node:net";
import { socketIo } from "./socket_io.ts";
import type { RelaySourceSettings } from "../config/relay_source.ts";
import type { RelayLease, RelayRegistry } from "../flow/relay_registry.ts";
import type { EventLog } from "../log/log.ts";
import { canonicalIp } from "../packet/ip_address.ts";
import type { SessionIo } from "./session_io.ts";

/** Most servers whose route verdict is cached. */
export const MAX_CACHED_SERVERS = 4096;
/**
 * Errors of a bound connect that mean "this local port cannot be used now": EADDRINUSE from
 * bind, EADDRNOTAVAIL from connect when the 4-tuple is taken; Deno's node:net (which binds with
 * SO_REUSEADDR, so a TIME_WAIT port is reused) reports the latter as EINVAL (measured, Deno 2.9).
 */
const BUSY_CODES = new Set(["EADDRINUSE", "EADDRNOTAVAIL", "EINVAL"]);
/** Most busy local ports skipped for one connection before falling back. */
const MAX_BUSY_RETRIES = 8;

/** Which address a relay connection left with, as the relay client and the logs see it. */
export type RelaySource = "client" | "gateway";

/** A relay connection and the address it left with. */
export interface SourcedIo extends SessionIo {
  /** "client": the server sees the client's address; "gateway": it sees the gateway's. */
  readonly relaySource: RelaySource;
  /** Why the gateway's address was used (mode, cached fallback, ports exhausted...). */
  readonly sourceReason?: string;
}

/** The address and port a server is reached at. */
export interface Endpoint {
  /** Address as text. */
  ip: string;
  /** TCP port. */
  port: number;
}

/** Opens a plain connection from the gateway's address within `timeoutMs`. */
export type GatewayConnect = (dest: Endpoint, timeoutMs: number) => Promise<SessionIo>;
/** Opens a connection from local port `localPort` within `timeoutMs`. */
export type BoundConnect = (
  dest: Endpoint,
  localPort: number,
  timeoutMs: number,
) => Promise<SessionIo>;

/** Options of a RelayConnector. */
export interface RelayConnectorOptions {
  /** `relay.source*` with defaults applied. */
  settings: RelaySourceSettings;
  /** The registry shared with the packet Worker; required in client mode. */
  registry?: RelayRegistry;
  /** Event log (`relay.source_fallback`, `relay.source_ports_exhausted`). */
  log: EventLog;
  /** Clock in ms (default Date.now); tests pin it. */
  now?: () => number;
  /** Gateway-address connect (default `connectTcp`); tests pass fakes. */
  connectGateway?: GatewayConnect;
  /** Bound connect (default `connectBound`, node:net with localPort); tests pass fakes. */
  connectBound?: BoundConnect;
}

interface Verdict {
  route: "client" | "gateway";
  until: number;
}

/** Raised by a BoundConnect when no SYN-ACK came within the time. */
export class ConnectTimeout extends Error {
  /** Creates the error; `name` is "ConnectTimeout". */
  constructor(message: string) {
    super(message);
    this.name = "ConnectTimeout";
  }
}

/** Opens relay connections with the configured source address. See the module comment. */
export class RelayConnector {
  #settings: RelaySourceSettings;
  #registry: RelayRegistry | undefined;
  #log: EventLog;
  #now: () => number;
  #gateway: GatewayConnect;
  #bound: BoundConnect;
  #verdicts = new Map<string, Verdict>();
  #counts = { client: 0, gateway: 0, fallbacks: 0, probes: 0, exhausted: 0 };

  /** Throws when client mode is asked for without a registry. */
  constructor(opts: RelayConnectorOptions) {
    if (opts.settings.mode === "client" && !opts.registry) {
      throw new Error("relay.source client needs the relay registry of the packet path");
    }
    this.#settings = opts.settings;
    this.#registry = opts.registry;
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
    this.#gateway = opts.connectGateway ?? connectTcp;
    this.#bound = opts.connectBound ?? connectBound;
  }

  /** Connections by source and fallback decisions since start. */
  stats(): Record<string, number> {
    return {
      relaySourceClient: this.#counts.client,
      relaySourceGateway: this.#counts.gateway,
      relaySourceFallbacks: this.#counts.fallbacks,
      relaySourceProbes: this.#counts.probes,
      relaySourcePortsExhausted: this.#counts.exhausted,
    };
  }

  /** The cached route verdict for `server` ("client", "gateway", or undefined when unknown). */
  routeOf(server: Endpoint): "client" | "gateway" | undefined {
    const v = this.#verdict(server);
    return v?.route;
  }

  #key(server: Endpoint): string {
    return `${canonicalIp(server.ip) ?? server.ip}|${server.port}`;
  }

  #verdict(server: Endpoint): Verdict | undefined {
    const key = this.#key(server);
    const v = this.#verdicts.get(key);
    if (v && v.until <= this.#now()) {
      this.#verdicts.delete(key);
      return undefined;
    }
    return v;
  }

  #remember(server: Endpoint, route: "client" | "gateway"): void {
    const key = this.#key(server);
    this.#verdicts.delete(key);
    while (this.#verdicts.size >= MAX_CACHED_SERVERS) {
      const oldest = this.#verdicts.keys().next().value;
      if (oldest === undefined) break;
      this.#verdicts.delete(oldest);
    }
    this.#verdicts.set(key, { route, until: this.#now() + this.#settings.fallbackTtl * 1000 });
  }

  /**
   * Opens the relay connection for the session of `client` to `server` within `timeoutMs`.
   * Rejects like `Deno.connect` when the server cannot be reached either way.
   */
  connect = async (server: Endpoint, timeoutMs: number, client: Endpoint): Promise<SourcedIo> => {
    if (this.#settings.mode === "gateway") {
      return await this.#viaGateway(server, timeoutMs, "relay.source gateway");
    }
    const verdict = this.#verdict(server);
    if (verdict?.route === "gateway") {
      return await this.#viaGateway(server, timeoutMs, "cached fallback");
    }
    if (
      (canonicalIp(client.ip) ?? "").includes(":") !== (canonicalIp(server.ip) ?? "").includes(":")
    ) {
      return await this.#viaGateway(server, timeoutMs, "client and server differ in IP family");
    }
    const proven = verdict?.route === "client";
    // Proven or not, a SYN-ACK that does not come within the probe bound means the route (or
    // the server) changed: the same fallback check runs, and a proven verdict is replaced.
    const probeMs = Math.min(timeoutMs, this.#settings.probeTimeout * 1000);
    const t0 = performance.now();
    const busy = new Set<number>();
    for (let attempt = 0; attempt <= MAX_BUSY_RETRIES; attempt++) {
      const lease = this.#registry!.lease(client, server, proven, busy);
      if (!lease) {
        this.#counts.exhausted++;
        this.#log.event("relay.source_ports_exhausted", {
          server: fmt(server),
          client: fmt(client),
          leased: this.#registry!.leased,
        }, "warning");
        return await this.#viaGateway(server, timeoutMs, "no free relay source port");
      }
      if (!proven) this.#counts.probes++;
      try {
        const io = await this.#bound(server, lease.port, probeMs);
        if (!proven) this.#remember(server, "client");
        this.#counts.client++;
        return withLease(io, lease);
      } catch (e) {
        lease.release();
        if (BUSY_CODES.has(errorCode(e) ?? "")) {
          busy.add(lease.port);
          continue;
        }
        if (!(e instanceof ConnectTimeout)) throw e;
        this.#verdicts.delete(this.#key(server));
      }
      // No SYN-ACK through the gateway: is the server there at all?
      const left = Math.max(1, timeoutMs - (performance.now() - t0));
      const io = await this.#viaGateway(server, left, "no SYN-ACK for the client's address");
      this.#remember(server, "gateway");
      this.#counts.fallbacks++;
      this.#log.event("relay.source_fallback", {
        server: fmt(server),
        reason: `no SYN-ACK within ${Math.round(probeMs)} ms for a connection with the ` +
          `client's address, but the server answers the gateway's: its route to the client ` +
          `does not pass the gateway`,
        mode: "gateway",
        ttl: this.#settings.fallbackTtl,
      }, "warning");
      return io;
    }
    return await this.#viaGateway(server, timeoutMs, "relay source ports busy");
  };

  async #viaGateway(server: Endpoint, timeoutMs: number, reason: string): Promise<SourcedIo> {
    const io = await this.#gateway(server, timeoutMs);
    this.#counts.gateway++;
    return Object.assign(io, { relaySource: "gateway" as const, sourceReason: reason });
  }
}

function withLease(io: SessionIo, lease: RelayLease): SourcedIo {
  const close = io.close.bind(io);
  return Object.assign(io, {
    relaySource: "client" as const,
    close: () => {
      try {
        close();
      } finally {
        lease.release();
      }
    },
  });
}

function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

function fmt(s: Endpoint): string {
  return s.ip.includes(":") ? `[${s.ip}]:${s.port}` : `${s.ip}:${s.port}`;
}

/** Connects to a server from a kernel-chosen port (the gateway's address), with a deadline. */
export async function connectTcp(dest: Endpoint, timeoutMs: number): Promise<SessionIo> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const attempt = Deno.connect({ hostname: dest.ip, port: dest.port, transport: "tcp" });
  try {
    const conn = await Promise.race([
      attempt,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Deno.errors.TimedOut(`connect to ${dest.ip}:${dest.port} timed out`)),
          timeoutMs,
        );
      }),
    ]);
    return conn;
  } catch (err) {
    // Caution: lifetime — a connect that completes after the deadline must not leak.
    attempt.then((c) => {
      try {
        c.close();
      } catch { /* already closed */ }
    }, () => {});
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Connects from local port `localPort` (any local address: the kernel picks it by route) within
 * `timeoutMs`; rejects with ConnectTimeout when no SYN-ACK came, or the socket's error (with
 * `code`, e.g. "EADDRINUSE", "ECONNREFUSED"). The socket is wrapped as a SessionIo with
 * `setNoDelay` (`socket_io.ts`, no generic stream adapter).
 */
export function connectBound(
  dest: Endpoint,
  localPort: number,
  timeoutMs: number,
): Promise<SessionIo> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: dest.ip, port: dest.port, localPort });
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      sock.destroy();
      reject(new ConnectTimeout(`connect to ${fmt(dest)} from port ${localPort} timed out`));
    }, timeoutMs);
    sock.once("error", (e: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    });
    sock.once("connect", () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Later errors end the streams; they must never be uncaught.
      sock.on("error", () => {});
      resolve(socketIo(sock));
    });
  });
}
