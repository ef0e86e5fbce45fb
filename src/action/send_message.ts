/**
 * One complete SMTP transaction from SSG itself — for `bcc`/`redirect` deliveries, quarantine
 * release and admin alerts: connect, EHLO, MAIL, every RCPT, DATA, QUIT.
 *
 * Reuses the session's relay client (`src/smtp/relay_client.ts`): its bounds (connect, reply and
 * final-reply timeouts from `RelayConfig`, reply line and count limits, sanitised reply text) and
 * its dot-stuffing are exactly what an outbound delivery needs, so no second SMTP client exists.
 *
 * All or nothing: when any recipient is refused the transaction is reset and the refusal is the
 * result, so that a caller that retries (the client after a 4xx, the admin re-running release)
 * never delivers twice to the recipients that did accept, and a partial delivery is never
 * mistaken for success. Never throws: network failures become a local 451 result.
 *
 * Security: envelope addresses are checked for characters that could end or extend an SMTP
 * command line (control characters, space, angle brackets) before anything is sent.
 */
import type { RelayConfig } from "../config/config.ts";
import { RelayClient, RelayError } from "../smtp/relay_client.ts";
import type { SmtpReply } from "../smtp/reply.ts";
import type { SessionIo } from "../smtp/session_io.ts";

/** Opens a TCP connection (main passes a `Deno.connect` wrapper; tests pass a local server's). */
export type Connect = (
  server: { ip: string; port: number },
  timeoutMs: number,
) => Promise<SessionIo>;

/** A `Connect` over `Deno.connect` (the connect timeout is enforced by the relay client). */
export const denoConnect: Connect = (server): Promise<Deno.TcpConn> =>
  Deno.connect({ hostname: server.ip, port: server.port });

/** Where and how to send. */
export interface SendOptions {
  /** The SMTP server (host name or address) and port. */
  server: { host: string; port: number };
  /** Our name for EHLO. */
  hostname: string;
  /** Opens the connection. */
  connect: Connect;
  /** Timeouts. */
  relay: RelayConfig;
}

/** The envelope of an outbound transaction ("" is the null reverse-path). */
export interface SendEnvelope {
  /** Reverse-path without angle brackets; "" for the null sender. */
  mailFrom: string;
  /** Forward-paths (at least one, none empty). */
  rcptTo: string[];
}

/** Where an outbound transaction ended. */
export type SendStage = "envelope" | "connect" | "mail" | "rcpt" | "data" | "done";

/** The result: the reply that decided it, and where. */
export interface SendResult {
  /** 250 when the server accepted the message for every recipient. */
  code: number;
  /** Enhanced status code, when the server (or we) gave one. */
  enhanced?: string;
  /** Reply text (sanitised), lines joined with " ". */
  text: string;
  /** Where the transaction ended. */
  stage: SendStage;
}

// Security: a reverse-/forward-path must stay inside "<...>" on one command line.
// deno-lint-ignore no-control-regex
const BAD_ADDRESS_RE = /[\x00-\x20<>\x7f]/;

/** Whether `address` can be put in MAIL FROM:<...> / RCPT TO:<...> (RFC 5321 §4.1.2). */
export function isSendableAddress(address: string): boolean {
  return address.length <= 256 && !BAD_ADDRESS_RE.test(address);
}

/** Sends `message` (canonical CRLF text, not dot-stuffed) in one transaction. Never throws. */
export async function sendMessage(
  opts: SendOptions,
  envelope: SendEnvelope,
  message: Uint8Array,
): Promise<SendResult> {
  // RCPT TO:<> does not exist (RFC 5321 §4.1.1.3); only the reverse-path may be null.
  const bad = [envelope.mailFrom, ...envelope.rcptTo].find((a, i) =>
    !isSendableAddress(a) || (i > 0 && a === "")
  );
  if (bad !== undefined || envelope.rcptTo.length === 0) {
    return {
      code: 501,
      enhanced: "5.1.3",
      text: envelope.rcptTo.length === 0 ? "No recipients" : "Invalid address in envelope",
      stage: "envelope",
    };
  }
  let client: RelayClient;
  try {
    client = await RelayClient.open({
      server: { ip: opts.server.host, port: opts.server.port },
      hostname: opts.hostname,
      connect: opts.connect,
      config: opts.relay,
    });
  } catch (e) {
    return failure(e, "connect");
  }
  let stage: SendStage = "mail";
  try {
    const eightBit = message.some((b) => b >= 0x80);
    const mail = await client.mail(envelope.mailFrom, {
      size: message.length,
      body: eightBit ? "8BITMIME" : undefined,
    });
    if (mail.code !== 250) return await finish(client, mail, "mail");
    stage = "rcpt";
    for (const rcpt of envelope.rcptTo) {
      const r = await client.rcpt(rcpt);
      if (r.code !== 250 && r.code !== 251) return await finish(client, r, "rcpt");
    }
    stage = "data";
    const data = await client.data(message);
    await client.quit();
    return result(data, data.code === 250 ? "done" : "data");
  } catch (e) {
    client.close();
    return failure(e, stage);
  }
}

/** Resets the refused transaction, says QUIT, and returns the refusal. */
async function finish(
  client: RelayClient,
  reply: SmtpReply,
  stage: SendStage,
): Promise<SendResult> {
  try {
    await client.rset();
  } catch { /* closing anyway */ }
  await client.quit();
  return result(reply, stage);
}

function result(reply: SmtpReply, stage: SendStage): SendResult {
  return { code: reply.code, enhanced: reply.enhanced, text: reply.lines.join(" "), stage };
}

/** A local temporary failure (RFC 3463 4.4.1 no answer / 4.4.2 bad connection). */
function failure(e: unknown, stage: SendStage): SendResult {
  if (e instanceof RelayError && e.kind === "refused" && e.reply) return result(e.reply, stage);
  const kind = e instanceof RelayError ? e.kind : "closed";
  const message = e instanceof Error ? e.message : String(e);
  return {
    code: 451,
    enhanced: kind === "connect" ? "4.4.1" : "4.4.2",
    text: message.replace(/[^\x20-\x7e]/g, "?").slice(0, 200),
    stage,
  };
}
