import assert from "node:assert/strict";
import {
  codes,
  envelope,
  receivedFor,
  recordingJudge,
  startSession,
  transcript,
} from "./harness.ts";

const MSG = "Subject: hello\r\n\r\nHello Bob\r\n";

Deno.test("A whole pipelined transaction in one write gets its replies in order and one message", async () => {
  const r = await transcript(envelope() + MSG + ".\r\nQUIT\r\n");
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  assert.match(r.greeting, /^220 mx\.example ESMTP\r\n$/);
  assert.equal(
    r.output,
    "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n" +
      "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n" +
      "250 2.0.0 Ok: queued as FAKE\r\n221 2.0.0 mx.example closing connection\r\n",
  );
  assert.equal(r.servers.length, 1);
  assert.equal(
    r.servers[0].raw,
    "EHLO mx.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n" +
      receivedFor("bob@example.net") + MSG + ".\r\nQUIT\r\n",
  );
  assert.equal(r.result.end, "quit");
  assert.equal(r.result.forwarded, 1);
  assert.equal(r.judge.calls.length, 1);
  assert.equal(r.judge.calls[0].message, MSG);
  assert.deepEqual(r.judge.calls[0].envelope.rcptTo, ["bob@example.net"]);
  assert.equal(r.judge.calls[0].envelope.helo, "client.example");
  const m = r.log.named("message");
  assert.equal(m.length, 1);
  assert.equal(m[0].fields.verdict, "forward");
  assert.equal(m[0].fields.size, MSG.length);
  for (
    const k of [
      "session",
      "txid",
      "client",
      "server",
      "from",
      "rcpts",
      "receive_ms",
      "judge_ms",
      "relay_ms",
    ]
  ) {
    assert.ok(m[0].fields[k] !== undefined, k);
  }
});

Deno.test("A transaction driven one command at a time gives the same replies", async () => {
  const s = await startSession();
  const step = async (line: string) => {
    await s.client.write(line);
    return await s.client.reply();
  };
  assert.match(await step("EHLO client.example\r\n"), /^250-mx\.example\r\n/);
  assert.equal(
    await step("MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME\r\n"),
    "250 2.1.0 Ok\r\n",
  );
  assert.equal(await step("RCPT TO:<bob@example.net>\r\n"), "250 2.1.5 Ok\r\n");
  assert.match(await step("DATA\r\n"), /^354 /);
  assert.equal(await step(MSG + ".\r\n"), "250 2.0.0 Ok: queued as FAKE\r\n");
  assert.match(await step("QUIT\r\n"), /^221 /);
  const sum = await s.summary;
  assert.equal(sum.end, "quit");
  // SIZE and BODY were passed on because the fake server advertises SIZE and 8BITMIME.
  assert.ok(s.servers[0].commands.includes("MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME"));
});

Deno.test("HELO gives a one-line 250 and the Received header says SMTP", async () => {
  const r = await transcript(
    "HELO old.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
  );
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  assert.ok(r.output.startsWith("250 mx.example\r\n"));
  assert.ok(r.servers[0].messages[0].content.includes("with SMTP id S1.1"));
  assert.ok(
    r.servers[0].messages[0].content.startsWith("Received: from old.example ([192.0.2.10])"),
  );
});

Deno.test("Commands out of sequence get 503 and leave the state unchanged", async () => {
  const cases: [string, number[]][] = [
    ["MAIL FROM:<a@example.org>\r\n", [503]], // before HELO
    ["EHLO c\r\nRCPT TO:<b@example.net>\r\n", [250, 503]],
    ["EHLO c\r\nDATA\r\n", [250, 503]],
    ["EHLO c\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\n", [250, 250, 503]],
    ["EHLO c\r\nMAIL FROM:<a@example.org>\r\nDATA\r\n", [250, 250, 554]],
  ];
  for (const [input, want] of cases) {
    const r = await transcript(input + "QUIT\r\n");
    assert.deepEqual(r.codes, [...want, 221], JSON.stringify(input));
  }
});

