/**
 * AUTH (RFC 4954) relayed to the mirrored server: the SASL exchange passes through unchanged,
 * the server decides, only the outcome and user name are logged, never a credential.
 */
import assert from "node:assert/strict";
import { userName } from "../../src/smtp/auth_phase.ts";
import { ehloKeywords } from "../../src/smtp/hello_phase.ts";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { SessionCore } from "../../src/smtp/session_core.ts";
import { duplex, FAKE_EHLO, smtpConfig, startSession, transcript } from "./harness.ts";

const AUTH_EHLO = "250-server.example\r\n250-PIPELINING\r\n250-SIZE 50000000\r\n" +
  "250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";
const PLAIN = btoa("\0bob\0s3cret-pw");

/** A fake server's AUTH: PLAIN with an initial response, LOGIN with two challenges. */
function authServer(password = "s3cret-pw") {
  let step = "";
  let user = "";
  return (verb: string, arg: string, line: string): string | undefined => {
    if (verb === "AUTH") {
      const [mech, ir] = arg.split(" ");
      if (mech === "PLAIN" && ir) {
        return atob(ir).split("\0")[2] === password
          ? "235 2.7.0 Authentication successful"
          : "535 5.7.8 Error: authentication failed";
      }
      if (mech === "LOGIN") {
        step = "user";
        return "334 VXNlcm5hbWU6";
      }
      return "504 5.5.4 Unrecognized authentication type";
    }
    if (step === "user") {
      if (line === "*") {
        step = "";
        return "501 5.7.0 Authentication aborted";
      }
      user = line;
      step = "pass";
      return "334 UGFzc3dvcmQ6";
    }
    if (step === "pass") {
      step = "";
      return atob(user) === "bob" && atob(line) === password
        ? "235 2.7.0 Authentication successful"
        : "535 5.7.8 Error: authentication failed";
    }
    return undefined;
  };
}

const withAuth = (password?: string) => ({
  profiles: new ServerProfiles(),
  upstream: { ehlo: AUTH_EHLO, other: authServer(password) },
});

Deno.test("AUTH PLAIN is offered when the server has it and relayed verbatim; the log has the user, never the password", async () => {
  const r = await transcript(
    `EHLO client.example\r\nAUTH PLAIN ${PLAIN}\r\nMAIL FROM:<bob@example.org> AUTH=<>\r\nQUIT\r\n`,
    withAuth(),
  );
  assert.match(r.output, /\r\n250-AUTH PLAIN LOGIN\r\n/);
  assert.deepEqual(r.codes, [250, 235, 250, 221]);
  assert.match(r.output, /235 2\.7\.0 Authentication successful\r\n/);
  const s = r.servers[0];
  assert.ok(s.commands.includes(`AUTH PLAIN ${PLAIN}`));
  assert.ok(s.commands.includes("MAIL FROM:<bob@example.org> AUTH=<>"));
  const ev = r.log.named("smtp.auth");
  assert.equal(ev.length, 1);
  assert.equal(ev[0].fields.outcome, "success");
  assert.equal(ev[0].fields.user, "bob");
  const all = JSON.stringify(r.log.events);
  assert.ok(!all.includes("s3cret-pw") && !all.includes(PLAIN), "no credential in the log");
});

