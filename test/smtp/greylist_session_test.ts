/**
 * Greylisting at RCPT time in the SMTP session (issue 10), driven as transcripts against a fake
 * server, with the real policy engine and an injected clock: a greylisted recipient gets 451
 * 4.7.1 and never reaches the server, the others of the same transaction go on; a retry after
 * the delay passes; an authenticated session is never greylisted.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { transcript } from "./harness.ts";

const RULES = `gateway:\n  protect: [198.51.100.0/24]
greylist: { delay: 5m }
rules:
  - name: grey
    when: { authenticated: false }
    action: greylist
`;

function engineAt(now: { t: number }): PolicyEngine {
  return new PolicyEngine(parseConfig(RULES, "t.yaml"), new MemoryLog(), { now: () => now.t });
}

const DATA = "Subject: hello\r\n\r\nHello.\r\n.\r\n";

Deno.test("RCPT-time greylisting: a new triplet gets 451 4.7.1 per recipient and never reaches the server; the other recipients are delivered; the retry after the delay passes", async () => {
  const now = { t: Date.UTC(2026, 10, 30, 8, 0, 0) };
  const engine = engineAt(now);
  try {
    const opts = {
      judge: engine.judge,
      checkRecipient: (e: Parameters<PolicyEngine["checkRecipient"]>[0]) =>
        engine.checkRecipient(e),
    };
    // carol's triplet is known already (she passed yesterday's retry).
    const carol = {
      mailFrom: "alice@example.org",
      rcptTo: ["carol@example.net"],
      client: { ip: "192.0.2.10", port: 1 },
      server: { ip: "198.51.100.25", port: 25 },
      helo: "client.example",
      tls: false,
      sessionId: "S0",
      transactionId: "S0.1",
    };
    engine.checkRecipient(carol, now.t - 86400_000);
    engine.checkRecipient(carol, now.t - 86000_000);

    const first = await transcript(
      "EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n" +
        "RCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n" + DATA +
        "QUIT\r\n",
      opts,
    );
    assert.deepEqual(first.codes, [250, 250, 451, 250, 354, 250, 221], first.output);
    assert.match(first.output, /\r\n451 4\.7\.1 Greylisted, try again in 300 seconds\r\n/);
    const s1 = first.servers[0];
    assert.ok(!s1.commands.some((c) => c.includes("bob@")), "bob never reached the server");
    assert.equal(s1.messages.length, 1);
    assert.deepEqual(s1.messages[0].rcpts, ["carol@example.net"]);

    // Too early: still 451, with the remaining wait.
    now.t += 60_000;
    const early = await transcript(
      "EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n" +
        "QUIT\r\n",
      opts,
    );
    assert.deepEqual(early.codes, [250, 250, 451, 221], early.output);
    assert.match(early.output, /451 4\.7\.1 Greylisted, try again in 240 seconds\r\n/);

    // After the delay; the sender written in another case is the same triplet.
    now.t += 240_000;
    const retry = await transcript(
      "EHLO client.example\r\nMAIL FROM:<Alice@Example.org>\r\nRCPT TO:<bob@example.net>\r\n" +
        "DATA\r\n" + DATA + "QUIT\r\n",
      opts,
    );
    assert.deepEqual(retry.codes, [250, 250, 250, 354, 250, 221], retry.output);
    assert.deepEqual(retry.servers[0].messages[0].rcpts, ["bob@example.net"]);
  } finally {
    engine.close();
  }
});

Deno.test("RCPT-time greylisting skips a session whose AUTH the server accepted", async () => {
  const now = { t: Date.UTC(2026, 10, 30, 8, 0, 0) };
  const engine = engineAt(now);
  try {
    const ehlo = "250-server.example\r\n250-PIPELINING\r\n250-AUTH PLAIN\r\n" +
      "250 ENHANCEDSTATUSCODES\r\n";
    const plain = btoa("\0bob\0pw");
    const r = await transcript(
      `EHLO client.example\r\nAUTH PLAIN ${plain}\r\nMAIL FROM:<bob@example.org>\r\n` +
        "RCPT TO:<dave@example.net>\r\nDATA\r\n" + DATA + "QUIT\r\n",
      {
        judge: engine.judge,
        checkRecipient: (e) => engine.checkRecipient(e),
        profiles: new ServerProfiles(),
        upstream: {
          ehlo,
          other: (verb: string) =>
            verb === "AUTH" ? "235 2.7.0 Authentication successful" : undefined,
        },
      },
    );
    assert.deepEqual(r.codes, [250, 235, 250, 250, 354, 250, 221], r.output);
    assert.equal(r.servers[0].messages.length, 1);
    assert.equal(engine.state.rowCounts.greylist, 0, "nothing recorded");
  } finally {
    engine.close();
  }
});
