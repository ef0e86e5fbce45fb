import assert from "node:assert/strict";
import { LineReader } from "../../src/smtp/line_reader.ts";
import { bytes, duplex, text } from "./harness.ts";

/** A reader over an in-memory pipe, and a writer to feed it. */
function setup(discardLimit?: number) {
  const d = duplex();
  const w = d.a.writable.getWriter();
  const reader = new LineReader(d.b.readable, discardLimit);
  const write = (s: string) => w.write(bytes(s));
  return { reader, write, close: () => d.a.close() };
}

Deno.test("LineReader returns CRLF lines, also when CRLF is split across chunks", async () => {
  const { reader, write, close } = setup();
  await write("EHLO a\r");
  await write("\nNOOP\r\n");
  const a = await reader.readLine(512, 1000);
  const b = await reader.readLine(512, 1000);
  assert.deepEqual(a.kind === "line" && [text(a.line), a.bareLf], ["EHLO a", false]);
  assert.deepEqual(b.kind === "line" && [text(b.line), b.bareLf], ["NOOP", false]);
  close();
  assert.equal((await reader.readLine(512, 1000)).kind, "eof");
});

Deno.test("LineReader flags a line ended by a bare LF", async () => {
  const { reader, write, close } = setup();
  await write("NOOP\n");
  const r = await reader.readLine(512, 1000);
  assert.deepEqual(r.kind === "line" && [text(r.line), r.bareLf], ["NOOP", true]);
  close();
});

Deno.test("LineReader line limit counts CRLF: limit-1 and limit pass, limit+1 is too long", async () => {
  for (const [total, kind] of [[511, "line"], [512, "line"], [513, "too-long"]] as const) {
    const { reader, write, close } = setup();
    await write("A".repeat(total - 2) + "\r\nNOOP\r\n");
    const r = await reader.readLine(512, 1000);
    assert.equal(r.kind, kind, `line of ${total}`);
    // Whatever happened, the next line is intact (the rest of the long line was skipped).
    const next = await reader.readLine(512, 1000);
    assert.equal(next.kind === "line" && text(next.line), "NOOP");
    close();
  }
});

Deno.test("LineReader answers too-long without waiting for the LF", async () => {
  const { reader, write, close } = setup();
  await write("X".repeat(600)); // no LF, and the peer keeps the connection open
  // A reader that waited for the LF would end with the 2 s deadline instead of too-long.
  const r = await reader.readLine(512, 2000);
  assert.equal(r.kind, "too-long");
  close();
});

Deno.test("LineReader skips an over-long line across many chunks without buffering it", async () => {
  const { reader, write, close } = setup(100_000);
  await write("X".repeat(600));
  assert.equal((await reader.readLine(512, 1000)).kind, "too-long");
  for (let i = 0; i < 50; i++) await write("Y".repeat(1000));
  await write("tail\r\nQUIT\r\n");
  const r = await reader.readLine(512, 1000);
  assert.equal(r.kind === "line" && text(r.line), "QUIT");
  close();
});

Deno.test("LineReader reports a flood when an over-long line passes the discard limit", async () => {
  const { reader, write, close } = setup(2000);
  await write("X".repeat(600));
  assert.equal((await reader.readLine(512, 1000)).kind, "too-long");
  await write("Y".repeat(3000));
  assert.equal((await reader.readLine(512, 1000)).kind, "flood");
  close();
});

Deno.test("LineReader times out on a silent peer and on a trickling one", async () => {
  const { reader, write, close } = setup();
  assert.equal((await reader.readLine(512, 30)).kind, "timeout");
  // A byte every 10 ms does not stretch the wait: the limit is per line.
  const trickle = (async () => {
    for (let i = 0; i < 20; i++) {
      await write("a");
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  assert.equal((await reader.readLine(512, 80)).kind, "timeout");
  await trickle;
  await write("\r\n");
  const r = await reader.readLine(512, 1000);
  assert.equal(r.kind === "line" && text(r.line), "a".repeat(20), "no byte lost after a timeout");
  close();
});

Deno.test("LineReader stops waiting when the abort signal fires", async () => {
  const { reader, close } = setup();
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 10);
  assert.equal((await reader.readLine(512, 5000, ac.signal)).kind, "aborted");
  close();
});

Deno.test("LineReader.readChunk and unread hand back the bytes after a boundary", async () => {
  const { reader, write, close } = setup();
  await write("abc.\r\nQUIT\r\n");
  const c = await reader.readChunk(1000);
  assert.equal(c.kind, "data");
  if (c.kind !== "data") return;
  assert.equal(text(c.bytes), "abc.\r\nQUIT\r\n");
  reader.unread(6);
  assert.equal(reader.buffered, 6);
  const r = await reader.readLine(512, 1000);
  assert.equal(r.kind === "line" && text(r.line), "QUIT");
  close();
});

Deno.test("LineReader.waitForData with 0 ms notices only bytes already sent", async () => {
  const empty = setup();
  assert.equal(await empty.reader.waitForData(0), "timeout");
  empty.close();
  const early = setup();
  await early.write("EHLO x\r\n");
  assert.equal(await early.reader.waitForData(0), "data");
  early.close();
});

Deno.test("LineReader.release() drops buffered bytes and hands back the stream; later bytes reach the new owner", async () => {
  const d = duplex();
  const w = d.a.writable.getWriter();
  const reader = new LineReader(d.b.readable);
  await w.write(bytes("STARTTLS\r\nMAIL FROM:<inject@evil.example>\r\n"));
  const r = await reader.readLine(512, 1000);
  assert.equal(r.kind === "line" && text(r.line), "STARTTLS");
  assert.equal(reader.release(), "MAIL FROM:<inject@evil.example>\r\n".length);
  assert.equal(reader.buffered, 0);
  const next = d.b.readable.getReader(); // the lock was released
  await w.write(bytes("handshake"));
  const chunk = await next.read();
  assert.equal(text(chunk.value!), "handshake");
  d.a.close();
});

Deno.test("LineReader.release() refuses while a read is in flight", async () => {
  const { reader, close } = setup();
  assert.equal((await reader.readLine(512, 1)).kind, "timeout"); // leaves its read pending
  assert.throws(() => reader.release(), /read is in flight/);
  close();
  await reader.cancel();
});
