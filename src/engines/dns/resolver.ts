/**
 * A small stub DNS resolver for the gateway's own look-ups (DNSBL/DNSWL/RHSBL, and SPF/DKIM/DMARC
 * through the same interface): questions go over UDP to the configured recursive servers, with a
 * TCP retry when the answer is truncated (RFC 7766 §5); answers are kept in a bounded cache for their
 * TTL (negative answers for the SOA minimum, RFC 2308 §5), and concurrent identical questions share
 * one look-up.
 *
 * Trusts: the configured servers to do the recursion (no DNSSEC validation here); an answer only
 * if it comes from the server asked, carries the query's random id and echoes the question (the
 * usual stub defences against off-path spoofing; a fresh socket, hence a fresh random source port,
 * per query). Limits: a per-try timeout, a number of retries, at most `MAX_TCP_BYTES` read over TCP,
 * a cache of at most `cacheMaxEntries` entries each kept at most `cacheMaxTtlSeconds`, at most
 * `maxInFlight` distinct questions under way.
 * Never throws for a DNS failure: a timeout, SERVFAIL, REFUSED, an unreachable server or a malformed
 * answer is `status: "error"`, and the caller's failure verdict decides; errors are not cached.
 * Rejected: `Deno.resolveDns` (gives no TTL and no NXDOMAIN/NODATA distinction we can rely on);
 * `node:dns` (no TTL for TXT, and no per-query server choice); hand-written wire encoding (the npm
 * `dns-packet` codec is well kept and used widely).
 */
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
// @ts-types="./dns_packet.d.ts"
import dnsPacket from "dns-packet";
import type { Packet } from "./dns_packet.d.ts";
import type { DnsConfig } from "../../config/config.ts";

/** The record types the gateway asks for. */
export type DnsType = "A" | "AAAA" | "TXT" | "MX" | "PTR" | "CNAME";

/** One answer, cached or fresh. */
export interface DnsAnswer {
  /** `error` = timeout, SERVFAIL, REFUSED, unreachable, malformed, aborted. */
  status: "ok" | "nxdomain" | "nodata" | "error";
  /** A/AAAA: addresses; TXT: each record's strings joined; MX: "pref host"; PTR/CNAME: names (no trailing dot). */
  records: string[];
  /** TXT only: each record's character-strings, unjoined. */
  txt?: string[][];
  /** Minimum TTL of the answer (negative answers: SOA minimum, or the configured default). */
  ttlSeconds: number;
  /** Why, for `error`. */
  reason?: string;
  /** True when the answer came from the cache. */
  cached?: boolean;
}

/** Asks questions; `close()` drops the cache and ends the look-ups under way. */
export interface DnsResolver {
  query(name: string, type: DnsType, signal?: AbortSignal): Promise<DnsAnswer>;
  close?(): void;
}

/** How the resolver is set up (the `dns:` config section). */
export interface ResolverConfig {
  /** Recursive servers as `ip`, `ip:port`, `[ipv6]:port` or a bare IPv6 address; tried in order. */
  servers: string[];
  /** Time to wait for one server's answer, in milliseconds. */
  timeoutMs: number;
  /** Further rounds over the server list after the first (0 = one try per server). */
  retries: number;
  /** Most answers cached at once (0 = no cache). */
  cacheMaxEntries: number;
  /** Longest time an answer is cached, whatever its TTL. */
  cacheMaxTtlSeconds: number;
  /** TTL of a negative answer that carries no SOA. */
  negativeTtlSeconds: number;
  /** Retry over TCP when a UDP answer is truncated (default true). */
  tcpFallback?: boolean;
  /**
   * Most distinct questions under way at once (default 1000); past it a new question is an
   * error at once, so that a flood of new clients cannot hold unbounded sockets.
   */
  maxInFlight?: number;
}

/** Defaults for the optional parts of a `ResolverConfig`. */
export const RESOLVER_DEFAULTS: Omit<ResolverConfig, "servers"> = {
  timeoutMs: 2000,
  retries: 1,
  cacheMaxEntries: 10000,
  cacheMaxTtlSeconds: 3600,
  negativeTtlSeconds: 300,
  tcpFallback: true,
  maxInFlight: 1000,
};

/** A server's address, parsed. */
export interface DnsServer {
  hostname: string;
  port: number;
  family: 4 | 6;
}

/** Largest answer read over TCP (the 16-bit length prefix allows no more). */
const MAX_TCP_BYTES = 65535;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9a-f:.]+$/i;

/**
 * Parses `ip`, `ip:port`, `[ipv6]`, `[ipv6]:port` or a bare IPv6 address; throws a `RangeError`
 * saying what was expected (config readers turn it into a located error).
 */
