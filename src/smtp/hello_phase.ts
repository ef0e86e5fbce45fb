/**
 * The greeting and HELO/EHLO phase: the 220 banner (after the pregreet test) and the EHLO
 * reply with the extensions the responder offers.
 *
 * Mirroring (when the session has `SessionContext.profiles`): the client is offered what the
 * protected server offers AND SSG carries, nothing more (issue 7) — the server's own greeting
 * and host name (`smtp.bannerHostname: server`, the default; "gateway" keeps
 * `gateway.hostname`), its keywords in its own order, each kept only when SSG implements it
 * (`MIRRORED`), SIZE lowered to SSG's own `maxMessageBytes` when the server's is larger (or
 * absent/0: then SSG's limit is the only one), STARTTLS whenever SSG has a certificate (that
 * leg is SSG's own), AUTH only to a client whose leg is as protected as SSG's leg to the server
 * (`auth_phase.ts`), and ENHANCEDSTATUSCODES only when the server has it (otherwise our replies
 * drop their enhanced codes, see `SessionCore.enhancedCodes`).
 *
 * First contact: the greeting must name the server before SSG has ever spoken to it. SSG then
 * connects to the server BEFORE greeting the client, as a before-queue proxy does (Postfix's
 * smtpd_proxy_filter and Exim's cutthrough open the next hop early too). It costs one relay
 * connection per session on first contact and after the profile's TTL (`smtp.server_profile_ttl`),
 * and that connection is kept for the session's first MAIL. The whole first contact (TCP,
 * greeting, EHLO, STARTTLS) is bounded by the relay's connect timeout (`relay.connect_timeout`,
 * default 30 s, well inside a client's 5-minute wait for a greeting, RFC 5321 §4.5.3.2.1). When the server cannot be reached the client gets 421 4.4.1 at once,
 * like a down server (it retries later; nothing was accepted); when the server greets with
 * 4xx/5xx the client gets that code and text. Alternatives rejected: greeting with SSG's own name
 * first (the client would see two different names for the same server) and guessing capabilities
 * (an extension offered and then missing upstream means mail refused that the server would take).
 * With a fresh profile the greeting is immediate and the relay connects at MAIL, as before.
 *
 * Trusts: nothing from the client; the HELO/EHLO argument is checked by `parseHeloArg`. The
 * server's greeting and EHLO text are sanitised by the relay client; its keywords are only
 * compared against `MIRRORED`. Limits: a client that talks before the greeting gets 554 5.5.0
 * and is closed (postscreen's pregreet test). EHLO/HELO resets the transaction like RSET
 * (RFC 5321 §4.1.4). No enhanced codes on the greeting and EHLO/HELO replies (RFC 2034 §3).
 */
import { parseHeloArg } from "./command.ts";
import { raceDeadline, secondsToMs } from "./deadline.ts";
import { RelayError } from "./relay_client.ts";
import { reply, sanitizeText } from "./reply.ts";
import type { SessionCore } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";
import type { ServerProfile } from "./server_profiles.ts";

/** The server keywords SSG can carry end to end (mirrored only when the server has them). */
export const MIRRORED: ReadonlySet<string> = new Set([
  "PIPELINING",
  "SIZE",
  "8BITMIME",
  "ENHANCEDSTATUSCODES",
  "SMTPUTF8",
  "DSN",
  "CHUNKING",
  "AUTH",
  "VRFY",
  "ETRN",
]);

/** Learns the server (first contact), waits for an early talker, then greets (or ends). */
export async function greet(core: SessionCore, link: ServerLink): Promise<void> {
  const ctx = core.ctx;
  if (ctx.shutdown.aborted) return core.shutdownNow();
  if (ctx.profiles && !(await knowServer(core, link))) return;
  const early = await core.reader.waitForData(ctx.pregreetMs ?? 0, ctx.shutdown);
  if (early === "aborted") return core.shutdownNow();
  if (early === "eof") {
    core.end = "client-closed";
    return;
  }
  if (early === "data") {
    ctx.log.event("smtp.reject", { session: ctx.id, reason: "early-talker", code: 554 });
    core.send(reply(554, "5.5.0", `${core.name} Error: talked before the greeting`));
    core.end = "early-talker";
    return;
  }
  const p = core.profile;
  if (p && mirrorName(core) && p.greeting.length > 0) {
    core.send({ code: 220, lines: p.greeting.map(sanitizeText) });
  } else {
    core.send({ code: 220, lines: [`${core.name} ESMTP`] });
  }
  await core.flush();
}

function mirrorName(core: SessionCore): boolean {
  return (core.ctx.smtp.bannerHostname ?? "server") === "server";
}

/**
 * Finds the server's profile, connecting first when it is unknown or stale; false when the
 * session already ended (server unreachable or refusing: the client got its reply).
 */