Deno.test("After a rejected DATA the transaction is gone: RCPT+DATA without MAIL get 503", async () => {
  const judge = recordingJudge(() => ({
    action: "reject",
    rule: "pills",
    reply: { code: 550, enhanced: "5.7.1", text: "Message rejected by policy" },
  }));
  const r = await transcript(
    envelope() + MSG + ".\r\nRCPT TO:<other@example.net>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n",
    { judge },
  );
  // RCPT -> 503, DATA -> 503, then "second" and "." are unknown commands (500 each).
  assert.deepEqual(r.codes, [250, 250, 250, 354, 550, 503, 503, 500, 500, 221]);
  assert.match(r.output, /550 5\.7\.1 Message rejected by policy\r\n/);
  assert.equal(r.servers[0].messages.length, 0);
  assert.equal(judge.calls.length, 1);
  // The server got RSET after the rejection, and never a second RCPT.
  assert.deepEqual(r.servers[0].commands.filter((c) => /^(RSET|RCPT)/.test(c)), [
    "RCPT TO:<bob@example.net>",
    "RSET",
  ]);
});

Deno.test("After every end-of-data outcome the next MAIL starts a fresh transaction", async () => {
  let n = 0;
  const judge = recordingJudge(() => {
    n++;
    if (n === 1) return { action: "discard", rule: "lottery" };
    if (n === 2) {
      return { action: "reject", rule: "r", reply: { code: 550, enhanced: "5.7.1", text: "no" } };
    }
    return { action: "forward" };
  });
  const tx = (from: string) =>
    `MAIL FROM:<${from}>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nm\r\n.\r\n`;
  const r = await transcript(
    "EHLO c\r\n" + tx("1@x.example") + tx("2@x.example") + tx("3@x.example") + "QUIT\r\n",
    {
      judge,
    },
  );
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 250, 250, 354, 550, 250, 250, 354, 250, 221]);
  assert.equal(r.servers.length, 1, "one upstream connection reused across transactions");
  assert.equal(r.servers[0].messages.length, 1);
  assert.equal(r.servers[0].messages[0].mailFrom, "3@x.example");
  assert.deepEqual(judge.calls.map((c) => c.envelope.transactionId), ["S1.1", "S1.2", "S1.3"]);
  assert.equal(r.result.discarded, 1);
  assert.equal(r.result.rejected, 1);
  assert.equal(r.result.forwarded, 1);
});

Deno.test("RSET clears the transaction here and upstream", async () => {
  const r = await transcript(
    "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRSET\r\nDATA\r\nQUIT\r\n",
  );
  assert.deepEqual(r.codes, [250, 250, 250, 250, 503, 221]);
  assert.deepEqual(r.servers[0].commands, [
    "EHLO mx.example",
    "MAIL FROM:<a@example.org>",
    "RCPT TO:<b@example.net>",
    "RSET",
    "QUIT",
  ]);
});

Deno.test("EHLO in the middle of a transaction resets it, upstream too", async () => {
  const r = await transcript(
    "EHLO c\r\nMAIL FROM:<a@example.org>\r\nEHLO c\r\nRCPT TO:<b@example.net>\r\nQUIT\r\n",
  );
  assert.deepEqual(r.codes, [250, 250, 250, 503, 221]);
  assert.ok(r.servers[0].commands.includes("RSET"));
});

Deno.test("NOOP, VRFY, HELP, unknown and unimplemented commands", async () => {
  const r = await transcript(
    "NOOP\r\nNOOP anything\r\nVRFY bob\r\nVRFY\r\nHELP\r\nFOO\r\nEXPN staff\r\nSTARTTLS\r\nAUTH PLAIN\r\nRSET x\r\nQUIT now\r\nQUIT\r\n",
  );
  assert.deepEqual(r.codes, [250, 250, 252, 501, 214, 500, 502, 502, 503, 501, 501, 221]);
  assert.match(r.output, /^252 2\.0\.0 /m);
  assert.match(r.output, /^214-2\.0\.0 /m);
  assert.match(r.output, /^500 5\.5\.1 /m);
  assert.match(r.output, /^502 5\.5\.1 /m);
  assert.equal(r.servers.length, 0, "no upstream connection without MAIL");
});

