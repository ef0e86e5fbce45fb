/**
 * A small real SMTP server on 127.0.0.1 for the action tests: it records every transaction with
 * the exact message bytes it received (dot-unstuffed, final "." line removed), and answers with
 * configurable replies. Bounded: each connection at most 16 MiB and 30 s; each server closes its
 * listener and connections in `close()`.
 */

/** One received transaction. */
export interface ReceivedTransaction {
  helo: string;
  /** The MAIL command line as sent (to check parameters such as SIZE/BODY). */
  mailLine: string;
  mailFrom: string;
  rcptTo: string[];
  /** The message bytes exactly as the client meant them (dot-stuffing undone). */
  data: Uint8Array;
}

/** Replies the server gives (full reply lines without CRLF). */
export interface FakeSmtpOptions {
  greeting?: string;
  /** Reply to RCPT for `address` (default "250 2.1.5 OK"). */
  rcpt?: (address: string) => string;
  /** Reply to MAIL (default "250 2.1.0 OK"). */
  mail?: string;
  /** Reply to the final "." (default "250 2.0.0 queued"). */
  data?: string;
  /** Extensions in EHLO (default SIZE, 8BITMIME, PIPELINING). */
  extensions?: string[];
}

const MAX_CONN_BYTES = 16 * 1024 * 1024;
const CONN_MS = 30_000;

/** A recording SMTP server. */
export class FakeSmtpServer {
  readonly transactions: ReceivedTransaction[] = [];
  /** Every command line received, in order, across connections. */
  readonly commands: string[] = [];
  connections = 0;
  #listener: Deno.Listener;
  #conns = new Set<Deno.Conn>();
  #opts: FakeSmtpOptions;
  #loop: Promise<void>;
  #handlers = new Set<Promise<void>>();
  #waiters: (() => void)[] = [];

  private constructor(listener: Deno.Listener, opts: FakeSmtpOptions) {
    this.#listener = listener;
    this.#opts = opts;
    this.#loop = this.#accept();
  }

  /** Starts listening on 127.0.0.1 on a free port. */
  static start(opts: FakeSmtpOptions = {}): FakeSmtpServer {
    return new FakeSmtpServer(Deno.listen({ hostname: "127.0.0.1", port: 0 }), opts);
  }

  /** The port. */
  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  /** Resolves once `n` transactions have been received (at most `ms` milliseconds). */
  async waitFor(n: number, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.transactions.length < n) {
      if (Date.now() > deadline) throw new Error(`Timed out waiting for ${n} transactions`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Stops listening, closes open connections, waits for the handlers. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await this.#loop;
    await Promise.all([...this.#handlers]);
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return;
      }
      this.connections++;
      this.#conns.add(conn);
      const h = this.#serve(conn).catch(() => {}).finally(() => {
        this.#conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
        this.#handlers.delete(h);
      });
      this.#handlers.add(h);
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const enc = new TextEncoder();
    const started = Date.now();
    const send = async (line: string) => {
      const b = enc.encode(line + "\r\n");
      let off = 0;
      while (off < b.length) off += await conn.write(b.subarray(off));
    };
    await send(this.#opts.greeting ?? "220 fake.test ESMTP");
    let buf = new Uint8Array(0);
    let total = 0;
    let inData = false;
    let tx: Partial<ReceivedTransaction> & { rcptTo: string[] } = { rcptTo: [] };
    let helo = "";
    const chunk = new Uint8Array(65536);
    for (;;) {
      if (Date.now() - started > CONN_MS) return;
      const n = await conn.read(chunk);
      if (n === null) return;
      total += n;
      if (total > MAX_CONN_BYTES) return;
      const merged = new Uint8Array(buf.length + n);
      merged.set(buf);
      merged.set(chunk.subarray(0, n), buf.length);
      buf = merged;
      for (;;) {
        if (inData) {
          const end = findDataEnd(buf);
          if (!end) break;
          const data = unstuff(buf.subarray(0, end.bodyEnd), end.crlf);
          buf = buf.slice(end.consumed);
          inData = false;
          this.transactions.push({
            helo,
            mailLine: tx.mailLine ?? "",
            mailFrom: tx.mailFrom ?? "",
            rcptTo: tx.rcptTo,
            data,
          });
          tx = { rcptTo: [] };
          for (const w of this.#waiters.splice(0)) w();
          await send(this.#opts.data ?? "250 2.0.0 queued");
          continue;
        }
        const lf = buf.indexOf(0x0a);
        if (lf < 0) break;
        const line = new TextDecoder().decode(buf.subarray(0, lf)).replace(/\r$/, "");
        buf = buf.slice(lf + 1);
        this.commands.push(line);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO") {
          helo = line.slice(5);
          const ext = this.#opts.extensions ?? ["SIZE 100000000", "8BITMIME", "PIPELINING"];
          const lines = ["fake.test", ...ext];
          for (let i = 0; i < lines.length; i++) {
            await send(`250${i === lines.length - 1 ? " " : "-"}${lines[i]}`);
          }
        } else if (verb === "HELO") {
          helo = line.slice(5);
          await send("250 fake.test");
        } else if (verb === "MAIL") {
          const m = /^MAIL FROM:<([^>]*)>/i.exec(line);
          tx = { rcptTo: [], mailFrom: m?.[1] ?? "", mailLine: line };
          await send(this.#opts.mail ?? "250 2.1.0 OK");
        } else if (verb === "RCPT") {
          const m = /^RCPT TO:<([^>]*)>/i.exec(line);
          const addr = m?.[1] ?? "";
          const reply = this.#opts.rcpt?.(addr) ?? "250 2.1.5 OK";
          if (reply.startsWith("25")) tx.rcptTo.push(addr);
          await send(reply);
        } else if (verb === "DATA") {
          inData = true;
          await send("354 go ahead");
        } else if (verb === "RSET") {
          tx = { rcptTo: [] };
          await send("250 2.0.0 OK");
        } else if (verb === "QUIT") {
          await send("221 2.0.0 bye");
          return;
        } else {
          await send("502 5.5.2 unknown");
        }
      }
    }
  }
}

/**
 * Where the data ends: `bodyEnd` is the index of the CRLF before "." CRLF (`crlf` true), or 0
 * with `crlf` false for data that is just "." CRLF; `consumed` bytes include the terminator.
 */
function findDataEnd(
  buf: Uint8Array,
): { bodyEnd: number; consumed: number; crlf: boolean } | undefined {
  if (buf.length >= 3 && buf[0] === 0x2e && buf[1] === 0x0d && buf[2] === 0x0a) {
    return { bodyEnd: 0, consumed: 3, crlf: false };
  }
  for (let i = buf.indexOf(0x0d); i >= 0 && i + 4 < buf.length; i = buf.indexOf(0x0d, i + 1)) {
    if (
      buf[i + 1] === 0x0a && buf[i + 2] === 0x2e && buf[i + 3] === 0x0d && buf[i + 4] === 0x0a
    ) return { bodyEnd: i, consumed: i + 5, crlf: true };
  }
  return undefined;
}

/** The data bytes with each line's leading extra "." removed and the last CRLF restored. */
function unstuff(body: Uint8Array, crlf: boolean): Uint8Array {
  const out: number[] = [];
  let lineStart = true;
  for (let i = 0; i < body.length; i++) {
    if (lineStart && body[i] === 0x2e) {
      lineStart = false;
      continue;
    }
    out.push(body[i]);
    lineStart = body[i] === 0x0a;
  }
  if (crlf) out.push(0x0d, 0x0a);
  return new Uint8Array(out);
}
