/**
 * Rspamd scoring end to end (issue 10), against the built `dist/ssg`, in network namespaces
 * (test/netns/topology.ts), with a real Rspamd inside the gateway namespace:
 *
 *   client ns                     gateway ns                           server ns
 *   192.0.2.10  ──── veth ──────  dist/ssg run <rules>  ──── veth ──── smtp-sink on
 *   swaks                           │ POST /checkv2 to 127.0.0.1:11333   198.51.100.25
 *                                   ▼
 *                       rspamd -f (test-written config: normal worker on the namespace's
 *                       loopback, no Lua rules, no redis, no network)
 *
 * swaks sends a message carrying the GTUBE string (Rspamd says reject; the rule rejects with its
 * own reply; the server gets nothing), a clean message (delivered byte-identical apart from SSG's
 * Received header), and, with Rspamd stopped, the clean message again (451, not delivered: what
 * was not scored never passes as clean). Needs root, rspamd and `./build.sh` first; ignored with
 * the reason otherwise.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { canRunNetns } from "./topology.ts";
import {
  assertForwardedIntact,
  e2e,
  eventually,
  finalReply,
  readSinkDumps,
  requireSsgBinary,
  simpleMessage,
  startSink,
  swaks,
} from "./helpers.ts";
import { GTUBE, startRspamd } from "../engines/rspamd_fixture.ts";

if (canRunNetns()) requireSsgBinary();

const SPAM_TEXT = "Rejected as spam (ssg e2e test rule)";
const SPAM_RULE = `  - name: rspamd-says-reject
    when: { rspamd: { action: reject } }
    action: reject
    reply: { code: 550, enhanced: "5.7.1", text: ${JSON.stringify(SPAM_TEXT)} }
`;
const CLEAN = simpleMessage("Minutes of the meeting", "Attached are the minutes.", "rspamd-clean");
const SPAM = simpleMessage("Special offer", `Buy now.\r\n${GTUBE}`, "rspamd-gtube");
const PORT = 11333;

e2e(
  "through the gateway: a GTUBE message is rejected by an rspamd rule, a clean message is delivered intact, and with rspamd stopped a clean message gets 451 and is not delivered",
  {
    extraRules: SPAM_RULE,
    extraSections: `rspamd:\n  address: 127.0.0.1:${PORT}\n  timeout: 20s\n`,
  },
  async (w) => {
    const { t } = w;
    const rspamd = await startRspamd({ netns: t.ns.gateway, port: PORT });
    try {
      const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
      const ssg = await w.startSsg();
      try {
        // 1. GTUBE: Rspamd recommends reject, the rule answers with its own reply.
        const spam = await swaks(t, {
          server: t.addr.server4,
          to: ["b@example.net", "c@example.net"],
          dataFile: await w.message("spam.eml", SPAM),
        });
        const r1 = finalReply(spam.transcript);
        assert.equal(r1?.code, 550, `GTUBE is rejected\n${spam.transcript}`);
        assert.match(
          r1?.text ?? "",
          new RegExp(`5\\.7\\.1 ${SPAM_TEXT.replaceAll(/[()]/g, "\\$&")}`),
        );
        assert.ok(
          await eventually(() =>
            /\bpolicy\.verdict\b.*rule="?rspamd-says-reject.*\(reject\); symbols .*GTUBE/.test(
              ssg.log(),
            )
          ),
          "the verdict names the rule, Rspamd's action and the symbol",
        );
        assert.deepEqual(await readSinkDumps(sink.dir), [], "the server received nothing");
        // Rspamd got the envelope: the client's address and both recipients.
        const rlog = await Deno.readTextFile(join(rspamd.dir, "rspamd.log"));
        assert.match(rlog, new RegExp(`ip: ${t.addr.client4.replaceAll(".", "\\.")}, `));
        assert.match(rlog, /rcpts: <b@example\.net,c@example\.net>/);

        // 2. A clean message: scored, forwarded, byte-identical apart from the Received header.
        const clean = await w.message("clean.eml", CLEAN);
        const ok = await swaks(t, {
          server: t.addr.server4,
          to: ["b@example.net"],
          dataFile: clean,
        });
        assert.equal(finalReply(ok.transcript)?.code, 250, `clean mail passes\n${ok.transcript}`);
        const dumps = await readSinkDumps(sink.dir);
        assert.equal(dumps.length, 1, "the clean message was delivered");
        assertForwardedIntact(dumps[0], CLEAN, t.addr.client4);
        await ssg.assertLog(/\bpolicy\.verdict\b.*\(no action\)/);

        // 3. Rspamd stopped: the clean message is not scored, so it gets 451 and is kept back.
        await rspamd.stop();
        const down = await swaks(t, {
          server: t.addr.server4,
          to: ["b@example.net"],
          dataFile: clean,
        });
        const r3 = finalReply(down.transcript);
        assert.equal(r3?.code, 451, `rspamd down: tempfail\n${down.transcript}`);
        assert.match(r3?.text ?? "", /4\.3\.0 Spam check unavailable, try again later/);
        assert.ok(
          await eventually(() => /\bpolicy\.verdict\b.*rspamd-failed.*11333/.test(ssg.log())),
          "the verdict and the reason are logged",
        );
        assert.equal((await readSinkDumps(sink.dir)).length, 1, "nothing more was delivered");
      } finally {
        await sink.stop();
      }
    } finally {
      await rspamd.stop();
    }
  },
);
