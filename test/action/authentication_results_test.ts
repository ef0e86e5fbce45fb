import assert from "node:assert/strict";
import {
  applyAuthResults,
  authservIdOf,
  formatAuthResults,
} from "../../src/action/authentication_results.ts";
import { GatewayActions } from "../../src/action/action_runner.ts";
import { MemoryLog } from "../../src/log/log.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("authservIdOf reads the authserv-id past comments and white space, unquotes, lower-cases", () => {
  const cases: [string, string][] = [
    ["gw.corp.example; spf=pass", "gw.corp.example"],
    ["  GW.Corp.Example ; dkim=pass", "gw.corp.example"],
    ["gw.corp.example 1; none", "gw.corp.example"],
    ["(forged (nested) comment) gw.corp.example; spf=pass", "gw.corp.example"],
    ['"gw.corp.example"; spf=pass', "gw.corp.example"],
    ["gw.corp.example(comment);spf=pass", "gw.corp.example"],
    ["other.example; spf=pass smtp.mailfrom=gw.corp.example", "other.example"],
    ["; spf=pass", ""],
    ["", ""],
  ];
  for (const [value, id] of cases) assert.equal(authservIdOf(value), id, value);
});

Deno.test("applyAuthResults removes inbound fields with our id (any case, folded, forged comments) and keeps others byte for byte", () => {
  const original = [
    "Authentication-Results: gw.corp.example; spf=pass smtp.mailfrom=ceo@corp.example",
    "Received: from x by y",
    "authentication-results: (looks innocent)",
    " GW.CORP.EXAMPLE; dkim=pass header.d=corp.example",
    "Authentication-Results: mx.sender.example; spf=pass",
    "Subject: hi",
    "",
    "Authentication-Results: gw.corp.example; body text is not a header",
    "",
  ].join("\r\n");
  const out = dec(applyAuthResults(enc(original), "gw.corp.example", "gw.corp.example; spf=fail"));
  assert.equal(
    out,
    [
      "Authentication-Results: gw.corp.example; spf=fail",
      "Received: from x by y",
      "Authentication-Results: mx.sender.example; spf=pass",
      "Subject: hi",
      "",
      "Authentication-Results: gw.corp.example; body text is not a header",
      "",
    ].join("\r\n"),
  );
  // Nothing to remove and nothing to add: the same bytes (the same object).
  const clean = enc("Subject: x\r\n\r\nbody\r\n");
  assert.equal(applyAuthResults(clean, "gw.corp.example"), clean);
  // Only removal (add_header: false).
  assert.equal(
    dec(applyAuthResults(enc(original), "gw.corp.example")).split("\r\n")[0],
    "Received: from x by y",
  );
});

Deno.test("formatAuthResults writes printable ASCII, folds under 78 characters, never past 998", () => {
  const long = "gw.corp.example; " + Array.from({ length: 40 }, (_, i) => `spf=pass${i}`).join(" ");
  const field = formatAuthResults(long);
  assert.ok(field.endsWith("\r\n"));
  for (const line of field.slice(0, -2).split("\r\n")) assert.ok(line.length <= 78, line);
  assert.equal(field.replace(/\r\n /g, " ").trimEnd(), `Authentication-Results: ${long}`);
  // Attacker text: CR/LF and controls become spaces, non-ASCII becomes "?" — no header injection.
  const evil = formatAuthResults("gw.corp.example; spf=pass smtp.mailfrom=a\r\nBcc: x@y.example ü");
  assert.equal(
    evil,
    "Authentication-Results: gw.corp.example; spf=pass smtp.mailfrom=a Bcc:\r\n x@y.example ?\r\n",
  );
  const huge = formatAuthResults("gw.corp.example; " + "x".repeat(5000));
  for (const line of huge.split("\r\n")) assert.ok(line.length <= 998);
});

Deno.test("GatewayActions.transform adds our header after the tag and strips forged ones", () => {
  const actions = new GatewayActions({
    hostname: "gw.corp.example",
    relay: { connectTimeout: 1, replyTimeout: 1, dataTimeout: 1 } as never,
    connect: () => Promise.reject(new Error("unused")),
    log: new MemoryLog(),
  });
  const msg = enc(
    "Authentication-Results: gw.corp.example; dmarc=pass\r\nX-SSG-Verdict: clean\r\nSubject: s\r\n\r\nb\r\n",
  );
  const out = dec(actions.transform(msg, {
    action: "forward",
    tag: { headers: [{ name: "X-Spam-Flag", value: "YES" }] },
    authResults: { authservId: "gw.corp.example", value: "gw.corp.example; dmarc=fail" },
  }));
  assert.equal(
    out,
    "Authentication-Results: gw.corp.example; dmarc=fail\r\nX-Spam-Flag: YES\r\nSubject: s\r\n\r\nb\r\n",
  );
});
