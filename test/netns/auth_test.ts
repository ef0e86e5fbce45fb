/**
 * Sender authentication end to end (issue 10), against the built `dist/ssg`, in network
 * namespaces (test/netns/topology.ts), with a real dnsmasq inside the gateway namespace serving
 * SPF, DKIM key and DMARC records the test writes:
 *
 *   client ns                     gateway ns                              server ns
 *   192.0.2.10  ──── veth ──────  dist/ssg run <rules>  ───── veth ────── smtp-sink on
 *   swaks                           │ UDP 127.0.0.1                        198.51.100.25
 *                                   ▼
 *                           dnsmasq (test zone: example.org SPF ip4:192.0.2.0/24 -all,
 *                           sel._domainkey DKIM key, _dmarc p=reject; soft.example.net ~all)
 *
 * 1. An unsigned message From example.org sent with MAIL FROM of soft.example.net (SPF softfail,
 *    not aligned): DMARC fails with p=reject → the rule's 550; the server gets nothing.
 * 2. A message the test DKIM-signed for example.org, carrying a forged Authentication-Results
 *    with our authserv-id and a genuine-looking one of another host: delivered; the server sees
 *    SSG's Received, then our Authentication-Results (spf=pass, dkim=pass, dmarc=pass), the
 *    forged field gone, the other host's field kept, everything else byte-identical.
 * Needs root, dnsmasq, postfix (smtp-sink), swaks and `./build.sh` first; ignored otherwise.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { canRunNetns } from "./topology.ts";
import {
  asSent,
  e2e,
  eventually,
  finalReply,
  lf,
  readSinkDumps,
  requireSsgBinary,
  ruleFileText,
  splitFirstHeader,
  startSink,
  swaks,
} from "./helpers.ts";
import { startDnsmasq } from "../engines/dns_fixture.ts";
import { authZone, dkimSigned, makeKey, message } from "../engines/auth_fixture.ts";

if (canRunNetns()) requireSsgBinary();

const DMARC_TEXT = "Rejected by the DMARC policy of the From domain (ssg e2e test rule)";
const DMARC_RULE = `  - name: dmarc-reject
    when: { dmarc: { result: fail, policy: reject } }
    action: reject
    reply: { code: 550, enhanced: "5.7.1", text: ${JSON.stringify(DMARC_TEXT)} }
`;
const AUTHSERV = "ssg.gateway.test";

e2e(
  "through the gateway: a DMARC-failing message is rejected by a rule; a signed one is delivered with our Authentication-Results and a forged one with our id removed",
  { extraRules: DMARC_RULE },
  async (w) => {
    const { t } = w;
    const keys = { org: makeKey(), arc: makeKey() };
    const dns = await startDnsmasq(authZone(keys), { netns: t.ns.gateway, address: "127.0.0.1" });
    try {
      await Deno.writeTextFile(
        w.ruleFile,
        ruleFileText({
          ...w.ruleOptions,
          extraSections: `dns:\n  servers: ["${dns.server}"]\n  timeout: 2s\n` +
            `auth:\n  timeout: 10s\n`,
        }),
      );
      const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
      const ssg = await w.startSsg();
      try {
        // 1. DMARC fail, p=reject: SPF softfails for soft.example.net, nothing aligns with From.
        const forged = await w.message("forged.eml", message("ceo@example.org", "Wire transfer"));
        const bad = await swaks(t, {
          server: t.addr.server4,
          from: "bob@soft.example.net",
          helo: "mx.soft.example.net",
          to: ["b@example.net"],
          dataFile: forged,
        });
        const r1 = finalReply(bad.transcript);
        assert.equal(r1?.code, 550, `DMARC fail is rejected\n${bad.transcript}`);
        assert.match(r1?.text ?? "", /5\.7\.1 Rejected by the DMARC policy/);
        assert.ok(
          await eventually(() =>
            /\bpolicy\.verdict\b.*rule="?dmarc-reject.*auth="?spf=softfail,dkim=none,dmarc=fail:reject/
              .test(ssg.log())
          ),
          "the verdict names the rule and the results",
        );
        assert.deepEqual(await readSinkDumps(sink.dir), [], "the server received nothing");

        // 2. Signed and SPF-authorised; a forged field with our id on top, another host's kept.
        const signed = await dkimSigned(message("alice@example.org", "Minutes"), keys.org);
        const other =
          "Authentication-Results: mx.sender.example; spf=pass smtp.mailfrom=example.org\r\n";
        const sent = `Authentication-Results: ${AUTHSERV}; dmarc=pass (forged by the sender)\r\n` +
          other + signed;
        const file = await w.message("signed.eml", sent);
        const ok = await swaks(t, {
          server: t.addr.server4,
          from: "alice@example.org",
          helo: "mx.example.org",
          to: ["b@example.net"],
          dataFile: file,
        });
        assert.equal(finalReply(ok.transcript)?.code, 250, `signed mail passes\n${ok.transcript}`);
        const dumps = await readSinkDumps(sink.dir);
        assert.equal(dumps.length, 1, "the signed message was delivered");
        const [received, rest] = splitFirstHeader(dumps[0].message);
        assert.match(received, /^Received: from mx\.example\.org /);
        const [ar, body] = splitFirstHeader(rest);
        assert.match(
          ar,
          new RegExp(`^Authentication-Results: ${AUTHSERV.replaceAll(".", "\\.")};`),
        );
        const unfolded = ar.replace(/\n[ \t]+/g, " ");
        assert.match(unfolded, /dkim=pass header\.i=@example\.org header\.s=sel/);
        assert.match(unfolded, /spf=pass .*smtp\.mailfrom=alice@example\.org/);
        assert.match(unfolded, /dmarc=pass .*header\.from=example\.org/);
        assert.doesNotMatch(body, /forged by the sender/, "the forged field with our id is gone");
        assert.equal(body, lf(asSent(other + signed)), "the rest is byte-identical");
      } finally {
        await sink.stop();
      }
    } finally {
      await dns.stop();
    }
  },
);
