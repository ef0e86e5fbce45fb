/** Shared fixtures of the action tests: an envelope, relay timeouts, text/bytes helpers. */
import type { RelayConfig } from "../../src/config/config.ts";
import type { Envelope } from "../../src/action/verdict_types.ts";
import { type Connect, sendMessage } from "../../src/action/send_message.ts";
import type { ReleaseSend } from "../../src/action/quarantine_store.ts";

/** A transaction from a documentation address to a documentation server. */
export function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    mailFrom: "sender@example.org",
    rcptTo: ["user@corp.example"],
    client: { ip: "203.0.113.5", port: 40000 },
    server: { ip: "198.51.100.25", port: 25 },
    helo: "client.example.org",
    tls: false,
    sessionId: "s1",
    transactionId: "s1.t1",
    ...over,
  };
}

/** Short timeouts so a broken test fails fast. */
export const RELAY: RelayConfig = { connectTimeout: 5, replyTimeout: 5, dataTimeout: 10 };

/** Connects every "server" to 127.0.0.1:`port` (tests use documentation addresses in envelopes). */
export function loopbackConnect(port: number): Connect {
  return () => Deno.connect({ hostname: "127.0.0.1", port });
}

/** A release sender that delivers to 127.0.0.1:`port` whatever server the entry names. */
export function releaseVia(port: number): ReleaseSend {
  return (message, env, server) =>
    sendMessage(
      {
        server: { host: server.ip, port: server.port },
        hostname: "gw.example",
        connect: loopbackConnect(port),
        relay: RELAY,
      },
      env,
      message,
    );
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** UTF-8 bytes of `s`. */
export function bytes(s: string): Uint8Array {
  return enc.encode(s);
}

/** `b` as text (UTF-8). */
export function text(b: Uint8Array): string {
  return dec.decode(b);
}

/** The names of the fields of a header section, in order (unfolded). */
export function headerNames(message: string): string[] {
  const end = message.indexOf("\r\n\r\n");
  const head = end < 0 ? message : message.slice(0, end + 2);
  return head.split("\r\n").filter((l) => l !== "" && !/^[ \t]/.test(l)).map((l) =>
    l.slice(0, l.indexOf(":"))
  );
}

/** A new empty temporary directory, removed by the returned function. */
export async function tempDir(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "ssg-action-test-" });
  return {
    dir,
    remove: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** Whether the test may spawn processes (`--allow-run`). */
export const canRun = Deno.permissions.querySync({ name: "run" }).state === "granted";

/** The user id, or undefined without `--allow-sys` (tests that depend on it are then skipped). */
export const uid: number | undefined =
  Deno.permissions.querySync({ name: "sys", kind: "uid" }).state === "granted"
    ? Deno.uid() ?? undefined
    : undefined;