Deno.test("AUTH LOGIN: the server's challenges reach the client and the responses reach the server", async () => {
  const s = await startSession(withAuth());
  const step = async (line: string) => {
    await s.client.write(line);
    return await s.client.reply();
  };
  await step("EHLO client.example\r\n");
  assert.equal(await step("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
  assert.equal(await step(btoa("bob") + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
  assert.equal(await step(btoa("s3cret-pw") + "\r\n"), "235 2.7.0 Authentication successful\r\n");
  assert.equal(await step("AUTH LOGIN\r\n"), "503 5.5.1 Error: already authenticated\r\n");
  assert.match(await step("QUIT\r\n"), /^221 /);
  assert.equal(s.log.named("smtp.auth")[0].fields.user, "bob");
});

Deno.test("A failed AUTH passes the server's 535 on and counts as an error; a client '*' cancels upstream", async () => {
  const r = await transcript(
    `EHLO client.example\r\nAUTH PLAIN ${btoa("\0bob\0wrong")}\r\nAUTH LOGIN\r\n*\r\nQUIT\r\n`,
    withAuth(),
  );
  assert.deepEqual(r.codes, [250, 535, 334, 501, 221]);
  assert.equal(r.result.errors, 2);
  assert.equal(r.log.named("smtp.auth")[0].fields.outcome, "failure");
  assert.ok(r.servers[0].commands.includes("*"));
});

Deno.test("A response that is not base64 cancels the exchange upstream and gets 501 5.5.2", async () => {
  const r = await transcript(
    "EHLO client.example\r\nAUTH LOGIN\r\nnot base64!\r\nQUIT\r\n",
    withAuth(),
  );
  assert.deepEqual(r.codes, [250, 334, 501, 221]);
  assert.match(r.output, /501 5\.5\.2 Cannot decode response\r\n/);
  assert.ok(!r.servers[0].commands.includes("not base64!"));
  assert.ok(r.servers[0].commands.includes("*"));
});

Deno.test("AUTH when the server has none: not offered, 503 5.5.1; inside a transaction: 503 5.5.1", async () => {
  const none = await transcript(`EHLO client.example\r\nAUTH PLAIN ${PLAIN}\r\nQUIT\r\n`, {
    profiles: new ServerProfiles(),
    upstream: { ehlo: FAKE_EHLO },
  });
  assert.doesNotMatch(none.output, /250[- ]AUTH/);
  assert.deepEqual(none.codes, [250, 503, 221]);
  const inTx = await transcript(
    `EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nAUTH PLAIN ${PLAIN}\r\nQUIT\r\n`,
    withAuth(),
  );
  assert.deepEqual(inTx.codes, [250, 250, 503, 221]);
  assert.match(inTx.output, /503 5\.5\.1 Error: MAIL transaction in progress\r\n/);
});

Deno.test("AUTH the server offers only under TLS is not offered to a plaintext client", async () => {
  const profiles = new ServerProfiles();
  profiles.learn({ ip: "198.51.100.25", port: 25 }, {
    greeting: ["server.example ESMTP"],
    ehloName: "server.example",
    extensions: new Map([["AUTH", "PLAIN"], ["ENHANCEDSTATUSCODES", ""]]),
    tls: true,
  });
  const r = await transcript("EHLO client.example\r\nQUIT\r\n", { profiles });
  assert.doesNotMatch(r.output, /AUTH/);
  assert.equal(r.connects.length, 0);
});

Deno.test("userName: PLAIN's authentication identity, LOGIN's first response, nothing for others", () => {
  assert.equal(userName("PLAIN", [btoa("admin\0bob\0pw")]), "bob");
  assert.equal(userName("LOGIN", [btoa("bob"), btoa("pw")]), "bob");
  assert.equal(userName("CRAM-MD5", ["abc"]), undefined);
  assert.equal(userName("PLAIN", ["!!!"]), undefined);
});

Deno.test("AUTH learnt under TLS is offered once the client's leg is under TLS too", () => {
  const d = duplex();
  const core = new SessionCore(d.b, { smtp: smtpConfig(), hostname: "mx.example" } as never);
  core.profile = {
    greeting: ["server.example ESMTP"],
    ehloName: "server.example",
    extensions: new Map([["AUTH", "PLAIN LOGIN"], ["PIPELINING", ""]]),
    tls: true,
    learnedAt: 0,
  };
  assert.deepEqual(ehloKeywords(core), ["PIPELINING", "SIZE 10000000"]);
  core.tls = true;
  assert.deepEqual(ehloKeywords(core), ["AUTH PLAIN LOGIN", "PIPELINING", "SIZE 10000000"]);
  d.a.close();
});

Deno.test("The judge's envelope names the user the server authenticated (authUser), and none without AUTH", async () => {
  const body = "Subject: hi\r\n\r\nhello\r\n.\r\n";
  const r = await transcript(
    `EHLO client.example\r\nAUTH PLAIN ${PLAIN}\r\nMAIL FROM:<bob@example.org>\r\n` +
      `RCPT TO:<carol@example.net>\r\nDATA\r\n${body}QUIT\r\n`,
    withAuth(),
  );
  assert.deepEqual(r.codes, [250, 235, 250, 250, 354, 250, 221], r.output);
  assert.equal(r.judge.calls[0].envelope.authUser, "bob");
  const plain = await transcript(
    `EHLO client.example\r\nMAIL FROM:<bob@example.org>\r\nRCPT TO:<carol@example.net>\r\n` +
      `DATA\r\n${body}QUIT\r\n`,
    withAuth(),
  );
  assert.equal(plain.judge.calls.length, 1, plain.output);
  assert.equal(plain.judge.calls[0].envelope.authUser, undefined);
});
