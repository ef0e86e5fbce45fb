/**
 * SMTPUTF8 (RFC 6531) and DSN (RFC 3461) through the session: offered only when the mirrored
 * server has them, parameters validated and relayed verbatim, UTF-8 addresses end to end, the
 * Received header's "with UTF8SMTP". Transcripts against fake servers.
 */
import assert from "node:assert/strict";
import { parseMailArg, parseRcptArg } from "../../src/smtp/command.ts";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { bytes, FAKE_EHLO, transcript } from "./harness.ts";

const MSG = "Subject: hi\r\n\r\nbody\r\n";
const FULL_EHLO = "250-server.example\r\n250-PIPELINING\r\n250-SIZE 50000000\r\n250-8BITMIME\r\n" +
  "250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 SMTPUTF8\r\n";
const utf8 = (s: string) => new TextEncoder().encode(s);
/** The latin1 view of a string's UTF-8 bytes (how the fake server records it). */
const wire = (s: string) => String.fromCharCode(...utf8(s));

Deno.test("SMTPUTF8: offered when the server has it; UTF-8 addresses reach the server and the judge unchanged; Received says UTF8SMTP", async () => {
  const r = await transcript(
    [
      "EHLO client.example\r\n",
      utf8("MAIL FROM:<café@exämple.org> SMTPUTF8\r\nRCPT TO:<한국@example.net>\r\nDATA\r\n"),
      MSG + ".\r\nQUIT\r\n",
    ],
    { profiles: new ServerProfiles(), upstream: { ehlo: FULL_EHLO } },
  );
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  assert.match(r.output, /\r\n250-DSN\r\n250 SMTPUTF8\r\n/);
  const s = r.servers[0];
  assert.ok(
    s.commands.includes(wire("MAIL FROM:<café@exämple.org> SMTPUTF8")),
    s.commands.join("|"),
  );
  assert.ok(s.commands.includes(wire("RCPT TO:<한국@example.net>")));
  assert.equal(r.judge.calls[0].envelope.mailFrom, "café@exämple.org");
  assert.deepEqual(r.judge.calls[0].envelope.rcptTo, ["한국@example.net"]);
  assert.match(s.messages[0].content, /with UTF8SMTP id S1\.1\r\n/);
  assert.ok(s.messages[0].content.includes(wire("for <한국@example.net>;")));
});

Deno.test("SMTPUTF8: a UTF-8 address without the SMTPUTF8 parameter is refused 553 5.6.7, nothing relayed", async () => {
  const r = await transcript(
    [
      "EHLO client.example\r\n",
      utf8(
        "MAIL FROM:<café@example.org>\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<é@example.net>\r\n",
      ),
      "QUIT\r\n",
    ],
    { profiles: new ServerProfiles(), upstream: { ehlo: FULL_EHLO } },
  );
  assert.deepEqual(r.codes, [250, 553, 250, 553, 221]);
  assert.match(r.output, /553 5\.6\.7 Must declare SMTPUTF8 to send unicode address\r\n/);
  assert.ok(!r.servers[0].raw.includes(wire("é")));
});

Deno.test("SMTPUTF8: not offered when the server lacks it — 8-bit command 500 5.5.2, the parameter 555", async () => {
  const r = await transcript(
    [
      "EHLO client.example\r\n",
      utf8("MAIL FROM:<café@example.org> SMTPUTF8\r\n"),
      "MAIL FROM:<a@example.org> SMTPUTF8\r\nQUIT\r\n",
    ],
    { profiles: new ServerProfiles(), upstream: { ehlo: FAKE_EHLO } },
  );
  assert.doesNotMatch(r.output, /250[- ]SMTPUTF8/);
  assert.deepEqual(r.codes, [250, 500, 555, 221]);
});

Deno.test("SMTPUTF8: invalid UTF-8 and C1 controls in a command are refused 500 5.5.2", async () => {
  const r = await transcript(
    [
      "EHLO client.example\r\n",
      bytes("MAIL FROM:<caf\xe9@example.org> SMTPUTF8\r\n"),
      utf8("MAIL FROM:<a\u0085b@example.org> SMTPUTF8\r\n"),
      "QUIT\r\n",
    ],
    { profiles: new ServerProfiles(), upstream: { ehlo: FULL_EHLO } },
  );
  assert.deepEqual(r.codes, [250, 500, 500, 221]);
  assert.match(r.output, /500 5\.5\.2 Syntax error: invalid UTF-8 in command\r\n/);
});