export function parseDnsServer(text: string): DnsServer {
  const t = text.trim();
  let host = t;
  let port = 53;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (bracket) {
    host = bracket[1];
    if (bracket[2] !== undefined) port = Number(bracket[2]);
  } else if (/^[^:]+:\d+$/.test(t)) {
    const i = t.lastIndexOf(":");
    host = t.slice(0, i);
    port = Number(t.slice(i + 1));
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`"${text}": the port must be 1..65535`);
  }
  if (IPV4.test(host)) return { hostname: host, port, family: 4 };
  if (host.includes(":") && IPV6.test(host) && host.split("::").length <= 2) {
    return { hostname: host.toLowerCase(), port, family: 6 };
  }
  throw new RangeError(
    `"${text}": expected an IP address, "ip:port" or "[ipv6]:port" (names are not resolved)`,
  );
}

/** A normalized question name: lower case, no trailing dot; undefined when not a valid name. */
export function normalizeName(name: string): string | undefined {
  const n = name.toLowerCase().replace(/\.$/, "");
  if (n.length === 0 || n.length > 253) return undefined;
  for (const label of n.split(".")) {
    if (label.length === 0 || label.length > 63 || !/^[a-z0-9_-]+$/.test(label)) return undefined;
  }
  return n;
}

interface CacheEntry {
  answer: DnsAnswer;
  expiresAt: number;
}

/** The resolver settings of a `dns:` section. */
export function resolverConfigFrom(dns: DnsConfig): ResolverConfig {
  return {
    servers: dns.servers,
    timeoutMs: dns.timeoutSeconds * 1000,
    retries: dns.retries,
    cacheMaxEntries: dns.cacheEntries,
    cacheMaxTtlSeconds: dns.cacheMaxTtlSeconds,
    negativeTtlSeconds: dns.negativeTtlSeconds,
  };
}

/** Creates a resolver over UDP (TCP on truncation) with a TTL-bounded cache. */
export function createResolver(config: ResolverConfig): DnsResolver {
  return new UdpResolver({ ...RESOLVER_DEFAULTS, ...config });
}

/** The resolver behind `createResolver`. */
class UdpResolver implements DnsResolver {
  readonly #c: ResolverConfig;
  readonly #servers: DnsServer[];
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inFlight = new Map<string, Promise<DnsAnswer>>();
  readonly #open = new Set<{ close(): void }>();
  #closed = false;

  constructor(config: ResolverConfig) {
    this.#c = config;
    this.#servers = config.servers.map(parseDnsServer);
    if (this.#servers.length === 0) throw new RangeError("at least one DNS server is needed");
  }

  query(name: string, type: DnsType, signal?: AbortSignal): Promise<DnsAnswer> {
    const n = normalizeName(name);
    if (n === undefined) return Promise.resolve(failed(`"${clip(name)}" is not a valid name`));
    if (this.#closed) return Promise.resolve(failed("the resolver is closed"));
    if (signal?.aborted) return Promise.resolve(failed("aborted"));
    const key = `${type} ${n}`;
    const hit = this.#cache.get(key);
    const now = Date.now();
    if (hit) {
      this.#cache.delete(key);
      if (hit.expiresAt > now) {
        this.#cache.set(key, hit); // most recently used last
        return Promise.resolve({
          ...hit.answer,
          ttlSeconds: Math.max(0, Math.ceil((hit.expiresAt - now) / 1000)),
          cached: true,
        });
      }
    }
    let shared = this.#inFlight.get(key);
    if (!shared) {
      if (this.#inFlight.size >= (this.#c.maxInFlight ?? RESOLVER_DEFAULTS.maxInFlight!)) {
        return Promise.resolve(failed(`over ${this.#c.maxInFlight} questions under way`));
      }
      shared = this.#lookup(n, type).then((answer) => {
        this.#inFlight.delete(key);
        this.#remember(key, answer);
        return answer;
      });
      this.#inFlight.set(key, shared);
    }
    if (!signal) return shared;
    // One caller's abort ends its own wait, not the shared look-up.
    return new Promise<DnsAnswer>((resolve) => {
      const onAbort = () => resolve(failed("aborted"));
      signal.addEventListener("abort", onAbort, { once: true });
      shared.then((a) => {
        signal.removeEventListener("abort", onAbort);
        resolve(a);
      });
    });
  }

  close(): void {
    this.#closed = true;
    this.#cache.clear();
    for (const s of this.#open) {
      try {
        s.close();
      } catch { /* closed */ }
    }
    this.#open.clear();
  }