Deno.test("Every reply except the greeting and EHLO/HELO carries an enhanced status code", async () => {
  const r = await transcript(
    envelope() + MSG +
      ".\r\nNOOP\r\nVRFY x\r\nHELP\r\nFOO\r\nRSET\r\nRCPT TO:<x@y.example>\r\nQUIT\r\n",
  );
  const lines = r.output.split("\r\n").filter((l) => l !== "");
  for (const line of lines) {
    if (line.startsWith("250-") || line === "250 ENHANCEDSTATUSCODES" || line.startsWith("354 ")) {
      continue;
    }
    assert.match(line, /^\d{3}[ -][245]\.\d+\.\d+( |$)/, line);
  }
});

Deno.test("Verbs are case-insensitive", async () => {
  const r = await transcript(
    "ehlo c\r\nmail from:<a@example.org>\r\nrcpt to:<b@example.net>\r\ndata\r\nx\r\n.\r\nquit\r\n",
  );
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
});

Deno.test("An early talker gets 554 instead of the greeting and is disconnected", async () => {
  const s = await startSession({ noGreeting: true, pregreetMs: 50 });
  await s.client.write("EHLO eager.example\r\n");
  const out = await s.client.rest();
  assert.match(out, /^554 5\.5\.0 mx\.example Error: talked before the greeting\r\n$/);
  const sum = await s.summary;
  assert.equal(sum.end, "early-talker");
  assert.equal(s.log.named("smtp.reject")[0].fields.reason, "early-talker");
  assert.equal(s.servers.length, 0);
});

Deno.test("Input already waiting when the session starts is an early talker even with no pause", async () => {
  const { duplex, Peer, smtpConfig, relayConfig, fakeUpstream } = await import("./harness.ts");
  const { serveSession } = await import("../../src/smtp/session.ts");
  const { MemoryLog } = await import("../../src/log/log.ts");
  const d = duplex();
  const client = new Peer(d.a);
  await client.write("EHLO eager.example\r\n");
  const sum = await serveSession(d.b, {
    id: "S9",
    client: { ip: "192.0.2.10", port: 1 },
    server: { ip: "198.51.100.25", port: 25 },
    hostname: "mx.example",
    smtp: smtpConfig(),
    relay: relayConfig(),
    judge: recordingJudge(),
    log: new MemoryLog(),
    connectUpstream: fakeUpstream().connect,
    shutdown: new AbortController().signal,
  });
  assert.equal(sum.end, "early-talker");
  assert.deepEqual(codes(await client.rest()), [554]);
});

Deno.test("A client that waits for the greeting is not an early talker", async () => {
  const s = await startSession({ pregreetMs: 30 });
  assert.match(s.greeting, /^220 /);
  await s.client.write("QUIT\r\n");
  assert.match(await s.client.reply(), /^221 /);
  assert.equal((await s.summary).end, "quit");
});

Deno.test("The shutdown signal makes an idle session answer 421 4.3.2 and close", async () => {
  const ac = new AbortController();
  const s = await startSession({ shutdown: ac.signal });
  await s.client.write("EHLO c\r\n");
  await s.client.reply();
  ac.abort();
  const out = await s.client.rest();
  assert.match(out, /^421 4\.3\.2 mx\.example Service shutting down/);
  assert.equal((await s.summary).end, "shutdown");
});

Deno.test("The shutdown signal in the middle of DATA answers 421 and forwards nothing", async () => {
  const ac = new AbortController();
  const s = await startSession({ shutdown: ac.signal });
  await s.client.write(envelope() + "partial message\r\n");
  for (let i = 0; i < 4; i++) await s.client.reply();
  ac.abort();
  assert.match(await s.client.rest(), /^421 4\.3\.2 /);
  assert.equal((await s.summary).end, "shutdown");
  await Promise.all(s.servers.map((x) => x.done));
  assert.equal(s.servers[0].messages.length, 0);
  assert.equal(s.judge.calls.length, 0);
});