async function knowServer(core: SessionCore, link: ServerLink): Promise<boolean> {
  const ctx = core.ctx;
  let p = ctx.profiles!.get(ctx.server);
  if (!p) {
    try {
      // The whole first contact (TCP, greeting, EHLO, STARTTLS) within the relay's connect
      // timeout: the client is waiting for its greeting meanwhile.
      const ms = secondsToMs(ctx.relay.connectTimeout);
      const attempt = link.connect().then(() => undefined, (e: unknown) => e ?? "failed");
      const r = await raceDeadline(attempt, ms);
      if (!r.ok) {
        // Too slow: a connection that completes later is closed, never used.
        attempt.then(() => link.drop());
        throw new RelayError("timeout", `Server did not greet and answer EHLO within ${ms} ms`);
      }
      if (r.value !== undefined) throw r.value;
    } catch (e) {
      link.error(e, "connect-before-greeting");
      const r = e instanceof RelayError ? e.reply : undefined;
      if (r && r.code >= 400 && r.code <= 599 && e instanceof RelayError) {
        // The server itself refused the session: the client hears the server's own refusal.
        core.send({
          code: r.code,
          enhanced: r.enhanced,
          lines: r.lines.map(sanitizeText),
          serverEnhanced: r.enhanced !== undefined,
        });
      } else {
        core.send({
          code: 421,
          lines: [`${core.name} Service not available, try again later`],
        });
      }
      core.end = "relay-lost";
      return false;
    }
    p = ctx.profiles!.get(ctx.server);
  }
  if (p) adopt(core, p);
  return true;
}

/** Takes the server's name and reply format for this session. */
function adopt(core: SessionCore, p: ServerProfile): void {
  core.profile = p;
  core.enhancedCodes = p.extensions.has("ENHANCEDSTATUSCODES");
  if (mirrorName(core)) {
    const name = p.ehloName || (p.greeting[0] ?? "").split(" ")[0];
    if (name) core.name = sanitizeText(name);
  }
}

/** The EHLO keywords offered to the client, in order (after the host name line). */
export function ehloKeywords(core: SessionCore): string[] {
  const smtp = core.ctx.smtp;
  const p = core.profile;
  if (!p) {
    const lines: string[] = [];
    if (smtp.pipelining) lines.push("PIPELINING");
    lines.push(`SIZE ${smtp.maxMessageBytes}`, "8BITMIME", "ENHANCEDSTATUSCODES");
    if (smtp.tls && !core.tls) lines.push("STARTTLS");
    return lines;
  }
  const lines: string[] = [];
  let sawSize = false;
  let sawTls = false;
  // A plaintext client sees what the server offers in plaintext (its order, STARTTLS where the
  // server puts it); after STARTTLS, what the server offers under TLS.
  const ext = !core.tls && p.plainExtensions ? p.plainExtensions : p.extensions;
  for (const [kw, param] of ext) {
    if (kw === "STARTTLS") {
      sawTls = true;
      if (smtp.tls && !core.tls) lines.push("STARTTLS");
      continue;
    }
    if (!MIRRORED.has(kw)) continue;
    if (kw === "PIPELINING" && !smtp.pipelining) continue;
    // AUTH learnt under TLS is not offered to a plaintext client (see auth_phase.ts).
    if (kw === "AUTH" && ext === p.extensions && p.tls && !core.tls) continue;
    if (kw === "SIZE") {
      sawSize = true;
      lines.push(`SIZE ${offeredSize(param, smtp.maxMessageBytes)}`);
      continue;
    }
    lines.push(param ? `${kw} ${param}` : kw);
  }
  // SSG's own limit is real even when the server states none.
  if (!sawSize) lines.push(`SIZE ${smtp.maxMessageBytes}`);
  if (!sawTls && smtp.tls && !core.tls) lines.push("STARTTLS");
  return lines;
}

/** SIZE to offer: the server's limit, never above SSG's own (0 or absent: SSG's). */
export function offeredSize(serverParam: string, ours: number): number {
  const n = /^\d{1,15}$/.test(serverParam.trim()) ? Number(serverParam.trim()) : 0;
  return n > 0 ? Math.min(n, ours) : ours;
}

/** HELO ("SMTP") or EHLO ("ESMTP"): checks the name, resets the transaction, answers. */
export async function hello(
  core: SessionCore,
  link: ServerLink,
  arg: string,
  protocol: "ESMTP" | "SMTP",
): Promise<void> {
  const parsed = parseHeloArg(arg);
  if (!parsed.ok) {
    const text = protocol === "ESMTP" ? "Syntax: EHLO hostname" : "Syntax: HELO hostname";
    return core.fail({ code: 501, lines: [text] }, parsed.reason);
  }
  // RFC 5321 §4.1.4: EHLO/HELO resets the transaction like RSET.
  core.tx = undefined;
  core.bdatSkipping = false;
  await link.reset();
  core.helo = parsed.value;
  core.protocol = protocol;
  core.ctx.prefetch?.({ helo: parsed.value });
  if (protocol === "SMTP") {
    core.offered = new Set();
    return core.send({ code: 250, lines: [core.name] });
  }
  const keywords = ehloKeywords(core);
  core.offered = new Set(keywords.map((k) => k.split(" ")[0]));
  core.send({ code: 250, lines: [core.name, ...keywords] });
}
