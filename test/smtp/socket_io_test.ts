/** socket_io.ts: a node:net socket as web streams, without the generic adapter (issue 9). */
import assert from "node:assert/strict";
import net from "node:net";
import { socketIo } from "../../src/smtp/socket_io.ts";

/** A loopback echo server that closes after `closeAfter` bytes; bounded by the test. */
async function withEcho(closeAfter: number, fn: (port: number) => Promise<void>) {
  const server = net.createServer((s) => {
    let n = 0;
    s.on("data", (d: Uint8Array) => {
      s.write(d);
      n += d.length;
      if (n >= closeAfter) s.end();
    });
    s.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  try {
    await fn((server.address() as net.AddressInfo).port);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

Deno.test("socketIo: bytes written come back in order, then the peer's end closes the readable", async () => {
  const big = new Uint8Array(300_000).map((_, i) => i % 251);
  await withEcho(big.length + 5, async (port) => {
    const io = socketIo(await connect(port));
    const w = io.writable.getWriter();
    await w.write(new TextEncoder().encode("hello"));
    await w.write(big);
    const got: number[] = [];
    const reader = io.readable.getReader();
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      for (const b of r.value) got.push(b);
    }
    assert.equal(got.length, 5 + big.length);
    assert.equal(new TextDecoder().decode(new Uint8Array(got.slice(0, 5))), "hello");
    assert.deepEqual(new Uint8Array(got.slice(5)), big);
    io.close();
    io.close(); // twice is safe
  });
});

Deno.test("socketIo: close() ends a pending read; a write after close fails", async () => {
  await withEcho(1 << 30, async (port) => {
    const io = socketIo(await connect(port));
    const reader = io.readable.getReader();
    const pending = reader.read();
    io.close();
    const r = await pending;
    assert.equal(r.done, true);
    const w = io.writable.getWriter();
    await assert.rejects(w.write(new Uint8Array([1])));
  });
});

Deno.test("socketIo: cancelling the readable destroys the socket", async () => {
  await withEcho(1 << 30, async (port) => {
    const sock = await connect(port);
    const io = socketIo(sock);
    await io.readable.cancel();
    assert.equal(sock.destroyed, true);
  });
});
