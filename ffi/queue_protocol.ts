/**
 * Messages between the main thread (`DivertService`) and the queue Worker (`queue_worker.ts`).
 * Structured-clone friendly: plain objects, strings, numbers, Uint8Arrays.
 */
import type { Cidr } from "../src/config/config.ts";
import type { FlowEvent } from "../src/divert/diverter.ts";

/** Everything the Worker needs to open the queue and build its Diverter. */
export interface WorkerStart {
  /** Message discriminator. */
  type: "start";
  /** NFQUEUE settings: queue number, kernel queue length, socket buffer bytes, fail-open. */
  queue: { num: number; maxlen: number; rcvbuf: number; failOpen: boolean; gso?: boolean };
  /** Protected networks: only TCP to these (and `ports`) is diverted. */
  protect: Cidr[];
  /** Destination ports that are diverted. */
  ports: number[];
  /** Responder addresses as bytes (4 / 16), when that family is diverted. */
  responder4?: Uint8Array;
  /** IPv6 counterpart of `responder4` (16 bytes). */
  responder6?: Uint8Array;
  /** TCP port the responder listens on; diverted flows are rewritten to it. */
  responderPort: number;
  /** Flow table bounds: most concurrent flows, idle expiry in seconds. */
  flows: { max: number; idleSeconds: number };
  /** skb->mark set on rewritten inbound packets (the firewall guard checks it); 0: none. */
  mark: number;
  /**
   * Shared counter of messages posted to the Worker after "start" (Atomics.add by the main
   * thread); the Worker yields to its event loop only when it differs from what it handled.
   */
  control: Int32Array;
  /** Datagrams per recvmmsg (default 32). */
  slots?: number;
  /**
   * The relay source (`relay.source: client`): the port range of client-mode relay sockets and
   * the shared registry words (see src/flow/relay_registry.ts), and the relay flows' idle expiry.
   * Absent: gateway mode only.
   */
  relay?: { first: number; last: number; words: Int32Array; idleSeconds: number };
}

/** Main thread → Worker. */
export type ToWorker =
  | WorkerStart
  | { type: "block"; ip: string; untilMs: number }
  | { type: "networks"; cidrs: string[] }
  | { type: "stats"; id: number }
  | { type: "stop" };

/** A flow event as posted by the Worker: the Diverter's FlowEvent, unchanged. */
export type FlowEventMessage = FlowEvent;

/** Worker → main thread. */
export type FromWorker =
  /** `fd`: the netlink socket, so the main thread can close it if this Worker dies. */
  | { type: "ready"; rcvbuf: number; fd: number }
  | { type: "error"; message: string; errno?: number }
  | { type: "flows"; events: FlowEventMessage[] }
  | { type: "stats"; id: number; stats: Record<string, number> }
  | { type: "warning"; event: string; fields: Record<string, string | number> }
  | { type: "stopped"; stats: Record<string, number> };
