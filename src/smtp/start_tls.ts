/**
 * STARTTLS (RFC 3207) on a `SessionIo`: turns a plaintext byte pipe into an encrypted one, as the
 * server (the responder, towards the client) or as the client (the relay, towards the server).
 *
 * Why `node:tls` and not Deno's own API (measured on Deno 2.9.6): Deno has no server-side upgrade
 * of an accepted `Deno.TcpConn` (`Deno.startTls` is client-only; `Deno.listenTls` cannot take
 * over a connection that already spoke plaintext SMTP). On the client side `Deno.startTls`
 * always validates the certificate chain — `unsafelyDisableHostnameVerification` only skips the
 * name check — so a self-signed certificate of an internal server (and `openssl req -x509`'s
 * default CA:TRUE certificate, refused by rustls as "CaUsedAsEndEntity") fails the handshake;
 * `unsafelyIgnoreCertificateErrors` exists only as a process-wide CLI flag. `node:tls`'s
 * `TLSSocket` runs over any node `Duplex`, so both directions use one mechanism:
 * the io's web streams → `Duplex.fromWeb` → `TLSSocket` → `Duplex.toWeb` → a new `SessionIo`.
 * It works for any `SessionIo` (TCP or in-memory), so the session needs no knowledge of sockets.
 *
 * The relay side waits for the server's post-handshake messages before it hands the connection
 * over (measured on the relay leg to Postfix 3.7, TLS 1.3, captured with tcpdump; figures in
 * bench/e2e/tls_relay.ts): a TLS 1.3 server sends its session tickets right after it reads our
 * Finished. Written at once, our first command (EHLO) left in the same segment as the Finished,
 * so nothing of ours was left to carry the ACK of the tickets; Postfix keeps Nagle on, so it held
 * its EHLO reply until our kernel's delayed ACK (40 ms) — every relayed message paid ~40 ms.
 * Handing the connection over only once the server's first post-handshake bytes have reached
 * us makes the EHLO's segment acknowledge them, as a Python or Postfix client does naturally
 * (3 ms). The bytes are seen where they enter (the plaintext-side stream, read ahead eagerly),
 * because node:tls in Deno surfaces a ticket ('session') only when the caller reads. The wait is
 * bounded by the handshake's own duration (at least `MIN_TICKET_WAIT_MS`, at most
 * `MAX_TICKET_WAIT_MS`) and skipped for TLS 1.2, which has no post-handshake messages; a server
 * that sends no tickets costs that bound once per connection (so do tickets that were already
 * read ahead when the handshake was reported done: they cannot be told apart from the server's
 * handshake flight, and waiting is then merely useless, never wrong). Rejected: TCP_QUICKACK on our socket (no Deno API), capping the relay at TLS 1.2
 * (a downgrade to avoid a timing artefact), writing the Finished alone without waiting (the EHLO
 * still leaves before the tickets arrive, so the same stall).
 *
 * Preconditions (Caution: lifetime): the io's readable and writable must be unlocked, with no
 * read in flight, and the caller must have dropped every plaintext byte it had buffered
 * (CVE-2011-0411: bytes received before the handshake must never be read as if they came over
 * TLS). Bounds: the handshake must finish within `timeoutMs`; on failure or timeout the
 * connection is closed and `TlsError` raised — nothing is thrown later from the sockets (their
 * errors surface as the end of the returned streams).
 */
import { Duplex } from "node:stream";
import tls from "node:tls";
import { closeQuietly, type SessionIo } from "./session_io.ts";

/** A TLS handshake failed or timed out; the connection is closed. */
export class TlsError extends Error {
  /** Creates the error; `name` is "TlsError". */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TlsError";
  }
}

/** An encrypted `SessionIo` and what was negotiated. */
export interface TlsIo extends SessionIo {
  /** Negotiated protocol version, e.g. "TLSv1.3". */
  readonly protocol: string;
  /** Negotiated cipher suite name. */
  readonly cipher: string;
  /**
   * Client side: bytes the server sent after the handshake (TLS 1.3 session tickets) that had
   * arrived before the io was handed over, that is before the caller could write (0 on the
   * server side, and when the server sent none within the bound).
   */
  readonly postHandshakeBytes: number;
}

/** Shortest wait for the server's session tickets after a TLS 1.3 client handshake. */
export const MIN_TICKET_WAIT_MS = 2;
/** Longest wait for the server's session tickets after a TLS 1.3 client handshake. */
export const MAX_TICKET_WAIT_MS = 50;

