/**
 * The tiny protocol the namespace test peers speak (`netns_peer.ts`, `netns_gateway.ts`): the
 * first byte chooses "E" (echo everything back) or "D" (discard until EOF, then answer the byte
 * count as 8 bytes big-endian).
 */

/** Reads exactly `n` bytes; undefined if the peer closes first. */
export async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array | undefined> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) return undefined;
    got += r;
  }
  return buf;
}

/** Serves one connection ("E" or "D") and closes it; never throws. */
export async function serveEchoOrDiscard(conn: Deno.Conn): Promise<void> {
  try {
    const kind = await readExactly(conn, 1);
    if (!kind) return;
    const buf = new Uint8Array(1 << 18);
    if (kind[0] === 0x45) {
      for (;;) {
        const r = await conn.read(buf);
        if (r === null) break;
        let off = 0;
        while (off < r) off += await conn.write(buf.subarray(off, r));
      }
    } else {
      let total = 0;
      for (;;) {
        const r = await conn.read(buf);
        if (r === null) break;
        total += r;
      }
      const reply = new Uint8Array(8);
      new DataView(reply.buffer).setBigUint64(0, BigInt(total));
      await conn.write(reply);
    }
  } catch {
    // the peer went away
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}
