/**
 * Who gets a session: the connection limits, and what SSG does when they are reached.
 *
 * Limits (all from `SmtpConfig`, all counted on what clients hold now — a slot is given back when
 * the session's conversation with its client ends): `maxSessions` in all, `maxSessionsPerClient`
 * per client address and `maxSessionsPerNetwork` per client network (`networkPrefix`: /24 and /64
 * by default), because an attacker rarely has one address but often one network.
 *
 * Under pressure the gateway serves newcomers by shedding, not by refusing: when a limit is
 * reached, the session in that limit's scope that does least for its slot — older than
 * `SHED_MIN_AGE_MS`, the gateway waiting on the client (not the client on the gateway: a session
 * whose client finished a line that SSG has not answered yet, such as a message waiting for the
 * verdict or the server, is never shed), and fewer than `SHED_SLOW_BYTES` received over the last
 * `SHED_WINDOW_MS` — is ended with 421 (its client retries later; it was never given a 250) and
 * the newcomer takes its place. A slowloris dripping one byte every few seconds is always such a
 * session; a mail server sending mail never is. Only when no session qualifies is the newcomer
 * refused (421 4.7.0), as before.
 *
 * Stress (after Postfix's `stress` parameter): while the gateway holds at least
 * `STRESS_FRACTION` of `maxSessions`, or has refused or shed a session in the last
 * `STRESS_HOLD_MS`, new sessions get short timeouts (`STRESS_TIMEOUT_S` for commands and data
 * blocks, Postfix's `smtpd_timeout = ${stress?10}`) and a low error limit
 * (`STRESS_MAX_ERRORS`). Sessions already running keep theirs.
 *
 * Pure bookkeeping: no I/O. The acceptor feeds it the bytes each session reads and writes and acts
 * on its answers; `pressure()` gives the counts for one `smtp.pressure` log line per interval.
 * Rejected: refusing the newest (what most servers do — it hands the gateway to whoever connects
 * first and stays); random early drop (sheds good sessions as readily as bad ones).
 */
import type { SmtpConfig } from "../config/config.ts";
import { canonicalIp, formatIp, parseIp } from "../packet/ip_address.ts";
import { maskBytes } from "../packet/cidr.ts";

/**
 * A session must be at least this old to be shed: a real client answers the greeting within
 * milliseconds, and one that waits for SSG is never shed whatever its age. Short on purpose:
 * sessions started under stress time out after `STRESS_TIMEOUT_S`, and an attacker who
 * reconnects at once must not be able to keep every slot younger than this.
 */
export const SHED_MIN_AGE_MS = 3_000;
/** The window over which a sheddable session's received bytes are counted. */
export const SHED_WINDOW_MS = 20_000;
/** Fewer bytes than this over `SHED_WINDOW_MS` make a session sheddable. */
export const SHED_SLOW_BYTES = 256;
/** Held share of `maxSessions` from which new sessions start under stress. */
export const STRESS_FRACTION = 0.75;
/** How long a refusal or a shed keeps the gateway under stress. */
export const STRESS_HOLD_MS = 60_000;
/** Command and data-block timeout of a session started under stress, in seconds. */
export const STRESS_TIMEOUT_S = 10;
/** Error limit of a session started under stress. */
export const STRESS_MAX_ERRORS = 3;

/** The network a client address belongs to for `maxSessionsPerNetwork` ("192.0.2.0/24"). */
export function clientNetwork(ip: string, prefix: { ipv4: number; ipv6: number }): string {
  const canonical = canonicalIp(ip) ?? ip;
  const bytes = parseIp(canonical);
  if (!bytes) return canonical;
  const bits = bytes.length === 4 ? prefix.ipv4 : prefix.ipv6;
  return `${formatIp(maskBytes(bytes, bits))}/${bits}`;
}

