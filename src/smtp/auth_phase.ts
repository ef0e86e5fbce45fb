/**
 * AUTH (RFC 4954) relayed to the protected server: when the mirrored server offers AUTH, the
 * client's SASL exchange is passed through, line by line, over the session's relay connection,
 * so the server itself authenticates the client (and then applies its own rules to it, e.g.
 * relaying for authenticated users). SSG never stores a credential: the exchange lives only in
 * the lines passed through; the log gets the mechanism, the outcome and the user name only.
 *
 * Offered (see `hello_phase.ts`) only when the server has AUTH AND the client's leg is at least
 * as protected as the leg on which SSG learnt it: a server that offers AUTH only under TLS (as
 * Postfix with smtpd_tls_auth_only) is not offered to a plaintext client, or SSG would make the
 * client send its password in the clear on the outside link.
 *
 * Trusts: nothing from the client — each response line must be base64 or "*" (RFC 4954 §4),
 * bounded by `MAX_AUTH_LINE`, within the command timeout and the session deadline; anything else
 * cancels the exchange upstream ("*") and gets 501 5.5.2. The server's replies pass through
 * `RelayClient` (codes checked, text sanitised). Limits: AUTH inside a transaction, twice, or
 * when not offered: 503 5.5.1 (Postfix's answers). A failed AUTH counts as a client error.
 */
import { secondsToMs } from "./deadline.ts";
import { RelayError } from "./relay_client.ts";
import { reply, type SmtpReply } from "./reply.ts";
import { relayedReply, type SessionCore } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";

/** Longest client response line in an AUTH exchange, CRLF included (Postfix reads 12 KiB). */
export const MAX_AUTH_LINE = 12288;
/** Most challenge/response rounds before the exchange is cut (no mechanism needs more). */
export const MAX_AUTH_ROUNDS = 10;

const latin1 = new TextDecoder("latin1");

/** AUTH mechanism [initial-response]. */
export async function auth(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  const ctx = core.ctx;
  if (!core.offered.has("AUTH")) {
    return core.fail(reply(503, "5.5.1", "Error: authentication not enabled"), "auth-not-offered");
  }
  if (core.authenticated !== undefined) {
    return core.fail(reply(503, "5.5.1", "Error: already authenticated"), "auth-twice");
  }
  if (core.tx) {
    return core.fail(
      reply(503, "5.5.1", "Error: MAIL transaction in progress"),
      "auth-in-transaction",
    );
  }
  const m = /^([A-Za-z0-9_-]{1,20})(?: ([A-Za-z0-9+/]*={0,2}|=))?$/.exec(arg);
  if (!m) return core.fail(reply(501, "5.5.4", "Syntax: AUTH mechanism"), "auth-syntax");
  const mechanism = m[1].toUpperCase();
  const responses: string[] = m[2] !== undefined ? [m[2]] : [];
  const relay = await link.open();
  if (!relay) return;
  let r: SmtpReply;
  try {
    r = await relay.command(m[2] !== undefined ? `AUTH ${mechanism} ${m[2]}` : `AUTH ${mechanism}`);
    let challenges: string[] = [];
    for (let round = 0; r.code === 334; round++) {
      challenges.push(r.lines[0] ?? "");
      if (round >= MAX_AUTH_ROUNDS) {
        r = await relay.command("*");
        break;
      }
      core.send({ code: 334, lines: [r.lines[0] ?? ""] });
      if (!(await core.flush())) return;
      const line = await readResponse(core);
      if (line === undefined) {
        // The client went away or timed out: cancel upstream so no half-open exchange remains.
        link.drop();
        return;
      }
      if (line !== "*" && !/^[A-Za-z0-9+/]*={0,2}$/.test(line)) {
        await relay.command("*");
        return core.fail(reply(501, "5.5.2", "Cannot decode response"), "auth-bad-base64");
      }
      responses.push(line);
      r = await relay.command(line);
      challenges = challenges.slice(-1);
    }
  } catch (e) {
    return link.lost(e, "auth");
  }
  if (link.closing(r)) return core.send(relayedReply(r, "4.4.2"));
  if (r.code < 200 || r.code >= 600 || (r.code >= 300 && r.code < 400)) {
    return link.lost(new RelayError("protocol", `Server answered AUTH with ${r.code}`), "auth");
  }
  const user = userName(mechanism, responses);
  const ok = r.code === 235;
  ctx.log.event("smtp.auth", {
    session: ctx.id,
    mechanism,
    outcome: ok ? "success" : "failure",
    code: r.code,
    user,
  }, ok ? "info" : "warning");
  const out = relayedReply(r, ok ? "2.7.0" : `${String(r.code)[0]}.7.8`);
  if (!ok) return core.fail(out, "auth-failed");
  core.authenticated = user ?? "";
  core.send(out);
}

/** Reads one client response line (never a command); undefined when the session ends. */
async function readResponse(core: SessionCore): Promise<string | undefined> {
  const ctx = core.ctx;
  const left = core.deadline - performance.now();
  const ms = Math.max(0, Math.min(secondsToMs(ctx.smtp.timeouts.command), left));
  const r = await core.reader.readLine(MAX_AUTH_LINE, ms, ctx.shutdown);
  switch (r.kind) {
    case "line":
      return latin1.decode(r.line);
    case "timeout":
      core.timeout(ms < left ? "command" : "session");
      return undefined;
    case "aborted":
      core.shutdownNow();
      return undefined;
    case "eof":
      core.end = "client-closed";
      return undefined;
    default:
      core.send(reply(421, "4.7.0", `${core.name} Error: line too long, closing`));
      core.end = "flood";
      return undefined;
  }
}

/**
 * The user name, for the log only: PLAIN's authentication identity (RFC 4616), LOGIN's first
 * response; undefined for other mechanisms or undecodable input. Never the password.
 */
export function userName(mechanism: string, responses: readonly string[]): string | undefined {
  const first = responses[0];
  if (first === undefined || first === "=" || first === "*") return undefined;
  let text: string;
  try {
    text = latin1.decode(Uint8Array.from(atob(first), (c) => c.charCodeAt(0)));
  } catch {
    return undefined;
  }
  let name: string | undefined;
  if (mechanism === "PLAIN") name = text.split("\0")[1];
  else if (mechanism === "LOGIN") name = text;
  if (name === undefined) return undefined;
  return name.replace(/[^\x20-\x7e]/g, "?").slice(0, 256);
}
