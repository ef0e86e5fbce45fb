/**
 * The interop cases (issue 7's table), each runnable direct and through SSG by
 * `interop.ts`. Which aspects of which case are asserted is decided by `interop_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  BODY_MARK,
  deliverViaSender,
  type InteropCase,
  LATER_BOUNCE,
  type Outcome,
  rawDelivery,
  rawDialogue,
  type RawStep,
  SENDER_DOMAIN,
  SERVER_DOMAIN,
} from "./interop.ts";

const FROM = `a@${SENDER_DOMAIN}`;
const RCPT = `b@${SERVER_DOMAIN}`;

/** Plain mail from the sending Postfix to one server mailbox. */
export const plainDelivery: InteropCase = {
  name: "a plain message from the sending Postfix is delivered to the server's mailbox",
  direct: {
    name: "sent 2.0.0, one message stored, client 192.0.2.10",
    check(o) {
      assert.deepEqual(o.senderStatus, [`${RCPT} sent 2.0.0`]);
      assert.equal(o.stored?.length, 1);
      assert.deepEqual(o.serverClient, ["unknown[192.0.2.10]"]);
    },
  },
  run: (w) =>
    deliverViaSender(w, {
      from: FROM,
      rcpts: [RCPT],
      messageId: "plain@sender.test",
      subject: "plain delivery",
    }),
};

/** SMTPUTF8 (RFC 6531): UTF-8 local parts and a raw UTF-8 subject. */
export const smtputf8: InteropCase = {
  name: "mail to café@ and 한국@ (SMTPUTF8) is delivered with its UTF-8 envelope and header",
  direct: {
    name: "both UTF-8 recipients sent 2.0.0 and stored",
    check(o) {
      assert.deepEqual(o.senderStatus, [
        `café@${SERVER_DOMAIN} sent 2.0.0`,
        `한국@${SERVER_DOMAIN} sent 2.0.0`,
      ]);
      assert.equal(o.stored?.length, 2);
      assert.match(o.stored![0], /^Subject: Grüße — 안녕하세요$/m);
    },
  },
  run: (w) =>
    deliverViaSender(w, {
      from: FROM,
      rcpts: [`café@${SERVER_DOMAIN}`, `한국@${SERVER_DOMAIN}`],
      messageId: "utf8@sender.test",
      subject: "Grüße — 안녕하세요",
    }),
};

/** DSN NOTIFY=NEVER (RFC 3461 §4.1) and a bounce the server decides after accepting. */
export const dsnNotifyNever: InteropCase = {
  name: "DSN NOTIFY=NEVER: a recipient the server bounces after accepting yields no bounce",
  direct: {
    name: "the server bounces the recipient 5.2.2 and no notification comes back",
    check(o) {
      assert.deepEqual(o.senderStatus, [`${LATER_BOUNCE} sent 2.0.0`]);
      assert.deepEqual(o.serverStatus, [`${LATER_BOUNCE} bounced 5.2.2`]);
      assert.deepEqual(o.notifications, []);
    },
  },
  run: (w) =>
    deliverViaSender(w, {
      from: FROM,
      rcpts: [LATER_BOUNCE],
      messageId: "notify-never@sender.test",
      subject: "notify never",
      sendmailOpts: ["-N", "never"],
    }),
};

/** DSN RET=HDRS ENVID=… (RFC 3461 §4.3, §4.4) with a later bounce. */
export const dsnRetHdrsEnvid: InteropCase = {
  name: "DSN RET=HDRS ENVID=…: the later bounce returns headers only and keeps the envelope id",
  direct: {
    name: "the server's bounce returns headers only and carries the envelope id",
    check(o) {
      assert.deepEqual(o.serverStatus, [`${LATER_BOUNCE} bounced 5.2.2`]);
      assert.equal(o.notifications?.length, 1);
      assert.match(o.notifications![0], /from=MAILER-DAEMON@mx\.server\.test /);
      assert.match(o.notifications![0], /envid=interop-envid-42 /);
      assert.match(o.notifications![0], /returned=text\/rfc822-headers body-returned=no/);
    },
  },
  run: (w) =>
    deliverViaSender(w, {
      from: FROM,
      rcpts: [LATER_BOUNCE],
      messageId: "ret-hdrs@sender.test",
      subject: "ret hdrs",
      sendmailOpts: ["-N", "failure", "-R", "hdrs", "-V", "interop-envid-42"],
    }),
};