/** What the admission knows of one held session. */
class Held {
  readonly startedAt: number;
  /** Bytes read in the current and the previous half-window. */
  #buckets = [0, 0];
  #bucketStart: number;
  lastReadAt: number;
  lastWriteAt = -Infinity;
  /** Whether the last bytes read ended a line (the client then waits for SSG). */
  lineDone = false;
  constructor(
    readonly id: string,
    readonly ip: string,
    readonly network: string,
    readonly shed: () => void,
    now: number,
  ) {
    this.startedAt = now;
    this.#bucketStart = now;
    this.lastReadAt = now;
  }
  #roll(now: number): void {
    const half = SHED_WINDOW_MS / 2;
    const steps = Math.floor((now - this.#bucketStart) / half);
    if (steps <= 0) return;
    this.#buckets = steps === 1 ? [0, this.#buckets[0]] : [0, 0];
    this.#bucketStart += steps * half;
  }
  read(bytes: Uint8Array, now: number): void {
    this.#roll(now);
    this.#buckets[0] += bytes.length;
    this.lastReadAt = now;
    if (bytes.length > 0) this.lineDone = bytes[bytes.length - 1] === 0x0a;
  }
  recentBytes(now: number): number {
    this.#roll(now);
    return this.#buckets[0] + this.#buckets[1];
  }
  /** SSG owes the client an answer: it finished a line after SSG's last write. */
  waitingOnGateway(): boolean {
    return this.lineDone && this.lastReadAt >= this.lastWriteAt;
  }
}

/** A session's admission: report its traffic, give its slot back (idempotent). */
export interface Ticket {
  /** Bytes the session read from its client. */
  read(bytes: Uint8Array): void;
  /** The session wrote to its client. */
  wrote(): void;
  /** Gives the slot back; safe to call more than once. */
  release(): void;
}

/** The answer to a new connection. */
export type Admit =
  | {
    ok: true;
    ticket: Ticket;
    /** Started under stress: run with `stressed(smtp)`. */
    stressed: boolean;
    /** Sessions shed to make room (their ids). */
    shed: string[];
  }
  | { ok: false; limit: string; shed: string[] };

/** Counts since the last `pressure()` call, for the `smtp.pressure` log line. */
export interface Pressure {
  /** Connections refused, by limit. */
  refused: Record<string, number>;
  /** Sessions shed. */
  shed: number;
  /** Sessions started under stress. */
  stressed: number;
  /** Sessions held now. */
  held: number;
  /** The client networks holding the most sessions now ("198.51.100.0/24=40"), at most 3. */
  top: string[];
}

/** The connection limits and the shedding of slow sessions. */
export class Admission {
  #smtp: SmtpConfig;
  #now: () => number;
  #held = new Map<string, Held>();
  #perClient = new Map<string, number>();
  #perNetwork = new Map<string, number>();
  #lastTrouble = -Infinity;
  #counts = { refused: {} as Record<string, number>, shed: 0, stressed: 0 };

  /** `now` is a millisecond clock (default `performance.now`). */
  constructor(smtp: SmtpConfig, now: () => number = () => performance.now()) {
    this.#smtp = smtp;
    this.#now = now;
  }

  /** New limits (SIGHUP); they bind from the next connection. */
  setLimits(smtp: SmtpConfig): void {
    this.#smtp = smtp;
  }

  /** Sessions held now. */
  get held(): number {
    return this.#held.size;
  }

  /** Whether a session starting now starts under stress. */
  get underStress(): boolean {
    const now = this.#now();
    return this.#held.size >= STRESS_FRACTION * this.#smtp.maxSessions ||
      now - this.#lastTrouble < STRESS_HOLD_MS;
  }

