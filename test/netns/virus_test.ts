/**
 * Virus scanning end to end (issue 10), against the built `dist/ssg`, in network namespaces
 * (test/netns/topology.ts), with a real clamd on the host side:
 *
 *   client ns                     gateway ns                           server ns
 *   192.0.2.10  ──── veth ──────  dist/ssg run <rules>  ──── veth ──── smtp-sink on
 *   swaks                           │ INSTREAM over a Unix socket        198.51.100.25
 *                                   ▼
 *                       clamd (host, test-written signature DB; the gateway namespace shares the
 *                       host's file system, so the socket path works across namespaces)
 *
 * swaks sends the EICAR file as an attachment (rejected with the rule's reply; the server gets
 * nothing), a clean message (delivered byte-identical apart from SSG's Received header), and,
 * with clamd stopped, a clean message again (4xx, not delivered: what SSG could not scan never
 * passes). Needs root, clamav-daemon and `./build.sh` first; ignored with the reason otherwise.
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
  ruleFileText,
  simpleMessage,
  startSink,
  swaks,
} from "./helpers.ts";
import { EICAR, startClamd } from "../engines/clamd_fixture.ts";

if (canRunNetns()) requireSsgBinary();

const VIRUS_TEXT = "Virus found in the message (ssg e2e test rule)";
const VIRUS_RULE = `  - name: no-viruses
    when: { virus: true }
    action: reject
    reply: { code: 554, enhanced: "5.7.1", text: ${JSON.stringify(VIRUS_TEXT)} }
`;
const CLEAN = simpleMessage("Minutes of the meeting", "Attached are the minutes.", "virus-clean");

e2e(
  "through the gateway: an EICAR attachment is rejected with the rule's reply, a clean message is delivered intact, and with clamd stopped a clean message gets 451 and is not delivered",
  { extraRules: VIRUS_RULE },
  async (w) => {
    const { t } = w;
    const clamd = await startClamd();
    try {
      // The socket exists only now: the rule file gets its clamav: section before SSG starts.
      await Deno.writeTextFile(
        w.ruleFile,
        ruleFileText({
          ...w.ruleOptions,
          extraSections: `clamav:\n  socket: ${JSON.stringify(clamd.socket)}\n  timeout: 10s\n`,
        }),
      );
      const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
      const ssg = await w.startSsg();
      try {
        // 1. EICAR as an attachment, MIME-encoded by swaks itself.
        const eicar = await w.message("eicar.com", EICAR);
        const infected = await swaks(t, {
          server: t.addr.server4,
          to: ["b@example.net"],
          extra: ["--attach", `@${eicar}`],
        });
        const r1 = finalReply(infected.transcript);
        assert.equal(r1?.code, 554, `EICAR is rejected\n${infected.transcript}`);
        assert.match(
          r1?.text ?? "",
          new RegExp(`5\\.7\\.1 ${VIRUS_TEXT.replaceAll(/[()]/g, "\\$&")}`),
        );
        assert.ok(
          await eventually(() =>
            /\bpolicy\.verdict\b.*rule="?no-viruses.*Test\.EICAR-HDB\.UNOFFICIAL/.test(ssg.log())
          ),
          "the verdict names the rule and the signature",
        );
        assert.deepEqual(await readSinkDumps(sink.dir), [], "the server received nothing");

        // 2. A clean message: scanned, forwarded, byte-identical apart from the Received header.
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
        await ssg.assertLog(/\bpolicy\.verdict\b.*\bscan="?clean\b/);

        // 3. clamd stopped: the clean message is not scanned, so it gets 451 and is kept back.
        await clamd.stop();
        const down = await swaks(t, {
          server: t.addr.server4,
          to: ["b@example.net"],
          dataFile: clean,
        });
        const r3 = finalReply(down.transcript);
        assert.equal(r3?.code, 451, `clamd down: tempfail\n${down.transcript}`);
        assert.match(r3?.text ?? "", /4\.3\.0 Virus scan unavailable, try again later/);
        assert.ok(
          await eventually(() =>
            /\bpolicy\.verdict\b.*virus-scan-failed.*clamd\.sock/.test(ssg.log())
          ),
          "the verdict and the reason are logged",
        );
        assert.equal((await readSinkDumps(sink.dir)).length, 1, "nothing more was delivered");
      } finally {
        await sink.stop();
      }
    } finally {
      await clamd.stop();
    }
  },
);