Deno.test("A session started after shutdown answers 421 instead of the greeting", async () => {
  const ac = new AbortController();
  ac.abort();
  const s = await startSession({ shutdown: ac.signal, noGreeting: true });
  assert.match(await s.client.rest(), /^421 4\.3\.2 /);
  assert.equal((await s.summary).end, "shutdown");
});

Deno.test("Command timeout: 421 4.4.2 after the configured wait, logged", async () => {
  const s = await startSession({ smtp: { timeouts: { command: 0.1, data: 5, session: 30 } } });
  const t0 = performance.now();
  const out = await s.client.rest();
  const ms = performance.now() - t0;
  assert.match(out, /^421 4\.4\.2 mx\.example Error: timeout exceeded\r\n$/);
  assert.ok(ms >= 90 && ms < 10_000, `took ${ms} ms`);
  assert.equal((await s.summary).end, "timeout");
  assert.equal(s.log.named("smtp.timeout")[0].fields.phase, "command");
});

Deno.test("Data block timeout: 421 4.4.2, the message is not forwarded, the server gets RSET", async () => {
  const s = await startSession({ smtp: { timeouts: { command: 5, data: 0.1, session: 30 } } });
  await s.client.write(envelope() + "half a message\r\n");
  const out = await s.client.rest();
  assert.deepEqual(codes(out), [250, 250, 250, 354, 421]);
  const sum = await s.summary;
  assert.equal(sum.end, "timeout");
  assert.equal(s.log.named("smtp.timeout")[0].fields.phase, "data");
  await Promise.all(s.servers.map((x) => x.done));
  assert.equal(s.servers[0].messages.length, 0);
  assert.ok(s.servers[0].commands.includes("RSET"));
});

Deno.test("Whole-session deadline: a client that keeps talking is cut off with 421 4.4.2", async () => {
  const s = await startSession({ smtp: { timeouts: { command: 5, data: 5, session: 0.3 } } });
  let replies = 0;
  const t0 = performance.now();
  for (let i = 0; i < 100; i++) {
    const sent = await s.client.write("NOOP\r\n").then(() => true, () => false);
    if (!sent) break; // the session closed the connection
    await new Promise((r) => setTimeout(r, 20));
  }
  const out = await s.client.rest();
  replies = codes(out).length;
  assert.ok(performance.now() - t0 < 10_000); // 100 NOOPs every 20 ms would outlast it
  assert.match(out, /421 4\.4\.2 mx\.example Error: timeout exceeded\r\n$/);
  assert.ok(replies > 3);
  assert.equal((await s.summary).end, "deadline");
  assert.equal(s.log.named("smtp.timeout")[0].fields.phase, "session");
});

Deno.test("A client that closes mid-DATA leaves nothing behind: no judge call, no message", async () => {
  const s = await startSession();
  await s.client.write(envelope() + "partial\r\n");
  for (let i = 0; i < 4; i++) await s.client.reply();
  s.client.close();
  const sum = await s.summary;
  assert.equal(sum.end, "client-closed");
  await Promise.all(s.servers.map((x) => x.done));
  assert.equal(s.servers[0].messages.length, 0);
  assert.equal(s.judge.calls.length, 0);
});

Deno.test("Without PIPELINING, input sent ahead of a reply is a synchronisation error", async () => {
  const r = await transcript("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n", {
    smtp: { pipelining: false },
  });
  assert.deepEqual(r.codes, [554]);
  assert.match(r.output, /^554 5\.5\.0 Error: SMTP protocol synchronization\r\n$/);
  assert.equal(r.result.end, "sync-error");
});

Deno.test("Without PIPELINING, EHLO does not advertise it and a lock-step client is served", async () => {
  const s = await startSession({ smtp: { pipelining: false } });
  await s.client.write("EHLO c\r\n");
  const ehlo = await s.client.reply();
  assert.ok(!ehlo.includes("PIPELINING"));
  await s.client.write("QUIT\r\n");
  assert.match(await s.client.reply(), /^221 /);
});

Deno.test("HTTP requests and proxy probes end the session with 521", async () => {
  for (
    const line of [
      "GET / HTTP/1.1\r\n",
      "POST /x HTTP/1.0\r\n",
      "CONNECT 198.51.100.25:25 HTTP/1.1\r\n",
    ]
  ) {
    const r = await transcript(line + "QUIT\r\n");
    assert.deepEqual(r.codes, [521], line);
    assert.equal(r.result.end, "forbidden");
  }
});

