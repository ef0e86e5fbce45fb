/**
 * Drives DivertService in a fresh network namespace (`unshare -n`, no traffic) for
 * `divert_service_test.ts`; prints one JSON line.
 *
 *   start QUEUE       start and close; {"ok":true} or the error
 *   failopen QUEUE    the same with gateway.queue.failOpen (the kernel must accept the flag)
 *   busy QUEUE        start twice on the same queue; the second's error
 *   lifecycle QUEUE   start; stats; lookup/waitFor on an unknown flow; close twice; stats after
 */
import { DivertService } from "../../ffi/divert_service.ts";
import type { GatewayConfig } from "../../src/config/config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { parseCidr } from "../../src/packet/cidr.ts";

const [mode, q] = Deno.args;
const config: GatewayConfig = {
  protect: [parseCidr("198.51.100.0/24")],
  ports: [25],
  interfaces: [],
  hostname: "gw.test",
  responder: { ipv4: "auto", ipv6: "auto", port: 10025 },
  queue: { num: Number(q), maxlen: 1024, rcvbuf: 1 << 20 },
  flows: { max: 16, idleSeconds: 60 },
};
const log = new MemoryLog();
const out = (o: unknown) => console.log(JSON.stringify(o));
const start = () => DivertService.start({ config, responder4: "192.0.2.1", log });
const err = (e: unknown) => ({
  ok: false,
  name: (e as Error).name,
  message: (e as Error).message,
  errno: (e as { errno?: number }).errno,
});
setTimeout(() => Deno.exit(3), 20_000);

if (mode === "failopen") config.queue.failOpen = true;
if (mode === "start" || mode === "failopen") {
  try {
    const s = await start();
    await s.close();
    out({ ok: true });
  } catch (e) {
    out(err(e));
  }
} else if (mode === "busy") {
  const first = await start();
  try {
    const second = await start();
    await second.close();
    out({ ok: true });
  } catch (e) {
    out(err(e));
  }
  await first.close();
} else if (mode === "lifecycle") {
  const s = await start();
  const stats = await s.stats();
  const t0 = performance.now();
  const waited = await s.waitFor("192.0.2.10", 40000, 150);
  const waitedMs = performance.now() - t0;
  const lookup = s.lookup("192.0.2.10", 40000);
  const closing = s.close();
  const again = s.close();
  await Promise.all([closing, again]);
  await s.close();
  const after = await s.stats();
  const waitAfterClose = await s.waitFor("192.0.2.10", 40000, 5000);
  s.block("192.0.2.10", Date.now() + 1000); // ignored after close, must not throw
  out({
    ok: true,
    sameClosePromise: closing === again,
    statsKeys: Object.keys(stats).length,
    nfqPackets: stats.nfqPackets,
    waited: waited ?? null,
    waitedMs,
    lookup: lookup ?? null,
    afterHasCounters: "nfqPackets" in after,
    waitAfterClose: waitAfterClose ?? null,
    events: log.events.map((e) => e.name),
  });
}
Deno.exit(0);
