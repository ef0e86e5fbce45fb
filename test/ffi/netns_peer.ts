/**
 * A small TCP peer for the namespace tests of the packet path (`test/netns/divert_test.ts`);
 * run inside a namespace, one JSON line per result on stdout.
 *
 *   server ADDR:PORT...        accept on each; first byte "E": echo everything back;
 *                              "D": discard until EOF, then answer the byte count (8 bytes, BE)
 *   echo HOST PORT BYTES       send "E" + BYTES random bytes, check they come back intact
 *   bulk HOST PORT SECONDS     send "D" + as much as possible for SECONDS; report MB/s
 *   rr HOST PORT COUNT         COUNT 64-byte round trips over "E"; report p50/p99 in µs
 *   probe HOST PORT MS         try to connect within MS; report whether it worked
 *
 * Bounded: every client mode ends within its deadline plus 10 s; the server exits after 120 s.
 */

import { readExactly, serveEchoOrDiscard } from "./echo_protocol.ts";

const [mode, ...args] = Deno.args;
const out = (o: unknown) => console.log(JSON.stringify(o));

function hostOf(a: Deno.Addr): { ip: string; port: number } {
  const n = a as Deno.NetAddr;
  return { ip: n.hostname, port: n.port };
}

if (mode === "server") {
  setTimeout(() => Deno.exit(0), 120_000);
  for (const spec of args) {
    const i = spec.lastIndexOf(":");
    const hostname = spec.slice(0, i).replace(/^\[|\]$/g, "");
    const port = Number(spec.slice(i + 1));
    const l = Deno.listen({ hostname, port });
    (async () => {
      for await (const conn of l) {
        out({ event: "accept", local: hostOf(conn.localAddr), client: hostOf(conn.remoteAddr) });
        serveEchoOrDiscard(conn);
      }
    })();
  }
  out({ event: "ready" });
} else if (mode === "echo") {
  const [hostname, port, bytes] = [args[0], Number(args[1]), Number(args[2])];
  const t0 = performance.now();
  const conn = await Deno.connect({ hostname, port });
  const data = crypto.getRandomValues(new Uint8Array(Math.min(bytes, 65536)));
  const payload = new Uint8Array(bytes);
  for (let o = 0; o < bytes; o += data.length) {
    payload.set(data.subarray(0, Math.min(data.length, bytes - o)), o);
  }
  const writer = (async () => {
    await conn.write(new Uint8Array([0x45]));
    let off = 0;
    while (off < payload.length) off += await conn.write(payload.subarray(off, off + 65536));
  })();
  const back = await readExactly(conn, bytes);
  await writer;
  const sameBytes = back !== undefined && back.every((b, i) => b === payload[i]);
  out({
    ok: sameBytes,
    bytes,
    local: hostOf(conn.localAddr),
    remote: hostOf(conn.remoteAddr),
    ms: Math.round(performance.now() - t0),
  });
  conn.close();
} else if (mode === "bulk") {
  const [hostname, port, secs] = [args[0], Number(args[1]), Number(args[2])];
  const conn = await Deno.connect({ hostname, port });
  conn.setNoDelay(false);
  const chunk = new Uint8Array(1 << 18).fill(0x78);
  await conn.write(new Uint8Array([0x44]));
  let sent = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < secs * 1000) sent += await conn.write(chunk);
  await conn.closeWrite();
  const reply = await readExactly(conn, 8);
  const dt = (performance.now() - t0) / 1000;
  const received = reply ? Number(new DataView(reply.buffer).getBigUint64(0)) : -1;
  out({ sent, received, seconds: dt, mbps: sent / dt / 1e6 });
  conn.close();
} else if (mode === "rr") {
  const [hostname, port, count] = [args[0], Number(args[1]), Math.min(100_000, Number(args[2]))];
  const conn = await Deno.connect({ hostname, port });
  conn.setNoDelay(true);
  await conn.write(new Uint8Array([0x45]));
  const msg = new Uint8Array(64).fill(0x79);
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < count && performance.now() - t0 < 20_000; i++) {
    const t1 = performance.now();
    await conn.write(msg);
    if (!(await readExactly(conn, 64))) break;
    lat.push((performance.now() - t1) * 1000);
  }
  const secs = (performance.now() - t0) / 1000;
  lat.sort((x, y) => x - y);
  out({
    count: lat.length,
    perSecond: lat.length / secs,
    p50: lat[Math.floor(lat.length / 2)],
    p99: lat[Math.floor(lat.length * 0.99)],
  });
  conn.close();
} else if (mode === "probe") {
  const [hostname, port, ms] = [args[0], Number(args[1]), Number(args[2])];
  const result = await Promise.race([
    Deno.connect({ hostname, port }).then((c) => {
      c.close();
      return "connected";
    }, (e) => `error: ${e instanceof Error ? e.message : e}`),
    new Promise<string>((r) => setTimeout(() => r("timeout"), ms)),
  ]);
  out({ result });
  Deno.exit(0);
} else {
  console.error(`unknown mode ${mode}`);
  Deno.exit(2);
}
