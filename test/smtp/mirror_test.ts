/**
 * Mirroring the protected server (issue 7): the greeting, host name and extensions the client
 * sees are the server's, limited to what SSG carries; what is learnt is cached per server with a
 * TTL and a bound. Transcripts over in-memory pipes against fake servers that advertise or omit
 * extensions.
 */
import assert from "node:assert/strict";
import { offeredSize } from "../../src/smtp/hello_phase.ts";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { codes, envelope, refusedUpstream, startSession, transcript } from "./harness.ts";

const MSG = "Subject: hi\r\n\r\nbody\r\n";

/** A Postfix-like EHLO reply with keywords SSG carries and some it does not. */
const POSTFIX_EHLO = "250-mail.server.example\r\n250-PIPELINING\r\n250-SIZE 40960000\r\n" +
  "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n" +
  "250-DSN\r\n250-XCLIENT NAME ADDR\r\n250 CHUNKING\r\n";

Deno.test("First contact: SSG greets with the server's own greeting and EHLO name, after learning them over the relay", async () => {
  const profiles = new ServerProfiles();
  const r = await transcript(envelope() + MSG + ".\r\nQUIT\r\n", {
    profiles,
    upstream: {
      greeting: "220 mail.server.example ESMTP Postfix (Debian/GNU)",
      ehlo: POSTFIX_EHLO,
    },
  });
  assert.equal(r.greeting, "220 mail.server.example ESMTP Postfix (Debian/GNU)\r\n");
  assert.ok(
    r.output.startsWith(
      "250-mail.server.example\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250-VRFY\r\n250-ETRN\r\n" +
        "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 CHUNKING\r\n",
    ),
    r.output,
  );
  // The connection opened before the greeting carried the transaction: one connection in all.
  assert.equal(r.servers.length, 1);
  assert.equal(r.servers[0].messages.length, 1);
  // QUIT is answered with the server's own goodbye (the fake server says "221 2.0.0 Bye").
  assert.match(r.output, /221 2\.0\.0 Bye\r\n$/);
  assert.equal(profiles.size, 1);
});

Deno.test("A fresh profile greets at once without connecting; the relay connects at MAIL and refreshes it", async () => {
  const profiles = new ServerProfiles();
  await transcript("QUIT\r\n", { profiles });
  const s = await startSession({ profiles });
  assert.equal(s.greeting, "220 server.example ESMTP fake\r\n");
  assert.equal(s.connects.length, 0, "no connection before the greeting");
  await s.client.write(envelope() + MSG + ".\r\nQUIT\r\n");
  const out = await s.client.rest();
  assert.deepEqual(codes(out), [250, 250, 250, 354, 250, 221]);
  assert.equal(s.connects.length, 1);
});

Deno.test("Once the server's goodbye is known, QUIT is answered at once and the server still gets its QUIT", async () => {
  const profiles = new ServerProfiles();
  // The first session waits for the server's own 221 and remembers it.
  const first = await transcript(envelope() + MSG + ".\r\nQUIT\r\n", { profiles });
  assert.match(first.output, /221 2\.0\.0 Bye\r\n$/);
  // The next one answers QUIT with it before the (slow) server has answered its QUIT.
  const s = await startSession({ profiles, upstream: { quitDelayMs: 60_000 } });
  await s.client.write(envelope() + MSG + ".\r\n");
  for (let i = 0; i < 5; i++) await s.client.reply();
  await s.client.write("QUIT\r\n");
  // Waiting for the server would leave the client without a reply until QUIT_WAIT_MS (5 s).
  assert.equal(await s.client.reply(3000), "221 2.0.0 Bye\r\n");
  await s.summary;
  assert.ok(s.servers[0].commands.includes("QUIT"), "the relay leg still ends with QUIT");
});

Deno.test("An expired profile is learnt again before the greeting", async () => {
  let now = 1_000_000;
  const profiles = new ServerProfiles({ ttlMs: 60_000, now: () => now });
  await transcript("QUIT\r\n", { profiles });
  now += 59_999;
  const fresh = await startSession({ profiles });
  assert.equal(fresh.connects.length, 0);
  fresh.client.close();
  now += 1;
  const stale = await startSession({ profiles, upstream: { greeting: "220 renamed.example" } });
  assert.equal(stale.connects.length, 1);
  assert.equal(stale.greeting, "220 renamed.example\r\n");
  stale.client.close();
});