  /** Number of cached answers (for tests and stats). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  #remember(key: string, answer: DnsAnswer): void {
    if (answer.status === "error" || this.#c.cacheMaxEntries <= 0 || this.#closed) return;
    const ttl = Math.min(answer.ttlSeconds, this.#c.cacheMaxTtlSeconds);
    if (ttl <= 0) return;
    while (this.#cache.size >= this.#c.cacheMaxEntries) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#cache.delete(oldest);
    }
    this.#cache.set(key, { answer, expiresAt: Date.now() + ttl * 1000 });
  }

  /** Asks each server in turn, `retries + 1` rounds; the first definite answer wins. */
  async #lookup(name: string, type: DnsType): Promise<DnsAnswer> {
    const reasons: string[] = [];
    for (let round = 0; round <= this.#c.retries; round++) {
      for (const server of this.#servers) {
        if (this.#closed) return failed("the resolver is closed");
        const r = await this.#ask(server, name, type);
        if (r.status !== "error") return r;
        reasons.push(`${show(server)}: ${r.reason}`);
      }
    }
    // Keep the reason short: the distinct failures, not every try.
    return failed([...new Set(reasons)].slice(0, 4).join("; "));
  }

  async #ask(server: DnsServer, name: string, type: DnsType): Promise<DnsAnswer> {
    const id = crypto.getRandomValues(new Uint16Array(1))[0];
    let query: Buffer;
    try {
      query = dnsPacket.encode({
        type: "query",
        id,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type, name, class: "IN" }],
      });
    } catch (e) {
      return failed(`cannot encode the question: ${message(e)}`);
    }
    const udp = await this.#udp(server, query, id, (p) => echoes(p, name, type));
    if (udp.kind === "error") return failed(udp.reason);
    let packet = udp.packet;
    if (
      ((packet.flags ?? 0) & dnsPacket.TRUNCATED_RESPONSE) !== 0 && this.#c.tcpFallback !== false
    ) {
      const tcp = await this.#tcp(server, query, id);
      if (tcp.kind === "error") return failed(`truncated over UDP; TCP: ${tcp.reason}`);
      packet = tcp.packet;
    }
    try {
      return interpret(packet, name, type, this.#c.negativeTtlSeconds);
    } catch (e) {
      // Security: a record whose data does not have the shape its type promises.
      return failed(`malformed answer: ${message(e)}`);
    }
  }

  /** One UDP exchange on a fresh socket (fresh random source port), bounded by the timeout. */
  #udp(
    server: DnsServer,
    query: Buffer,
    id: number,
    matches: (p: Packet) => boolean,
  ): Promise<Exchange> {
    return new Promise<Exchange>((resolve) => {
      const socket = dgram.createSocket(server.family === 6 ? "udp6" : "udp4");
      const handle = { close: () => finish({ kind: "error", reason: "closed" }) };
      let done = false;
      const finish = (r: Exchange) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.#open.delete(handle);
        try {
          socket.close();
        } catch { /* closed */ }
        resolve(r);
      };
      this.#open.add(handle);
      const timer = setTimeout(
        () => finish({ kind: "error", reason: `no answer within ${this.#c.timeoutMs} ms` }),
        this.#c.timeoutMs,
      );
      socket.on("error", (e: Error) => finish({ kind: "error", reason: message(e) }));
      socket.on("message", (msg: Buffer, from: { address: string; port: number }) => {
        // Security: answers from anyone but the server asked, for another id or another
        // question are ignored (a spoofer must guess port, id and question; RFC 5452).
        if (from.port !== server.port || !sameAddress(from.address, server.hostname)) return;
        const p = decode(msg);
        if (!p || p.id !== id || p.type !== "response" || !matches(p)) return;
        finish({ kind: "answer", packet: p });
      });
      try {
        socket.send(query, server.port, server.hostname, (e: Error | null) => {
          if (e) finish({ kind: "error", reason: message(e) });
        });
      } catch (e) {
        finish({ kind: "error", reason: message(e) });
      }
    });
  }

  /** One TCP exchange (RFC 1035 §4.2.2: a 2-byte length before each message), bounded. */
  async #tcp(server: DnsServer, query: Buffer, id: number): Promise<Exchange> {
    let conn: Deno.TcpConn | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const handle = {
      close: () => {
        try {
          conn?.close();
        } catch { /* closed */ }
      },
    };
    this.#open.add(handle);
    const deadline = new Promise<Exchange>((resolve) => {
      timer = setTimeout(() => {
        resolve({ kind: "error", reason: `no TCP answer within ${this.#c.timeoutMs} ms` });
        handle.close();
      }, this.#c.timeoutMs);
    });
    const work = (async (): Promise<Exchange> => {
      conn = await Deno.connect({ hostname: server.hostname, port: server.port });
      const framed = new Uint8Array(query.length + 2);
      new DataView(framed.buffer).setUint16(0, query.length);
      framed.set(query, 2);
      for (let off = 0; off < framed.length;) off += await conn.write(framed.subarray(off));
      const head = await readExactly(conn, 2);
      const length = new DataView(head.buffer).getUint16(0);
      if (length > MAX_TCP_BYTES) return { kind: "error", reason: "TCP answer too long" };
      const p = decode(Buffer.from(await readExactly(conn, length)));
      if (!p || p.id !== id) return { kind: "error", reason: "malformed TCP answer" };
      return { kind: "answer", packet: p };
    })().catch((e): Exchange => ({ kind: "error", reason: `TCP: ${message(e)}` }));
    try {
      return await Promise.race([work, deadline]);
    } finally {
      clearTimeout(timer);
      handle.close();
      this.#open.delete(handle);
    }
  }
}