Deno.test("Bare LF in a command line is refused under the reject policy and accepted under normalize", async () => {
  const rej = await transcript("NOOP\nQUIT\r\n");
  assert.deepEqual(rej.codes, [500, 221]);
  const norm = await transcript("NOOP\nQUIT\n", { smtp: { bareLineEndings: "normalize" } });
  assert.deepEqual(norm.codes, [250, 221]);
});

Deno.test("The session summary counts commands, errors and bytes", async () => {
  const input = "EHLO c\r\nFOO\r\nNOOP\r\nQUIT\r\n";
  const r = await transcript(input);
  assert.equal(r.result.commands, 4);
  assert.equal(r.result.errors, 1);
  assert.equal(r.result.bytesIn, input.length);
  assert.ok(r.log.named("smtp.connect").length === 1 && r.log.named("smtp.close").length === 1);
});

Deno.test("Replies to a long pipelined group are written in bounded batches, all in order", async () => {
  const { MAX_PENDING_REPLIES } = await import("../../src/smtp/session.ts");
  const n = 3000; // 3000 x "250 2.0.0 Ok\r\n" is well past MAX_PENDING_REPLIES
  assert.ok(n * 14 > 2 * MAX_PENDING_REPLIES);
  const r = await transcript("RSET\r\n".repeat(n) + "QUIT\r\n");
  assert.equal(r.codes.length, n + 1);
  assert.ok(r.codes.slice(0, n).every((c) => c === 250));
  assert.equal(r.codes[n], 221);
});

/** Sends `total` bytes of body in chunks of `chunk` bytes every `everyMs`, then ends the data. */
async function trickle(
  s: Awaited<ReturnType<typeof startSession>>,
  chunk: number,
  everyMs: number,
  total: number,
) {
  for (let sent = 0; sent < total; sent += chunk) {
    const ok = await s.client.write("b".repeat(chunk - 2) + "\r\n").then(() => true, () => false);
    if (!ok) return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  await s.client.write(".\r\nQUIT\r\n").catch(() => {});
}

Deno.test("Minimum data rate: a sender above the rate finishes, a trickling one is cut off with 421", async () => {
  const smtp = { timeouts: { command: 5, data: 0.3, session: 30 } };
  // 2000 bytes in 100-byte chunks every 20 ms (~5000 B/s) against a 1000 B/s minimum: served.
  const fast = await startSession({ smtp, minDataRate: 1000 });
  await fast.client.write(envelope());
  for (let i = 0; i < 4; i++) await fast.client.reply();
  await trickle(fast, 100, 20, 2000);
  assert.deepEqual(codes(await fast.client.rest()), [250, 221]);
  // 10-byte chunks every 50 ms (200 B/s): each block is well inside the 300 ms block timeout,
  // but the request deadline runs out.
  const slow = await startSession({ smtp, minDataRate: 1000 });
  await slow.client.write(envelope());
  for (let i = 0; i < 4; i++) await slow.client.reply();
  const t0 = performance.now();
  await trickle(slow, 10, 50, 5000);
  assert.deepEqual(codes(await slow.client.rest()), [421]);
  assert.ok(performance.now() - t0 < 15_000); // the whole trickle would take 25 s
  assert.equal((await slow.summary).end, "timeout");
  assert.equal(slow.log.named("smtp.timeout")[0].fields.phase, "data-rate");
  await Promise.all(slow.servers.map((x) => x.done));
  assert.equal(slow.servers[0].messages.length, 0);
});

Deno.test("Without a minimum data rate the same trickle is served (only the block timeout applies)", async () => {
  const s = await startSession({ smtp: { timeouts: { command: 5, data: 0.3, session: 30 } } });
  await s.client.write(envelope());
  for (let i = 0; i < 4; i++) await s.client.reply();
  await trickle(s, 10, 50, 200);
  assert.deepEqual(codes(await s.client.rest()), [250, 221]);
});
