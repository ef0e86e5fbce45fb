/**
 * `relay.source` — which address the relay leg to the protected server leaves the gateway with,
 * and the settings of that choice, with their defaults resolved in one place.
 *
 * - `client` (the default): the relay's packets carry the CLIENT's address (and, once the
 *   server's route back is proven, the client's own port), rewritten in the packet path, so the
 *   server's mynetworks, access rules, rate limits, SPF and logs judge the real client exactly as
 *   on a direct connection. Needs the server's route to the client to pass the gateway (true
 *   where SSG is the router in front of the servers). When a server's SYN-ACK does not come back
 *   through the gateway within `source_probe_timeout`, SSG falls back for that server, for
 *   `source_fallback_ttl`, to its own address, announcing the client with XCLIENT (or XFORWARD).
 * - `gateway`: the relay always uses the gateway's own address (plus XCLIENT/XFORWARD when the
 *   server offers it). Caution: a server that trusts the gateway's subnet (mynetworks) then
 *   relays for anyone who reaches it through SSG unless it honours XCLIENT.
 *
 * Why `client` is the default: it is the only mode in which the server's own policy works
 * without configuring the server for SSG — above all, a server whose mynetworks contains the
 * gateway does not become an open relay. Its routing requirement holds in the topology SSG is
 * built for (the gateway routes the servers' network), and where it does not hold the fallback
 * is automatic and logged (`relay.source_fallback`).
 *
 * `source_ports` is the local port range of client-mode relay sockets (the firewall queues only
 * these, see firewall.ts); it bounds concurrent client-mode relay connections and should lie
 * outside the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default).
 */
import type { RelayConfig } from "./config.ts";

/** Most ports in `relay.source_ports` (each is one concurrent client-mode relay connection). */
export const MAX_RELAY_PORTS = 4096;

/** The relay source settings, defaults applied. */
export interface RelaySourceSettings {
  /** "client" or "gateway". */
  mode: "client" | "gateway";
  /** Local port range of client-mode relay sockets. */
  ports: { first: number; last: number };
  /** How long to wait for the SYN-ACK of a client-mode connection before falling back, s. */
  probeTimeout: number;
  /** How long a server stays in the gateway fallback, s. */
  fallbackTtl: number;
}

/** Defaults of the relay source settings. */
export const RELAY_SOURCE_DEFAULTS: Readonly<RelaySourceSettings> = Object.freeze({
  mode: "client",
  ports: Object.freeze({ first: 61000, last: 61999 }),
  probeTimeout: 2,
  fallbackTtl: 600,
});

/** The settings in `relay` (the loader leaves unset keys absent) with defaults applied. */
export function relaySourceSettings(relay: RelayConfig): RelaySourceSettings {
  return {
    mode: relay.source ?? RELAY_SOURCE_DEFAULTS.mode,
    ports: relay.sourcePorts ?? { ...RELAY_SOURCE_DEFAULTS.ports },
    probeTimeout: relay.sourceProbeTimeout ?? RELAY_SOURCE_DEFAULTS.probeTimeout,
    fallbackTtl: relay.sourceFallbackTtl ?? RELAY_SOURCE_DEFAULTS.fallbackTtl,
  };
}
