/**
 * The before-queue relay seen from the client: the server's own answers, 4xx whenever the server
 * cannot be trusted to have the message, and the verdicts' effects on what the server receives.
 */
import assert from "node:assert/strict";
import {
  envelope,
  hangingUpstream,
  receivedFor,
  recordingJudge,
  refusedUpstream,
  transcript,
} from "./harness.ts";

const MSG = "Subject: s\r\n\r\nbody\r\n";
const FULL = envelope() + MSG + ".\r\nQUIT\r\n";

Deno.test("A recipient the server refuses is refused to the client with the server's code and text", async () => {
  const r = await transcript(
    envelope("a@example.org", ["nobody@example.net", "bob@example.net"]) + MSG + ".\r\nQUIT\r\n",
    {
      upstream: {
        rcpt: (arg) =>
          arg.includes("nobody")
            ? "550 5.1.1 <nobody@example.net>: Recipient address rejected"
            : "250 2.1.5 Ok",
      },
    },
  );
  assert.deepEqual(r.codes, [250, 250, 550, 250, 354, 250, 221]);
  assert.match(r.output, /\r\n550 5\.1\.1 <nobody@example\.net>: Recipient address rejected\r\n/);
  const m = r.servers[0].messages[0];
  assert.deepEqual(m.rcpts, ["bob@example.net"]);
  assert.deepEqual(r.judge.calls[0].envelope.rcptTo, ["bob@example.net"]);
  assert.equal(m.content, receivedFor("bob@example.net") + MSG);
});

Deno.test("A temporary recipient failure (450) is passed on as is", async () => {
  const r = await transcript(envelope() + "QUIT\r\n", {
    upstream: { rcpt: () => "450 4.2.0 <bob@example.net>: Recipient address rejected: Greylisted" },
  });
  assert.deepEqual(r.codes, [250, 250, 450, 554, 221]);
  assert.match(
    r.output,
    /450 4\.2\.0 <bob@example\.net>: Recipient address rejected: Greylisted\r\n/,
  );
});

Deno.test("Multi-line server replies are relayed line by line, sanitised, with enhanced codes", async () => {
  const r = await transcript(envelope() + "QUIT\r\n", {
    upstream: {
      mail: () => "250-2.1.0 first\r\n250-second \x1b[1m\r\n250 third",
      rcpt: () => "550 no such user here",
    },
  });
  assert.match(r.output, /250-2\.1\.0 first\r\n250-2\.1\.0 second \?\[1m\r\n250 2\.1\.0 third\r\n/);
  // No enhanced code from the server: we add one of the reply's class.
  assert.match(r.output, /550 5\.0\.0 no such user here\r\n/);
});

Deno.test("The server down: MAIL gets 451 4.4.1, nothing is accepted, the session goes on", async () => {
  const r = await transcript(FULL, { connect: refusedUpstream() });
  // MAIL 451, RCPT 503, DATA 503, then the body lines are unknown commands, QUIT 221.
  assert.deepEqual(r.codes.slice(0, 4), [250, 451, 503, 503]);
  assert.equal(r.codes[r.codes.length - 1], 221);
  assert.ok(!r.codes.includes(354) && r.codes.filter((c) => c === 250).length === 1);
  assert.match(r.output, /451 4\.4\.1 /);
  assert.equal(r.judge.calls.length, 0);
  const err = r.log.named("relay.error")[0];
  assert.equal(err.fields.kind, "connect");
  assert.equal(err.fields.during, "connect");
});

Deno.test("A connect that never completes gives 451 4.4.1 after connectTimeout", async () => {
  const t0 = performance.now();
  const r = await transcript("EHLO c\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n", {
    connect: hangingUpstream(),
    relay: { connectTimeout: 0.1 },
  });
  assert.deepEqual(r.codes, [250, 451, 221]);
  assert.ok(performance.now() - t0 < 10_000); // without the timeout it would never end
});

Deno.test("A server that greets with 421 or 554 makes MAIL answer 451 4.4.1", async () => {
  for (const greeting of ["421 4.3.2 shutting down", "554 5.7.1 no service"]) {
    const r = await transcript("EHLO c\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n", {
      upstream: { greeting },
    });
    assert.deepEqual(r.codes, [250, 451, 221], greeting);
  }
});

Deno.test("MAIL refused by the server is relayed and starts no transaction", async () => {
  const r = await transcript(envelope() + "QUIT\r\n", {
    upstream: { mail: () => "553 5.7.1 Sender rejected" },
  });
  assert.deepEqual(r.codes, [250, 553, 503, 503, 221]);
  assert.match(r.output, /553 5\.7\.1 Sender rejected\r\n/);
});

Deno.test("The server closing during RCPT gives 421 4.4.2 and ends the session", async () => {
  const r = await transcript(FULL, { upstream: { rcpt: () => "close" } });
  assert.deepEqual(r.codes, [250, 250, 421]);
  assert.match(r.output, /421 4\.4\.2 mx\.example Lost connection to the mail server/);
  assert.equal(r.result.end, "relay-lost");
});

Deno.test("A server that does not answer RCPT within replyTimeout gives 421 4.4.2", async () => {
  const r = await transcript(FULL, {
    upstream: { rcpt: () => null },
    relay: { replyTimeout: 0.1 },
  });
  assert.deepEqual(r.codes, [250, 250, 421]);
  assert.equal(r.log.named("relay.error")[0].fields.kind, "timeout");
});

Deno.test("A 421 from the server is passed on and ends the session", async () => {
  const r = await transcript(FULL, { upstream: { rcpt: () => "421 4.3.2 server shutting down" } });
  assert.deepEqual(r.codes, [250, 250, 421]);
  assert.match(r.output, /421 4\.3\.2 server shutting down\r\n$/);
});

Deno.test("The server's 4xx and 5xx at end of data reach the client; never a 250", async () => {
  const cases: [string, number][] = [
    ["550 5.7.1 Message content rejected", 550],
    ["554 5.6.0 bad content", 554],
    ["452 4.3.1 Insufficient system storage", 452],
    ["451 4.3.0 try later", 451],
  ];
  for (const [answer, code] of cases) {
    const r = await transcript(FULL, { upstream: { dataEnd: () => answer } });
    assert.deepEqual(r.codes, [250, 250, 250, 354, code, 221], answer);
    assert.ok(r.output.includes(answer + "\r\n"), r.output);
    assert.equal(r.result.forwarded, 0);
  }
});

Deno.test("A success code other than 250 at end of data is not passed on as success", async () => {
  const r = await transcript(FULL, { upstream: { dataEnd: () => "251 2.0.0 odd" } });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 451, 221]);
});