Deno.test("DSN: RET, ENVID, NOTIFY and ORCPT are relayed to the server verbatim", async () => {
  const r = await transcript(
    "EHLO client.example\r\nMAIL FROM:<a@example.org> RET=HDRS ENVID=QQ314159+2B1\r\n" +
      "RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.net\r\n" +
      "RCPT TO:<carol@example.net> NOTIFY=NEVER\r\nDATA\r\n" + MSG + ".\r\nQUIT\r\n",
    { profiles: new ServerProfiles(), upstream: { ehlo: FULL_EHLO } },
  );
  assert.deepEqual(r.codes, [250, 250, 250, 250, 354, 250, 221]);
  const c = r.servers[0].commands;
  assert.ok(c.includes("MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ314159+2B1"), c.join("|"));
  assert.ok(
    c.includes("RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.net"),
  );
  assert.ok(c.includes("RCPT TO:<carol@example.net> NOTIFY=NEVER"));
});

Deno.test("DSN: never invented — a client that asks for nothing sends nothing", async () => {
  const r = await transcript(
    "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nQUIT\r\n",
    { profiles: new ServerProfiles(), upstream: { ehlo: FULL_EHLO } },
  );
  assert.ok(r.servers[0].commands.includes("MAIL FROM:<a@example.org>"));
  assert.ok(r.servers[0].commands.includes("RCPT TO:<bob@example.net>"));
});

Deno.test("DSN: bad syntax is 501 5.5.4 (xtext with control characters, NEVER mixed, ORCPT without a type)", async () => {
  const r = await transcript(
    "EHLO client.example\r\nMAIL FROM:<a@example.org> ENVID=ab+0D+0Acd\r\n" +
      "MAIL FROM:<a@example.org> RET=ALL\r\nMAIL FROM:<a@example.org>\r\n" +
      "RCPT TO:<b@example.net> NOTIFY=NEVER,SUCCESS\r\nRCPT TO:<b@example.net> ORCPT=b@example.net\r\n" +
      "RCPT TO:<b@example.net> ORCPT=rfc822;b+4\r\nQUIT\r\n",
    { profiles: new ServerProfiles(), upstream: { ehlo: FULL_EHLO } },
  );
  assert.deepEqual(r.codes, [250, 501, 501, 250, 501, 501, 501, 221]);
  assert.ok(!r.servers[0].raw.includes("ENVID"));
  assert.ok(!r.servers[0].raw.includes("NOTIFY"));
});

Deno.test("DSN: not offered when the server lacks it; the parameters get 555 5.5.4", async () => {
  const r = await transcript(
    "EHLO client.example\r\nMAIL FROM:<a@example.org> RET=FULL\r\nMAIL FROM:<a@example.org>\r\n" +
      "RCPT TO:<b@example.net> NOTIFY=NEVER\r\nQUIT\r\n",
    { profiles: new ServerProfiles(), upstream: { ehlo: FAKE_EHLO } },
  );
  assert.doesNotMatch(r.output, /250[- ]DSN/);
  assert.deepEqual(r.codes, [250, 555, 250, 555, 221]);
});

Deno.test("DSN: a cached profile offers DSN but the live server lost it — 555, the request is not dropped silently", async () => {
  const profiles = new ServerProfiles();
  await transcript("QUIT\r\n", { profiles, upstream: { ehlo: FULL_EHLO } });
  const r = await transcript(
    "EHLO client.example\r\nMAIL FROM:<a@example.org> RET=HDRS\r\nQUIT\r\n",
    { profiles, upstream: { ehlo: FAKE_EHLO } },
  );
  assert.match(r.output, /250-DSN\r\n/);
  assert.deepEqual(r.codes, [250, 555, 221]);
  assert.match(r.output, /555 5\.5\.4 Unsupported option: DSN\r\n/);
  assert.ok(!r.servers[0].raw.includes("MAIL FROM"));
});

Deno.test("ENVID at 100 characters is accepted, at 101 refused; ORCPT at 500 accepted, at 501 refused", () => {
  const offer = { dsn: true };
  const envid = (n: number) => parseMailArg(`FROM:<a@example.org> ENVID=${"x".repeat(n)}`, offer);
  assert.equal(envid(99).ok, true);
  assert.equal(envid(100).ok, true);
  assert.equal(envid(101).ok, false);
  const orcpt = (n: number) =>
    parseRcptArg(`TO:<b@example.net> ORCPT=rfc822;${"y".repeat(n - 7)}`, offer);
  assert.equal(orcpt(499).ok, true);
  assert.equal(orcpt(500).ok, true);
  assert.equal(orcpt(501).ok, false);
});