/** DSN NOTIFY=SUCCESS: the final server reports "delivered" (RFC 3461 §6.2.1 "relayed" when not). */
export const dsnNotifySuccess: InteropCase = {
  name: "DSN NOTIFY=SUCCESS: the success notice comes from the server and says delivered",
  direct: {
    name: "the server itself reports the delivery (action delivered)",
    check(o) {
      assert.equal(o.notifications?.length, 1);
      assert.match(o.notifications![0], /from=MAILER-DAEMON@mx\.server\.test /);
      assert.match(o.notifications![0], /action=delivered /);
    },
  },
  run: (w) =>
    deliverViaSender(w, {
      from: FROM,
      rcpts: [RCPT],
      messageId: "notify-success@sender.test",
      subject: "notify success",
      sendmailOpts: ["-N", "success", "-V", "interop-envid-7"],
    }),
};

/** The server trusts its own subnet (`mynetworks`): an outside client must still not relay. */
export const openRelay: InteropCase = {
  name:
    "a server whose mynetworks holds its own subnet still refuses to relay for an outside client",
  server: { mynetworks: "127.0.0.0/8 198.51.100.0/24" },
  direct: {
    name: "the sender is deferred with 4.7.1 (454 Relay access denied)",
    check(o) {
      assert.deepEqual(o.senderStatus, ["victim@elsewhere.example deferred 4.7.1"]);
      assert.deepEqual(o.stored, []);
    },
  },
  run: (w) =>
    deliverViaSender(w, {
      from: FROM,
      rcpts: ["victim@elsewhere.example"],
      messageId: "open-relay@sender.test",
      subject: "relay attempt",
    }),
};

/** The server refuses the client's address (`check_client_access`). */
export const clientAccessReject: InteropCase = {
  name: "a server that rejects the client's address with check_client_access rejects it",
  server: {
    smtpd_client_restrictions:
      "check_client_access inline:{ {192.0.2.10 = REJECT client refused by the interop test} }",
  },
  direct: {
    name: "the recipient bounces 5.7.1 at the sender and nothing is stored",
    check(o) {
      assert.deepEqual(o.senderStatus, [`${RCPT} bounced 5.7.1`]);
      assert.deepEqual(o.stored, []);
    },
  },
  run: (w) =>
    deliverViaSender(w, {
      from: FROM,
      rcpts: [RCPT],
      messageId: "client-reject@sender.test",
      subject: "client reject",
    }),
};

