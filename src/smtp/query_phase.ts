/**
 * The commands that ask the server something rather than move mail — VRFY, EXPN, HELP, ETRN —
 * answered with the protected server's own replies when SSG mirrors it (issue 7: a direct
 * connection would get exactly those), over the session's relay connection.
 *
 * Trusts: the client's argument only as `parseCommandLine` left it (no control characters,
 * bounded by `maxCommandLine`, UTF-8 only under SMTPUTF8); the server's reply only through
 * `RelayClient` (code checked, text sanitised) and `relayedReply`. Limits: the relay's reply
 * timeout. A server that is unreachable gets the client 451 4.4.1 (nothing is guessed); a
 * 421 from the server ends the session as everywhere else; a 1xx/3xx is not a valid answer here:
 * the relay connection is dropped and the client gets 421.
 */
import { RelayError } from "./relay_client.ts";
import type { SmtpReply } from "./reply.ts";
import { relayedReply, type SessionCore } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";

/** Asks the server `verb arg` and passes its reply on. */
export async function askServer(
  core: SessionCore,
  link: ServerLink,
  verb: "VRFY" | "EXPN" | "HELP" | "ETRN",
  arg: string,
): Promise<void> {
  const relay = await link.open();
  if (!relay) return;
  let r: SmtpReply;
  try {
    r = await relay.command(arg === "" ? verb : `${verb} ${arg}`);
  } catch (e) {
    return link.lost(e, verb.toLowerCase());
  }
  if (link.closing(r)) return core.send(relayedReply(r, "4.4.2"));
  if (r.code < 200 || (r.code >= 300 && r.code < 400)) {
    return link.lost(
      new RelayError("protocol", `Server answered ${verb} with ${r.code}`),
      verb.toLowerCase(),
    );
  }
  const out = relayedReply(r, `${String(r.code)[0]}.0.0`);
  if (r.code >= 500) return core.fail(out, `server-refused-${verb.toLowerCase()}`);
  core.send(out);
}
