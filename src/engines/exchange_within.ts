/**
 * One request/answer exchange with a local scanning service (clamd, Rspamd): connect, talk,
 * close — all within a time budget, never throwing. Each call connects anew (the service may
 * start after SSG, or restart); the connection is closed whatever happens, also when the budget
 * runs out mid-exchange.
 *
 * Trusts: nothing the service sends (the caller's `exchange` parses it, bounded). Limits: the
 * whole exchange, connect included, takes at most `timeoutMs`.
 *
 * @module
 */

/** The failure result every engine client returns. */
export interface ExchangeError {
  status: "error";
  reason: string;
}

/** What one exchange needs. */
export interface ExchangeOptions<T> {
  /** Service name for the reasons ("clamd", "rspamd"). */
  service: string;
  /** Its address as text, for the reasons. */
  address: string;
  /** The time budget of the whole exchange, ms. */
  timeoutMs: number;
  /** Opens the connection. */
  connect: () => Promise<Deno.Conn>;
  /** Talks over it and returns the result (may throw: the error becomes the reason). */
  exchange: (conn: Deno.Conn) => Promise<T>;
}

/** Runs one exchange; an error result on timeout or any failure (never throws). */
export async function exchangeWithin<T>(o: ExchangeOptions<T>): Promise<T | ExchangeError> {
  let conn: Deno.Conn | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const close = () => {
    try {
      conn?.close();
    } catch { /* closed */ }
  };
  const deadline = new Promise<ExchangeError>((resolve) => {
    timer = setTimeout(() => {
      resolve({ status: "error", reason: `no answer from ${o.service} within ${o.timeoutMs} ms` });
      close();
    }, o.timeoutMs);
  });
  const work = (async () => {
    conn = await o.connect();
    return await o.exchange(conn);
  })().catch((e): ExchangeError => ({
    status: "error",
    reason: `${o.service} at ${o.address}: ${e instanceof Error ? e.message : String(e)}`,
  }));
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
    close();
  }
}

/** Writes all of `bytes` to `conn`. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}