  /**
   * Admits a connection from `ip` (session `id`), shedding slow sessions to make room when a
   * limit is reached; `shed` is called (once) on each session that must end.
   */
  admit(id: string, ip: string, shed: () => void): Admit {
    const smtp = this.#smtp;
    const network = clientNetwork(ip, smtp.networkPrefix);
    const shedIds: string[] = [];
    const scopes: [string, () => boolean, (h: Held) => boolean][] = [
      ["too many sessions", () => this.#held.size >= smtp.maxSessions, () => true],
      [
        "too many sessions from this network",
        () => (this.#perNetwork.get(network) ?? 0) >= smtp.maxSessionsPerNetwork,
        (h) => h.network === network,
      ],
      [
        "too many sessions from this client",
        () => (this.#perClient.get(ip) ?? 0) >= smtp.maxSessionsPerClient,
        (h) => h.ip === ip,
      ],
    ];
    for (const [limit, full, inScope] of scopes) {
      while (full()) {
        const victim = this.#victim(inScope);
        if (!victim) {
          this.#lastTrouble = this.#now();
          this.#counts.refused[limit] = (this.#counts.refused[limit] ?? 0) + 1;
          return { ok: false, limit, shed: shedIds };
        }
        shedIds.push(victim.id);
        this.#counts.shed++;
        this.#lastTrouble = this.#now();
        this.#drop(victim);
        victim.shed();
      }
    }
    const stressed = this.underStress;
    if (stressed) this.#counts.stressed++;
    const held = new Held(id, ip, network, shed, this.#now());
    this.#held.set(id, held);
    this.#perClient.set(ip, (this.#perClient.get(ip) ?? 0) + 1);
    this.#perNetwork.set(network, (this.#perNetwork.get(network) ?? 0) + 1);
    const ticket: Ticket = {
      read: (b) => held.read(b, this.#now()),
      wrote: () => held.lastWriteAt = this.#now(),
      release: () => {
        if (this.#held.get(id) === held) this.#drop(held);
      },
    };
    return { ok: true, ticket, stressed, shed: shedIds };
  }

  /** The smtp settings of a session started under stress. */
  stressed(smtp: SmtpConfig): SmtpConfig {
    return {
      ...smtp,
      maxErrors: Math.min(smtp.maxErrors, STRESS_MAX_ERRORS),
      timeouts: {
        ...smtp.timeouts,
        command: Math.min(smtp.timeouts.command, STRESS_TIMEOUT_S),
        data: Math.min(smtp.timeouts.data, STRESS_TIMEOUT_S),
      },
    };
  }

  /** Counts since the last call, and who holds the most now. */
  pressure(): Pressure {
    const c = this.#counts;
    this.#counts = { refused: {}, shed: 0, stressed: 0 };
    const top = [...this.#perNetwork.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3)
      .map(([n, k]) => `${n}=${k}`);
    return { ...c, held: this.#held.size, top };
  }

  #victim(inScope: (h: Held) => boolean): Held | undefined {
    const now = this.#now();
    let best: Held | undefined;
    let bestBytes = Infinity;
    for (const h of this.#held.values()) {
      if (!inScope(h) || now - h.startedAt < SHED_MIN_AGE_MS || h.waitingOnGateway()) continue;
      const bytes = h.recentBytes(now);
      if (bytes >= SHED_SLOW_BYTES) continue;
      // Fewest bytes first; among equals, from the network that holds the most sessions (an
      // attacker's, under a flood), then the longest silent.
      const better = bytes < bestBytes || (bytes === bestBytes && (
        this.#networkLoad(h) > this.#networkLoad(best!) ||
        (this.#networkLoad(h) === this.#networkLoad(best!) && h.lastReadAt < best!.lastReadAt)
      ));
      if (better) {
        best = h;
        bestBytes = bytes;
      }
    }
    return best;
  }

  #networkLoad(h: Held): number {
    return this.#perNetwork.get(h.network) ?? 0;
  }

  #drop(h: Held): void {
    this.#held.delete(h.id);
    const dec = (m: Map<string, number>, k: string) => {
      const n = (m.get(k) ?? 1) - 1;
      if (n <= 0) m.delete(k);
      else m.set(k, n);
    };
    dec(this.#perClient, h.ip);
    dec(this.#perNetwork, h.network);
  }
}
