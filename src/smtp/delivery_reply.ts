/**
 * The 250 a discard, a quarantine or a redirect gives at end of data, shaped like the protected
 * server's own 250 for a delivered message, so that a sender cannot tell a filtered message from
 * a delivered one by the reply (issue 7: a spammer must not be able to probe the filter).
 *
 * Shape: the server's last 250 end-of-data reply (learnt in `ServerProfiles.delivered`), with
 * every queue-id-like run — 5 or more letters/digits containing a digit, e.g. Postfix's
 * "4Fh9kQ1z2Sz9vK" or "3A2F41C0E9", Exim's "1abcDE-000123-Ab" parts — replaced by a fresh random
 * run of the same length and alphabet (digits, upper hex, lower hex, upper or lower alnum, or mixed), so
 * two discards never show the same id. Words without digits ("Ok", "queued") stay. Before any
 * delivery to that server has been seen, Postfix's shape is used ("2.0.0 Ok: queued as" and 10
 * upper-hex digits), the most common MTA behind such a gateway.
 *
 * Trusts: the learnt text was sanitised by the relay client. Never used for anything but a 250.
 */
import type { SmtpReply } from "./reply.ts";

const UPPER_HEX = "0123456789ABCDEF";
const LOWER_HEX = "0123456789abcdef";
const DIGITS = "0123456789";
const UPPER_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyz";
const ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** A fresh 250 reply shaped like `shape` (the server's last delivery reply), or Postfix's. */
export function deliveryLikeReply(
  shape: SmtpReply | undefined,
  random: (n: number) => number = (n) => Math.floor(Math.random() * n),
): SmtpReply {
  if (!shape || shape.code !== 250 || shape.lines.length === 0) {
    return {
      code: 250,
      enhanced: "2.0.0",
      lines: [`Ok: queued as ${freshRun("3A2F41C0E9", random)}`],
    };
  }
  return {
    code: 250,
    enhanced: shape.enhanced,
    lines: shape.lines.map((l) => l.replace(/[A-Za-z0-9]{5,}/g, (run) => freshRun(run, random))),
  };
}

/** `run` unchanged when it has no digit; otherwise a random run of its length and alphabet. */
function freshRun(run: string, random: (n: number) => number): string {
  if (!/[0-9]/.test(run)) return run;
  const alphabet = /^[0-9]+$/.test(run)
    ? DIGITS
    : /^[0-9A-F]+$/.test(run)
    ? UPPER_HEX
    : /^[0-9a-f]+$/.test(run)
    ? LOWER_HEX
    : /^[0-9A-Z]+$/.test(run)
    ? UPPER_ALNUM
    : /^[0-9a-z]+$/.test(run)
    ? LOWER_ALNUM
    : ALNUM;
  let out = "";
  for (let i = 0; i < run.length; i++) out += alphabet[random(alphabet.length)];
  return out;
}
