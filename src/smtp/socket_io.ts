/**
 * A connected `node:net` socket as a `SessionIo` (web streams), thin: the socket's own events
 * and `write` callback, with no node-stream ↔ web-stream adapter in between (issue 9: the
 * generic `Duplex.toWeb` cost about a third of a millisecond per relayed message on Deno 2.9.6,
 * mostly when the connection was torn down: `destroy()` through both adapters).
 *
 * Back-pressure: reading pauses the socket when the readable stream's queue (64 KiB) is full and
 * resumes it when the reader pulls; a write settles when node has handed the bytes to the kernel
 * (its write callback). What it trusts: node:net's event order (data… then end or error, then
 * close). Errors on the socket end the readable stream with that error and fail the next write;
 * they are never thrown uncaught.
 *
 * @module
 */
import type { Socket } from "node:net";
import type { SessionIo } from "./session_io.ts";

/** Bytes queued in the readable stream before the socket is paused. */
const READ_QUEUE_BYTES = 64 * 1024;

/** Wraps a connected socket; `close()` destroys it (safe to call twice). */
export function socketIo(sock: Socket): SessionIo {
  let done = false;
  let closed = false;
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      sock.on("data", (chunk: Uint8Array) => {
        if (done) return;
        c.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if ((c.desiredSize ?? 0) <= 0) sock.pause();
      });
      sock.on("end", () => {
        if (done) return;
        done = true;
        c.close();
      });
      sock.on("error", (e: Error) => {
        if (done) return;
        done = true;
        c.error(e);
      });
      sock.on("close", () => {
        if (done) return;
        done = true;
        c.close();
      });
    },
    pull() {
      if (sock.isPaused()) sock.resume();
    },
    cancel() {
      done = true;
      sock.destroy();
    },
  }, { highWaterMark: READ_QUEUE_BYTES, size: (chunk) => chunk.byteLength });
  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      return new Promise<void>((resolve, reject) => {
        if (sock.destroyed) {
          reject(new Error("socket closed"));
          return;
        }
        sock.write(chunk, (e?: Error | null) => e ? reject(e) : resolve());
      });
    },
    close() {
      return new Promise<void>((resolve) => sock.end(() => resolve()));
    },
    abort() {
      sock.destroy();
    },
  });
  return {
    readable,
    writable,
    close: () => {
      if (closed) return;
      closed = true;
      // The "close" event then ends the readable stream (a pending read sees the end).
      sock.destroy();
    },
    setNoDelay: (on: boolean) => sock.setNoDelay(on),
  } as SessionIo;
}