/** Runs the server side of the handshake with `identity` (PEM certificate and key). */
export function startServerTls(
  io: SessionIo,
  identity: { cert: string; key: string },
  timeoutMs: number,
): Promise<TlsIo> {
  return upgrade(
    io,
    (raw) => new tls.TLSSocket(raw, { isServer: true, cert: identity.cert, key: identity.key }),
    "secure",
    timeoutMs,
    false,
  );
}

/**
 * Runs the client side of the handshake. Security: the server's certificate is NOT verified
 * (opportunistic encryption, RFC 7435): this protects against passive eavesdropping on the link
 * to the internal server, not against an active attacker on it.
 */
export function startClientTls(
  io: SessionIo,
  options: { servername?: string },
  timeoutMs: number,
): Promise<TlsIo> {
  return upgrade(
    io,
    (raw) =>
      tls.connect({
        socket: raw,
        rejectUnauthorized: false,
        // SNI takes a host name only (RFC 6066 §3); an address is sent without SNI.
        servername: options.servername && !/^[0-9.:]+$/.test(options.servername)
          ? options.servername
          : undefined,
      }),
    "secureConnect",
    timeoutMs,
    true,
  );
}

function upgrade(
  io: SessionIo,
  make: (raw: Duplex) => tls.TLSSocket,
  ready: "secure" | "secureConnect",
  timeoutMs: number,
  awaitTickets: boolean,
): Promise<TlsIo> {
  return new Promise((resolve, reject) => {
    let raw: Duplex;
    let sock: tls.TLSSocket;
    const started = performance.now();
    // Client side: bytes from the server, counted where they enter; `handshakeBytes` is the
    // count at the end of the handshake, so what comes later is post-handshake (the server
    // speaks no SMTP before our first command).
    let received = 0;
    let handshakeBytes = -1;
    let onPostHandshake: (() => void) | undefined;
    try {
      const readable = awaitTickets
        ? readAhead(io.readable, (n) => {
          received += n;
          if (handshakeBytes >= 0 && received > handshakeBytes) onPostHandshake?.();
        })
        : io.readable;
      raw = Duplex.fromWeb({ readable, writable: io.writable });
      // Errors of the plaintext pipe reach us through the TLS socket; never uncaught.
      raw.on("error", () => {});
      sock = make(raw);
    } catch (e) {
      closeQuietly(io);
      reject(new TlsError(`Cannot start TLS: ${String(e)}`, { cause: e }));
      return;
    }
    let settled = false;
    const destroy = () => {
      sock.destroy();
      raw.destroy();
      closeQuietly(io);
    };
    const fail = (message: string, cause?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      destroy();
      reject(new TlsError(message, { cause }));
    };
    const timer = setTimeout(
      () => fail(`TLS handshake timed out after ${timeoutMs} ms`),
      timeoutMs,
    );
    // Stays attached for the socket's life: a late error ends the streams, never the process.
    sock.on("error", (e: Error) => fail(`TLS handshake failed: ${e.message}`, e));
    sock.once("close", () => fail("Connection closed during the TLS handshake"));
    sock.once(ready, async () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const web = Duplex.toWeb(sock);
      const protocol = sock.getProtocol() ?? "unknown";
      handshakeBytes = received;
      if (awaitTickets && protocol === "TLSv1.3") {
        const bound = Math.min(
          MAX_TICKET_WAIT_MS,
          Math.max(MIN_TICKET_WAIT_MS, performance.now() - started),
        );
        await new Promise<void>((done) => {
          const t = setTimeout(done, bound);
          onPostHandshake = () => {
            clearTimeout(t);
            done();
          };
          sock.once("close", onPostHandshake);
        });
        onPostHandshake = undefined;
      }
      let closed = false;
      resolve({
        readable: web.readable as ReadableStream<Uint8Array>,
        writable: web.writable as WritableStream<Uint8Array>,
        close: () => {
          if (closed) return;
          closed = true;
          destroy();
        },
        protocol,
        cipher: sock.getCipher()?.name ?? "unknown",
        postHandshakeBytes: awaitTickets ? received - handshakeBytes : 0,
      });
    });
  });
}

/**
 * `readable`, read ahead by up to 4 chunks whether or not anyone asks yet, reporting the size of
 * each chunk as it enters: that is how the server's tickets are noticed before anyone reads.
 */
function readAhead(
  readable: ReadableStream<Uint8Array>,
  onChunk: (bytes: number) => void,
): ReadableStream<Uint8Array> {
  const source = readable.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      try {
        const r = await source.read();
        if (r.done) return c.close();
        onChunk(r.value.byteLength);
        c.enqueue(r.value);
      } catch (e) {
        c.error(e);
      }
    },
    cancel(reason) {
      return source.cancel(reason);
    },
  }, { highWaterMark: 4 });
}