Deno.test("DATA refused by the server is relayed and the message is not sent", async () => {
  const r = await transcript(FULL, {
    upstream: { data: () => "554 5.5.1 Error: no valid recipients" },
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 554, 221]);
  assert.equal(r.servers[0].messages.length, 0);
  assert.ok(!r.servers[0].raw.includes("Subject: s"));
});

Deno.test("The server silent after the final dot: 421 4.4.2 after dataTimeout, never 250", async () => {
  const r = await transcript(FULL, {
    upstream: { dataEnd: () => null },
    relay: { dataTimeout: 0.1 },
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 421]);
  assert.equal(r.result.failed, 1);
  assert.equal(r.log.named("message")[0].fields.verdict, "forward-failed");
});

Deno.test("The server closing after the final dot: 421 4.4.2, never 250", async () => {
  const r = await transcript(FULL, { upstream: { dataEnd: () => "close" } });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 421]);
});

Deno.test("Discard: 250 with a normal queued text, RSET to the server, nothing delivered, logged", async () => {
  const judge = recordingJudge(() => ({
    action: "discard",
    rule: "lottery",
    evidence: "subject: lottery",
  }));
  const r = await transcript(FULL, { judge });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  // Postfix-shaped (no delivery to this server seen yet): never the SSG transaction id.
  assert.match(r.output, /\r\n250 2\.0\.0 Ok: queued as [0-9A-F]{10}\r\n/);
  assert.ok(!/discard/i.test(r.output));
  assert.equal(r.servers[0].messages.length, 0);
  assert.deepEqual(r.servers[0].commands.slice(-2), ["RSET", "QUIT"]);
  const m = r.log.named("message")[0].fields;
  assert.equal(m.verdict, "discard");
  assert.equal(m.rule, "lottery");
  assert.equal(m.evidence, "subject: lottery");
});

