/**
 * What the end-to-end bench needs from a peer gateway (Haraka, Postfix): start it in the gateway
 * namespace as an ordinary (non-transparent) SMTP relay to the same internal server, tell the
 * client which address to connect to, stop it. Nothing of a peer is committed: each peer module
 * installs or configures its software at run time, in directories it removes again.
 *
 * @module
 */
import type { Topology } from "../../../test/netns/topology.ts";

/** A running peer gateway. */
export interface RunningPeer extends AsyncDisposable {
  /** Row label in the result table, e.g. "(p1) Haraka 3.3.4 smtp_forward". */
  readonly label: string;
  /** Address the client connects to (a relay is not transparent: the gateway's own address). */
  readonly target: string;
  /** One line a reader needs to interpret the row (semantics of the 250, queue location, …). */
  readonly note: string;
  /** The peer's own log (tail), for diagnostics when an arm fails. */
  diagnostics(): Promise<string>;
  /** Stops the peer and waits (bounded) until its port is free again. Safe to call twice. */
  stop(): Promise<void>;
}

/** A peer that could not be installed or started here: the bench prints the reason and goes on. */
export interface UnavailablePeer {
  readonly label: string;
  readonly unavailable: string;
}

/** Starts one peer in topology `t`; `work` is a scratch directory removed by the caller. */
export type PeerStarter = (t: Topology, work: string) => Promise<RunningPeer | UnavailablePeer>;

/** Bounded wait until nothing listens on host:port as seen from namespace `ns`. */
export async function waitPortClosed(
  t: Topology,
  ns: string,
  host: string,
  port: number,
  timeoutMs = 10_000,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await t.exec(ns, ["bash", "-c", `exec 3<>/dev/tcp/${host}/${port}`], {
      timeoutMs: 2_000,
    });
    if (r.code !== 0) return true;
    await new Promise((res) => setTimeout(res, 100));
  }
  return false;
}

/** The last `max` characters of a text file ("" when it cannot be read). */
export async function tail(path: string, max = 3_000): Promise<string> {
  try {
    const s = await Deno.readTextFile(path);
    return s.slice(-max);
  } catch {
    return "";
  }
}
