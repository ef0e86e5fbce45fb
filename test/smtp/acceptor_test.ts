/**
 * The acceptor over loopback TCP: connection limits count what clients hold, so an MTA that
 * reconnects right after 221 is never refused, and SIGHUP's `reconfigure()` binds at once.
 * The server side is a fake (in memory) whose QUIT answer is slow, like a server under load.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import type { SsgConfig } from "../../src/config/config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { Acceptor } from "../../src/smtp/acceptor.ts";
import { fakeUpstream, recordingJudge } from "./harness.ts";

function config(perClient: number): SsgConfig {
  return parseConfig(
    `gateway:
  protect: [198.51.100.0/24]
  hostname: gw.example
smtp:
  max_sessions_per_client: ${perClient}
`,
    "rules/acceptor.yaml",
  );
}

/** A line-by-line SMTP client over a Deno.Conn (test side). */
class Client {
  #conn: Deno.Conn;
  #buf = "";
  #dec = new TextDecoder();
  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }
  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  /** One whole reply (multi-line joined), or "<closed>". Bounded by 5 s. */
  async reply(): Promise<string> {
    const deadline = Date.now() + 5_000;
    const chunk = new Uint8Array(4096);
    for (;;) {
      const m = this.#buf.match(/^(?:\d{3}-[^\n]*\n)*\d{3} [^\n]*\n/);
      if (m) {
        this.#buf = this.#buf.slice(m[0].length);
        return m[0];
      }
      if (Date.now() > deadline) throw new Error(`no reply in 5 s (have ${this.#buf})`);
      const n = await this.#conn.read(chunk);
      if (n === null) return "<closed>";
      this.#buf += this.#dec.decode(chunk.subarray(0, n));
    }
  }
  async cmd(line: string): Promise<string> {
    await this.#conn.write(new TextEncoder().encode(line + "\r\n"));
    return await this.reply();
  }
  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

async function withAcceptor(
  perClient: number,
  fn: (a: Acceptor, port: number, log: MemoryLog) => Promise<void>,
): Promise<void> {
  const log = new MemoryLog();
  const upstream = fakeUpstream({ quitDelayMs: 300 });
  const acceptor = new Acceptor({
    addresses: ["127.0.0.1"],
    port: 0,
    config: config(perClient),
    judge: recordingJudge(),
    log,
    originalDestination: () => Promise.resolve({ ip: "198.51.100.25", port: 25 }),
    connect: upstream.connect,
  });
  acceptor.start();
  try {
    await fn(acceptor, acceptor.listenAddrs[0].port, log);
  } finally {
    await acceptor.close();
  }
}

/** One whole transaction and QUIT; returns every reply code in order. */
async function sendOne(port: number, n: number): Promise<number[]> {
  const c = await Client.open(port);
  try {
    const codes = [await c.reply()];
    if (!codes[0].startsWith("220")) return [Number(codes[0].slice(0, 3)) || 0];
    codes.push(await c.cmd("EHLO client.example"));
    codes.push(await c.cmd("MAIL FROM:<a@example.org>"));
    codes.push(await c.cmd("RCPT TO:<b@example.net>"));
    codes.push(await c.cmd("DATA"));
    codes.push(await c.cmd(`Subject: ${n}\r\n\r\nmessage ${n}\r\n.`));
    codes.push(await c.cmd("QUIT"));
    return codes.map((r) => Number(r.slice(0, 3)));
  } finally {
    c.close();
  }
}

Deno.test("Acceptor: a client at exactly max_sessions_per_client that reconnects right after 221 is never refused", async () => {
  await withAcceptor(2, async (_a, port, log) => {
    // Two senders in parallel (= the limit), each reconnecting at once after its 221, while
    // the server takes 300 ms to answer SSG's own QUIT.
    const lanes = [0, 1].map(async (lane) => {
      const all: number[][] = [];
      for (let i = 0; i < 6; i++) all.push(await sendOne(port, lane * 100 + i));
      return all;
    });
    for (const lane of await Promise.all(lanes)) {
      for (const codes of lane) assert.deepEqual(codes, [220, 250, 250, 250, 354, 250, 221]);
    }
    assert.equal(log.named("smtp.limit").length, 0, "no session was refused");
  });
});

Deno.test("Acceptor: max_sessions_per_client − 1, at, + 1 open sessions: only the one past the limit gets 421", async () => {
  await withAcceptor(2, async (_a, port, log) => {
    const a = await Client.open(port);
    const b = await Client.open(port);
    const c = await Client.open(port);
    try {
      assert.match(await a.reply(), /^220 /, "limit − 1");
      assert.match(await b.reply(), /^220 /, "at the limit");
      assert.match(await c.reply(), /^421 4\.7\.0 .*too many sessions from this client/, "past it");
      assert.equal(await c.reply(), "<closed>");
      // The moment one of them has its 221, a new connection is served.
      assert.match(await a.cmd("QUIT"), /^221 /);
      const d = await Client.open(port);
      assert.match(await d.reply(), /^220 /, "served right after a 221");
      d.close();
      assert.equal(log.named("smtp.limit").length, 1);
    } finally {
      for (const x of [a, b, c]) x.close();
    }
  });
});

Deno.test("Acceptor.reconfigure() applies a lower per-client limit to the next connection", async () => {
  await withAcceptor(2, async (acceptor, port) => {
    const a = await Client.open(port);
    try {
      assert.match(await a.reply(), /^220 /);
      acceptor.reconfigure(config(1));
      const b = await Client.open(port);
      assert.match(await b.reply(), /^421 4\.7\.0 /, "one open session is the new limit");
      b.close();
      assert.match(await a.cmd("NOOP"), /^250 /, "the running session is not touched");
    } finally {
      a.close();
    }
  });
});