type Exchange = { kind: "answer"; packet: Packet } | { kind: "error"; reason: string };

/** Turns a response into a `DnsAnswer` (checks the question echo and the rcode). */
export function interpret(
  p: Packet,
  name: string,
  type: DnsType,
  negativeTtlSeconds: number,
): DnsAnswer {
  if (!echoes(p, name, type)) return failed("the answer does not echo the question");
  const rcode = (p as { rcode?: string }).rcode ?? "NOERROR";
  if (rcode === "NXDOMAIN") {
    return { status: "nxdomain", records: [], ttlSeconds: negativeTtl(p, negativeTtlSeconds) };
  }
  if (rcode !== "NOERROR") return failed(`the server answered ${rcode}`);
  const records: string[] = [];
  const txt: string[][] = [];
  let ttl = Infinity;
  for (const a of p.answers ?? []) {
    if (a.type !== type) {
      // A CNAME on the way to the answer still bounds how long the answer holds.
      if (a.type === "CNAME") ttl = Math.min(ttl, a.ttl ?? 0);
      continue;
    }
    ttl = Math.min(ttl, a.ttl ?? 0);
    switch (a.type) {
      case "A":
      case "AAAA":
        records.push(String(a.data));
        break;
      case "TXT": {
        const data = Array.isArray(a.data) ? a.data : [a.data];
        const strings = data.map((d) =>
          typeof d === "string" ? d : Buffer.from(d).toString("latin1")
        );
        txt.push(strings);
        records.push(strings.join(""));
        break;
      }
      case "MX":
        records.push(`${a.data.preference} ${String(a.data.exchange).replace(/\.$/, "")}`);
        break;
      case "PTR":
      case "CNAME":
        records.push(String(a.data).replace(/\.$/, ""));
        break;
    }
  }
  if (records.length === 0) {
    return { status: "nodata", records: [], ttlSeconds: negativeTtl(p, negativeTtlSeconds) };
  }
  const answer: DnsAnswer = { status: "ok", records, ttlSeconds: ttl === Infinity ? 0 : ttl };
  if (type === "TXT") answer.txt = txt;
  return answer;
}

/** Whether a response carries the question asked (name in any case, RFC 4343). */
function echoes(p: Packet, name: string, type: DnsType): boolean {
  const q = p.questions?.[0];
  return !!q && q.name.toLowerCase().replace(/\.$/, "") === name && q.type === type;
}

/** RFC 2308 §5: a negative answer holds for min(SOA TTL, SOA MINIMUM). */
function negativeTtl(p: Packet, fallback: number): number {
  const soa = (p.authorities ?? []).find((a) => a.type === "SOA");
  if (!soa || soa.type !== "SOA") return fallback;
  return Math.min(soa.ttl ?? fallback, soa.data.minimum ?? fallback);
}

function decode(msg: Uint8Array): Packet | undefined {
  try {
    return dnsPacket.decode(Buffer.from(msg));
  } catch {
    return undefined; // Security: a malformed datagram is ignored, not an exception
  }
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let used = 0;
  while (used < n) {
    const got = await conn.read(buf.subarray(used));
    if (got === null) throw new Error("connection closed mid-answer");
    used += got;
  }
  return buf;
}

function sameAddress(a: string, b: string): boolean {
  const strip = (s: string) => s.toLowerCase().replace(/^::ffff:/, "");
  return strip(a) === strip(b) || (b.includes(":") && expand6(a) === expand6(b));
}

/** A full-length IPv6 form for comparison ("2001:db8::1" vs "2001:0db8:0:0:0:0:0:1"). */
function expand6(s: string): string {
  if (!s.includes(":")) return s;
  const [head, tail = ""] = s.toLowerCase().split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = s.includes("::") ? Array(8 - h.length - t.length).fill("0") : [];
  return [...h, ...fill, ...t].map((x) => x.replace(/^0+(?=.)/, "")).join(":");
}

function failed(reason: string): DnsAnswer {
  return { status: "error", records: [], ttlSeconds: 0, reason };
}

function show(s: DnsServer): string {
  return s.family === 6 ? `[${s.hostname}]:${s.port}` : `${s.hostname}:${s.port}`;
}

function clip(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, "?").slice(0, 80);
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