/** 26 MB: above SSG's default SIZE (25M), below the server's 30 MB. */
export const largerThanSsgSize: InteropCase = {
  name:
    "a 26 MB message (the server's SIZE 30 MB, SSG's max_message_bytes 40M) is delivered: SSG offers the server's SIZE",
  direct: {
    name: "sent 2.0.0 and stored whole",
    check(o) {
      assert.deepEqual(o.senderStatus, [`${RCPT} sent 2.0.0`]);
      assert.match(o.stored?.[0] ?? "", /^\[27\d{6} chars, sha256 /);
    },
  },
  run: (w) => {
    // Large mail is attachments: a short text and a base64 file, 26 MB on the wire.
    const line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0";
    const b64: string[] = [];
    const target = 26 * 1024 * 1024;
    for (let n = 0; n < target; n += line.length + 1) b64.push(line);
    const messageId = "large@sender.test";
    const text = [
      `From: <${FROM}>`,
      `To: <${RCPT}>`,
      `Subject: 26 MB`,
      `Date: Mon, 30 Nov 2026 10:00:00 +0000`,
      `Message-ID: <${messageId}>`,
      `MIME-Version: 1.0`,
      `Content-Type: multipart/mixed; boundary="big1"`,
      ``,
      `--big1`,
      `Content-Type: text/plain; charset=UTF-8`,
      ``,
      `The archive you asked for.`,
      BODY_MARK,
      `--big1`,
      `Content-Type: application/octet-stream; name="archive.bin"`,
      `Content-Transfer-Encoding: base64`,
      `Content-Disposition: attachment; filename="archive.bin"`,
      ``,
      ...b64,
      `--big1--`,
      ``,
    ].join("\n");
    return deliverViaSender(
      w,
      { from: FROM, rcpts: [RCPT], messageId, subject: "26 MB" },
      { body: text, timeoutMs: 120_000 },
    );
  },
};

const CRLF = "\r\n";

function rawMessageSteps(data: string[], extraLines: string[] = []): RawStep[] {
  return [
    { send: `EHLO client.example.org${CRLF}`, replies: 1 },
    { send: `MAIL FROM:<${FROM}>${CRLF}`, replies: 1 },
    { send: `RCPT TO:<${RCPT}>${CRLF}`, replies: 1 },
    ...data.map((d) => ({ send: d, replies: 1 })),
    ...extraLines.map((l) => ({ send: l, replies: 1 })),
    { send: `QUIT${CRLF}`, replies: 1 },
  ];
}

function rawHeader(messageId: string, subject: string): string {
  return [
    `From: <${FROM}>`,
    `To: <${RCPT}>`,
    `Subject: ${subject}`,
    `Date: Mon, 30 Nov 2026 10:00:00 +0000`,
    `Message-ID: <${messageId}>`,
    ``,
    ``,
  ].join(CRLF);
}

/** Lines of 997–1,000 characters (999–1,002 octets with CRLF; RFC 5321 §4.5.3.1.6 says 1,000). */
export const longLines: InteropCase = {
  name: "lines of 997 to 1,000 characters are accepted and stored as sent",
  direct: {
    name: "the server answers 250 at end of data and stores the lines",
    check(o) {
      assert.match(o.replies?.[4] ?? "", /^250 /);
      assert.equal(o.stored?.length, 1);
      assert.match(o.stored![0], /^L{1000}$/m);
    },
  },
  run: (w) => {
    const id = "long-lines@sender.test";
    const body = [997, 998, 999, 1000].map((n) => "L".repeat(n)).join(CRLF) + CRLF;
    return rawDelivery(
      w,
      rawMessageSteps([
        `DATA${CRLF}`,
        rawHeader(id, "long lines") + body + `.${CRLF}`,
      ]),
      id,
    );
  },
};

/** A bare LF inside a line of the body (not at the end of data). */
export const bareLf: InteropCase = {
  name: "a message with a bare-LF line ending in its body is answered as the server answers it",
  direct: {
    name: "Postfix 3.7 accepts it (smtpd_forbid_bare_newline=no) and stores both lines",
    check(o) {
      assert.match(o.replies?.[4] ?? "", /^250 /);
      assert.match(o.stored?.[0] ?? "", /^first line\nsecond line after a bare LF\n$/m);
    },
  },
  run: (w) => {
    const id = "bare-lf@sender.test";
    return rawDelivery(
      w,
      rawMessageSteps([
        `DATA${CRLF}`,
        rawHeader(id, "bare lf") + `first line\nsecond line after a bare LF${CRLF}.${CRLF}`,
      ]),
      id,
    );
  },
};

/** The greeting and the EHLO reply. */
export const bannerAndEhlo: InteropCase = {
  name: "the greeting and the EHLO reply name the server and list its extensions",
  direct: {
    name: "the server's own name and CHUNKING, DSN, SMTPUTF8, STARTTLS",
    check(o) {
      assert.match(o.greeting ?? "", /^220 mx\.server\.test /);
      for (const k of ["CHUNKING", "DSN", "SMTPUTF8", "STARTTLS"]) {
        assert.ok(o.ehloKeywords?.includes(k), k);
      }
    },
  },
  async run(w): Promise<Outcome> {
    const r = await rawDialogue(w, [
      { send: `EHLO client.example.org${CRLF}`, replies: 1 },
      { send: `QUIT${CRLF}`, replies: 1 },
    ]);
    const ehlo = r.steps[0][0].split("\n");
    return {
      greeting: r.greeting,
      ehloName: ehlo[0],
      ehloKeywords: ehlo.slice(1).map((l) => l.slice(4).split(" ")[0].toUpperCase()).sort(),
    };
  },
};

function bdatSteps(id: string): RawStep[] {
  const msg = rawHeader(id, "bdat") + "chunked body\r\nQUIT\r\nRSET\r\n";
  const half = Math.floor(msg.length / 2);
  const a = msg.slice(0, half);
  const b = msg.slice(half);
  return rawMessageSteps([
    `BDAT ${new TextEncoder().encode(a).length}${CRLF}${a}`,
    `BDAT ${new TextEncoder().encode(b).length} LAST${CRLF}${b}`,
  ]);
}

/** BDAT (RFC 3030) when the server offers CHUNKING. */
export const bdatOffered: InteropCase = {
  name:
    "BDAT in two chunks (a chunk holding QUIT/RSET lines) is delivered when CHUNKING is offered",
  direct: {
    name: "each chunk is answered 250 and the message is stored",
    check(o) {
      assert.match(o.replies?.[3] ?? "", /^250 /);
      assert.match(o.replies?.[4] ?? "", /^250 .*queued as/);
      assert.equal(o.stored?.length, 1);
    },
  },
  run: (w) => rawDelivery(w, bdatSteps("bdat-offered@sender.test"), "bdat-offered@sender.test"),
};

/** BDAT sent although the server does not offer CHUNKING (Postfix accepts it anyway). */
export const bdatNotOffered: InteropCase = {
  name: "BDAT sent without the CHUNKING offer is answered as the server answers it",
  server: { smtpd_discard_ehlo_keywords: "chunking" },
  direct: {
    name: "the server does not offer CHUNKING",
    check(o) {
      assert.doesNotMatch(o.replies?.[0] ?? "", /CHUNKING/);
    },
  },
  run: (w) => rawDelivery(w, bdatSteps("bdat-unoffered@sender.test"), "bdat-unoffered@sender.test"),
};