Deno.test("Reject: the rule's reply, RSET to the server, nothing delivered", async () => {
  const judge = recordingJudge(() => ({
    action: "reject",
    rule: "pills",
    reply: { code: 550, enhanced: "5.7.1", text: "Message rejected: spam" },
  }));
  const r = await transcript(FULL, { judge });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 550, 221]);
  assert.match(r.output, /550 5\.7\.1 Message rejected: spam\r\n/);
  assert.equal(r.servers[0].messages.length, 0);
  assert.ok(r.servers[0].commands.includes("RSET"));
});

Deno.test("A rule reply that is not a failure, or carries CRLF, is made safe", async () => {
  const judge = recordingJudge(() => ({
    action: "reject",
    rule: "bad",
    reply: { code: 250, enhanced: "2.0.0", text: "fine\r\n250 injected" },
  }));
  const r = await transcript(FULL, { judge });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 550, 221]);
  assert.match(r.output, /550 5\.7\.1 fine\?\?250 injected\r\n/);
});

Deno.test("Judge failure (throw, rejection, timeout, nonsense) answers 451 4.3.0 and keeps nothing", async () => {
  const judges = [
    recordingJudge(() => {
      throw new Error("boom");
    }),
    recordingJudge(() => Promise.reject(new Error("engine down"))),
    recordingJudge(() => new Promise(() => {})),
    recordingJudge(() => ({ action: "maybe" }) as never),
  ];
  for (const judge of judges) {
    const r = await transcript(FULL, { judge, judgeTimeoutMs: 100 });
    assert.deepEqual(r.codes, [250, 250, 250, 354, 451, 221]);
    assert.match(r.output, /451 4\.3\.0 /);
    assert.equal(r.servers[0].messages.length, 0);
    assert.ok(r.servers[0].commands.includes("RSET"));
    assert.equal(r.result.failed, 1);
    assert.equal(r.log.named("message")[0].fields.verdict, "error");
  }
});

Deno.test("Forward: the server receives exactly our Received header plus the message, byte for byte", async () => {
  const body = "From: a@example.org\r\nSubject: bytes\r\n\r\n\xe4\xf6 8-bit\r\n.dot\r\n\r\n";
  const r = await transcript(
    "EHLO c.example\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n" +
      body.replace("\r\n.dot", "\r\n..dot") + ".\r\nQUIT\r\n",
  );
  assert.deepEqual(r.codes, [250, 250, 250, 250, 354, 250, 221]);
  assert.equal(
    r.servers[0].raw,
    "EHLO mx.example\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.net>\r\n" +
      "RCPT TO:<c@example.net>\r\nDATA\r\n" + receivedFor(undefined, "S1.1", "c.example") +
      body.replace("\r\n.dot", "\r\n..dot") + ".\r\nQUIT\r\n",
  );
});

Deno.test("The relay connects to the client's original destination with connectTimeout", async () => {
  const r = await transcript(FULL, { relay: { connectTimeout: 7 } });
  assert.deepEqual(r.connects, [{ ip: "198.51.100.25", port: 25, timeoutMs: 7000 }]);
  assert.equal(r.log.named("relay.connect").length, 1);
});

Deno.test("A client that disconnects without QUIT still ends the server connection with QUIT", async () => {
  const r = await transcript("EHLO c\r\nMAIL FROM:<a@example.org>\r\n", { endInput: true });
  assert.equal(r.result.end, "client-closed");
  assert.deepEqual(r.servers[0].commands, ["EHLO mx.example", "MAIL FROM:<a@example.org>", "QUIT"]);
});

Deno.test("A server connection closed while idle is replaced at the next MAIL", async () => {
  const tx = (n: number) =>
    `MAIL FROM:<${n}@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nm${n}\r\n.\r\n`;
  for (
    const after of ["250 2.0.0 Ok\r\n!close", "250 2.0.0 Ok\r\n421 4.4.2 idle timeout\r\n!close"]
  ) {
    let n = 0;
    const r = await transcript("EHLO c\r\n" + tx(1) + tx(2) + "QUIT\r\n", {
      upstream: { dataEnd: () => (++n === 1 ? after : "250 2.0.0 Ok") },
    });
    assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 250, 250, 354, 250, 221], after);
    assert.equal(r.servers.length, 2);
    assert.equal(r.servers[0].messages.length + r.servers[1].messages.length, 2);
  }
});

Deno.test("A fresh server connection that fails at MAIL is not retried", async () => {
  const r = await transcript(FULL, { upstream: { mail: () => "close" } });
  assert.deepEqual(r.codes, [250, 421]);
  assert.equal(r.servers.length, 1);
});