Deno.test("SIZE offered is the server's limit, never above SSG's own; absent or 0 means SSG's", () => {
  const ours = 25_000_000;
  assert.equal(offeredSize("24999999", ours), 24_999_999);
  assert.equal(offeredSize("25000000", ours), 25_000_000);
  assert.equal(offeredSize("25000001", ours), 25_000_000);
  assert.equal(offeredSize("40960000", ours), 25_000_000);
  assert.equal(offeredSize("0", ours), ours);
  assert.equal(offeredSize("", ours), ours);
  assert.equal(offeredSize("lots", ours), ours);
});

Deno.test("A server with a smaller SIZE and no PIPELINING is offered as it is", async () => {
  const r = await transcript("EHLO c.example\r\nQUIT\r\n", {
    profiles: new ServerProfiles(),
    upstream: { ehlo: "250-small.example\r\n250-SIZE 1048576\r\n250 ENHANCEDSTATUSCODES\r\n" },
  });
  assert.equal(
    r.output,
    "250-small.example\r\n250-SIZE 1048576\r\n250 ENHANCEDSTATUSCODES\r\n" +
      "221 2.0.0 Bye\r\n",
  );
});

Deno.test("A server without ENHANCEDSTATUSCODES gets replies without enhanced codes, as direct", async () => {
  const r = await transcript(envelope() + MSG + ".\r\nQUIT\r\n", {
    profiles: new ServerProfiles(),
    upstream: {
      ehlo: "250-plain.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
      mail: () => "250 Ok",
      rcpt: () => "250 Ok",
      dataEnd: () => "250 Ok: queued as 4AbCdE",
    },
  });
  assert.equal(
    r.output,
    "250-plain.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n" +
      "250 Ok\r\n250 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 Ok: queued as 4AbCdE\r\n" +
      "221 2.0.0 Bye\r\n",
  );
});

Deno.test("A server without ENHANCEDSTATUSCODES that writes codes in its text anyway: its text passes as it came", async () => {
  const r = await transcript(
    "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<unknown@example.net>\r\nQUIT\r\n",
    {
      profiles: new ServerProfiles(),
      upstream: {
        ehlo: "250-plain.example\r\n250 8BITMIME\r\n",
        mail: () => "250 2.1.0 Ok",
        rcpt: () => "550 5.1.1 <unknown@example.net>: User unknown",
      },
    },
  );
  assert.match(
    r.output,
    /\r\n250 2\.1\.0 Ok\r\n550 5\.1\.1 <unknown@example\.net>: User unknown\r\n/,
  );
});

Deno.test("smtp.banner_hostname gateway: SSG's own name, the server's extensions", async () => {
  const r = await transcript("EHLO c.example\r\nQUIT\r\n", {
    profiles: new ServerProfiles(),
    smtp: { bannerHostname: "gateway" },
    upstream: { ehlo: POSTFIX_EHLO },
  });
  assert.equal(r.greeting, "220 mx.example ESMTP\r\n");
  assert.match(r.output, /^250-mx\.example\r\n250-PIPELINING\r\n/);
  assert.doesNotMatch(r.output, /XCLIENT|XFORWARD/);
});

Deno.test("A server that cannot be reached at first contact: 421 instead of a greeting, nothing accepted", async () => {
  const s = await startSession({ profiles: new ServerProfiles(), connect: refusedUpstream() });
  assert.equal(s.greeting, "421 mx.example Service not available, try again later\r\n");
  const sum = await s.summary;
  assert.equal(sum.end, "relay-lost");
  assert.ok(s.log.named("relay.error").some((e) => e.fields.during === "connect-before-greeting"));
});

Deno.test("A server that refuses the session in its greeting: the client hears the server's refusal", async () => {
  const s = await startSession({
    profiles: new ServerProfiles(),
    upstream: { greeting: "554 5.7.1 mail.server.example No SMTP service here" },
  });
  assert.equal(s.greeting, "554 5.7.1 mail.server.example No SMTP service here\r\n");
  assert.equal((await s.summary).end, "relay-lost");
});

