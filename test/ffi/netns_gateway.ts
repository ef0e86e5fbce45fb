/**
 * The gateway side of `test/netns/divert_test.ts`: runs the real packet path (DivertService →
 * queue Worker → FFI → Diverter, and the Firewall) inside the gateway namespace, with a plain TCP
 * listener on the responder address instead of the SMTP responder. One JSON line per event on
 * stdout: {"event":"ready"}, {"event":"accept",...} with the lookup() result, {"event":"stats"}
 * on SIGUSR2, {"event":"blocked"} on SIGHUP (the client 192.0.2.10 is blocked for 3 s),
 * {"event":"stopped"} after SIGTERM (rules removed, queue unbound).
 *
 *   deno run --allow-all netns_gateway.ts QUEUE_NUM [--no-guard] [--iface NAME]
 *
 * Protected: 198.51.100.0/24 and 2001:db8:25::/64, port 25; responder 192.0.2.1 and
 * 2001:db8:1::1, port 10025. A connection without a flow entry is refused (closed at once), as
 * the real responder must do. Bounded: exits by itself after 120 s.
 */
import type { GatewayConfig } from "../../src/config/config.ts";
import type { EventLog, LogFields, LogLevel } from "../../src/log/log.ts";
import { parseCidr } from "../../src/packet/cidr.ts";
import { Firewall } from "../../src/divert/firewall.ts";
import { DivertService } from "../../ffi/divert_service.ts";
import { serveEchoOrDiscard } from "./echo_protocol.ts";

const out = (o: unknown) => console.log(JSON.stringify(o));
const queueNum = Number(Deno.args[0] ?? 25);
const guard = !Deno.args.includes("--no-guard");
const ifaceArg = Deno.args.indexOf("--iface");
const interfaces = ifaceArg > 0 ? [Deno.args[ifaceArg + 1]] : [];

const log: EventLog = {
  event(name: string, fields: LogFields = {}, level: LogLevel = "info") {
    out({ event: "log", name, level, fields });
  },
};

const config: GatewayConfig = {
  protect: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:25::/64")],
  ports: [25],
  interfaces,
  hostname: "gw.test",
  responder: { ipv4: "192.0.2.1", ipv6: "2001:db8:1::1", port: 10025 },
  queue: { num: queueNum, maxlen: 4096, rcvbuf: 8 << 20 },
  flows: { max: 1024, idleSeconds: 600 },
};
const responders = { ipv4: "192.0.2.1", ipv6: "2001:db8:1::1" };

const deadline = setTimeout(() => Deno.exit(3), 120_000);
const svc = await DivertService.start({
  config,
  responder4: responders.ipv4,
  responder6: responders.ipv6,
  log,
  onFailure: (e) => out({ event: "failure", error: e.message }),
});
const fw = new Firewall(config, responders, log, { guard });
const backend = await fw.install();

const listeners = [
  Deno.listen({ hostname: responders.ipv4, port: config.responder.port }),
  Deno.listen({ hostname: responders.ipv6, port: config.responder.port }),
];

async function serve(conn: Deno.Conn): Promise<void> {
  const peer = conn.remoteAddr as Deno.NetAddr;
  const dest = await svc.waitFor(peer.hostname, peer.port, 2000);
  out({
    event: "accept",
    client: { ip: peer.hostname, port: peer.port },
    local: {
      ip: (conn.localAddr as Deno.NetAddr).hostname,
      port: (conn.localAddr as Deno.NetAddr).port,
    },
    dest: dest ?? null,
  });
  if (!dest) conn.close(); // no flow behind it: refuse, as the responder does
  else await serveEchoOrDiscard(conn);
}

for (const l of listeners) {
  (async () => {
    try {
      for await (const conn of l) serve(conn);
    } catch { /* listener closed */ }
  })();
}

Deno.addSignalListener("SIGUSR2", async () => {
  out({ event: "stats", stats: await svc.stats() });
});

// SIGHUP: block the test client (192.0.2.10) for 3 s at the packet level.
Deno.addSignalListener("SIGHUP", () => {
  const until = Date.now() + 3000;
  svc.block("192.0.2.10", until);
  out({ event: "blocked", until });
});

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  for (const l of listeners) l.close();
  const stats = await svc.stats();
  await svc.close();
  await svc.close(); // idempotent
  await fw.remove();
  await fw.remove(); // idempotent
  out({ event: "stopped", stats });
  clearTimeout(deadline);
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);

out({ event: "ready", backend });
