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
}

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
  );
}

function upgrade(
  io: SessionIo,
  make: (raw: Duplex) => tls.TLSSocket,
  ready: "secure" | "secureConnect",
  timeoutMs: number,
): Promise<TlsIo> {
  return new Promise((resolve, reject) => {
    let raw: Duplex;
    let sock: tls.TLSSocket;
    try {
      raw = Duplex.fromWeb({ readable: io.readable, writable: io.writable });
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
    sock.once(ready, () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const web = Duplex.toWeb(sock);
      let closed = false;
      resolve({
        readable: web.readable as ReadableStream<Uint8Array>,
        writable: web.writable as WritableStream<Uint8Array>,
        close: () => {
          if (closed) return;
          closed = true;
          destroy();
        },
        protocol: sock.getProtocol() ?? "unknown",
        cipher: sock.getCipher()?.name ?? "unknown",
      });
    });
  });
}