Deno.test("ServerProfiles keeps at most max servers, evicting the least recently used", () => {
  const seen = { greeting: ["x ESMTP"], ehloName: "x", extensions: new Map<string, string>() };
  const p = new ServerProfiles({ max: 3 });
  const at = (n: number) => ({ ip: `198.51.100.${n}`, port: 25 });
  p.learn(at(1), seen);
  p.learn(at(2), seen);
  assert.equal(p.size, 2); // limit - 1
  p.learn(at(3), seen);
  assert.equal(p.size, 3); // limit
  assert.ok(p.get(at(1))); // 1 is now the most recently used
  p.learn(at(4), seen); // limit + 1: evicts 2
  assert.equal(p.size, 3);
  assert.equal(p.get(at(2)), undefined);
  assert.ok(p.get(at(1)) && p.get(at(3)) && p.get(at(4)));
});

Deno.test("Mirroring: VRFY, EXPN, HELP and ETRN get the server's own replies; without mirroring SSG's", async () => {
  const answers: Record<string, string> = {
    VRFY: "252 2.0.0 bob",
    EXPN: "502 5.5.2 Error: command not recognized",
    HELP: "214 2.0.0 Ask your postmaster",
    ETRN: "458 4.5.4 Unable to queue messages",
  };
  const profiles = new ServerProfiles();
  const r = await transcript(
    "EHLO c.example\r\nVRFY bob\r\nEXPN staff\r\nHELP\r\nETRN example.net\r\nQUIT\r\n",
    {
      profiles,
      upstream: { other: (verb) => answers[verb] },
    },
  );
  assert.equal(
    r.output.split("\r\n").slice(-6).join("\r\n"),
    "252 2.0.0 bob\r\n502 5.5.2 Error: command not recognized\r\n214 2.0.0 Ask your postmaster\r\n" +
      "458 4.5.4 Unable to queue messages\r\n221 2.0.0 Bye\r\n",
  );
  assert.ok(r.servers[0].commands.includes("VRFY bob"));
  assert.ok(r.servers[0].commands.includes("ETRN example.net"));
  const plain = await transcript("VRFY bob\r\nEXPN staff\r\nQUIT\r\n");
  assert.deepEqual(plain.codes, [252, 502, 221]);
});

Deno.test("A server that accepts but never greets: the first contact is cut at the relay connect timeout, the client gets 421", async () => {
  const t0 = performance.now();
  const s = await startSession({
    profiles: new ServerProfiles(),
    relay: { connectTimeout: 0.2, replyTimeout: 5 },
    upstream: { greeting: null },
  });
  const ms = performance.now() - t0;
  assert.equal(s.greeting, "421 mx.example Service not available, try again later\r\n");
  assert.ok(ms >= 190 && ms < 4900, `${ms} ms`);
  assert.equal((await s.summary).end, "relay-lost");
});

Deno.test("ServerProfiles.forConfig takes the TTL and bound from smtp settings", () => {
  const p = ServerProfiles.forConfig({ serverProfileTtl: 60, serverProfileMax: 1 } as never);
  const seen = { greeting: [], ehloName: "x", extensions: new Map<string, string>() };
  p.learn({ ip: "198.51.100.1", port: 25 }, seen);
  p.learn({ ip: "198.51.100.2", port: 25 }, seen);
  assert.equal(p.size, 1);
});

Deno.test("The client's admission slot is given back before its 221 is written (it may reconnect at once)", async () => {
  const events: string[] = [];
  const s = await startSession({ events });
  await s.client.write(envelope() + MSG + ".\r\n");
  for (let i = 0; i < 5; i++) await s.client.reply();
  await s.client.write("QUIT\r\n");
  assert.match(await s.client.reply(), /^221 /);
  await s.summary;
  const done = events.indexOf("client-done");
  const goodbye = events.findIndex((e) => e.startsWith("write:221 "));
  assert.ok(done >= 0 && goodbye >= 0, JSON.stringify(events));
  assert.ok(done < goodbye, `slot released after the 221: ${JSON.stringify(events.slice(-3))}`);
});
