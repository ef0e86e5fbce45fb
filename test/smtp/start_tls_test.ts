/**
 * `startClientTls()` against a real OpenSSL server (Python's ssl) over loopback TCP: the relay
 * hands a TLS 1.3 connection to its caller only after the server's session tickets were read, so
 * that the caller's first write (EHLO) acknowledges them — Postfix keeps Nagle on and otherwise
 * holds its EHLO reply until our delayed ACK (40 ms per relayed message; see start_tls.ts). No
 * timing is asserted: what is asserted is the order (tickets read before the first write), and
 * that servers without tickets (TLS 1.3 with none, TLS 1.2) still get a working connection.
 * Certificates are throwaway, made with openssl in a temporary directory. Every wait is bounded.
 */
import assert from "node:assert/strict";
import { startClientTls } from "../../src/smtp/start_tls.ts";

const SERVER = String.raw`
import socket, ssl, sys
cert, key, tickets, version = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.num_tickets = tickets
if version == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
srv.settimeout(20)
print(srv.getsockname()[1], flush=True)
c, _ = srv.accept()
c.settimeout(10)
s = ctx.wrap_socket(c, server_side=True)
line = s.recv(100)
s.sendall(b"echo:" + line)
s.close()
`;

async function certificate(dir: string): Promise<{ cert: string; key: string }> {
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  const out = await new Deno.Command("openssl", {
    args: ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
      .concat(["-subj", "/CN=mx.example", "-days", "1", "-keyout", key, "-out", cert]),
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return { cert, key };
}

/** Starts the server, connects, runs the client handshake, sends one line; returns what it saw. */
async function handshake(tickets: number, version: "1.3" | "1.2") {
  const dir = await Deno.makeTempDir({ prefix: "ssg-tls-tickets-" });
  const { cert, key } = await certificate(dir);
  const server = new Deno.Command("python3", {
    args: ["-c", SERVER, cert, key, String(tickets), version],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const kill = setTimeout(() => server.kill("SIGKILL"), 20_000);
  try {
    const out = server.stdout.getReader();
    const first = await out.read();
    out.releaseLock();
    const port = Number(new TextDecoder().decode(first.value).trim());
    assert.ok(port > 0, "the server printed its port");
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const tls = await startClientTls(conn, {}, 10_000);
    const w = tls.writable.getWriter();
    await w.write(new TextEncoder().encode("ping\n"));
    const r = tls.readable.getReader();
    let echoed = "";
    const deadline = Date.now() + 10_000;
    // Bounded: until the echo is complete or the stream ends, at most 10 s.
    while (!echoed.endsWith("\n") && Date.now() < deadline) {
      const chunk = await r.read();
      if (chunk.done) break;
      echoed += new TextDecoder().decode(chunk.value);
    }
    r.releaseLock();
    w.releaseLock();
    tls.close();
    return { protocol: tls.protocol, tickets: tls.postHandshakeBytes, echoed };
  } finally {
    clearTimeout(kill);
    try {
      server.kill("SIGKILL");
    } catch { /* already exited */ }
    await server.output().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("startClientTls() reads a TLS 1.3 server's session tickets before the caller's first write", async () => {
  const r = await handshake(1, "1.3");
  assert.equal(r.protocol, "TLSv1.3");
  assert.ok(r.tickets > 0, `post-handshake bytes before the first write: ${r.tickets}`);
  assert.equal(r.echoed, "echo:ping\n");
});

Deno.test("startClientTls() hands over a TLS 1.3 connection from a server that sends no tickets", async () => {
  const r = await handshake(0, "1.3");
  assert.equal(r.protocol, "TLSv1.3");
  assert.equal(r.tickets, 0);
  assert.equal(r.echoed, "echo:ping\n");
});

Deno.test("startClientTls() with a TLS 1.2 server works without waiting for post-handshake messages", async () => {
  const r = await handshake(2, "1.2");
  assert.equal(r.protocol, "TLSv1.2");
  assert.equal(r.echoed, "echo:ping\n");
});
