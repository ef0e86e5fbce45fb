/**
 * DNS lists end to end (issue 10), against the built `dist/ssg`, in network namespaces
 * (test/netns/topology.ts), with a real dnsmasq inside the gateway namespace:
 *
 *   client ns                        gateway ns                              server ns
 *   192.0.2.10 (unlisted)  ── veth ── dist/ssg run <rules> ──── veth ────── smtp-sink on
 *   192.0.2.66 (bl.test)                │ UDP 127.0.0.1:5353                 198.51.100.25
 *   192.0.2.88 (bl.test + wl.test)      ▼                                  2001:db8:25::25
 *   2001:db8:1::66 (bl.test)
 *   swaks --local-interface        dnsmasq (lists the test writes; no upstream, no /etc/hosts)
 *
 * The listed client is rejected with the rule's reply (the server gets nothing), the unlisted one
 * is delivered intact, and the one also on the allow list (negative weight) passes; an IPv6
 * client listed under its 32 reversed nibbles is rejected too. Each list is
 * asked once per client name: the look-up started at connect is the one the judge uses. Needs
 * root, dnsmasq and `./build.sh` first; ignored with the reason otherwise.
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
import { DNSBL_RECORDS, startDnsmasq } from "../engines/dns_fixture.ts";
import { reversedIp } from "../../src/engines/dns/dnsbl_checker.ts";

if (canRunNetns()) requireSsgBinary();

const LISTED_TEXT = "Client listed in a DNS blocklist (ssg e2e test rule)";
const DNS_SECTIONS = `dns: { servers: ["127.0.0.1:5353"], timeout: 2s }
dnsbl:
  client: ["bl.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-5"]
  timeout: 5s
`;
const DNSBL_RULE = `  - name: dnsbl
    when: { dnsbl: { score_at_least: 3 } }
    action: reject
    reply: { code: 554, enhanced: "5.7.1", text: ${JSON.stringify(LISTED_TEXT)} }
`;
const MESSAGE = simpleMessage("Quarterly report", "The figures are attached.", "dnsbl-e2e");

e2e(
  "through the gateway: a DNSBL-listed client (IPv4 and IPv6) is rejected, an unlisted one delivered intact, a DNSWL-listed one passes",
  { extraRules: DNSBL_RULE, extraSections: DNS_SECTIONS },
  async (w) => {
    const { t } = w;
    for (const cidr of ["192.0.2.66/24", "192.0.2.88/24"]) {
      const r = await t.exec(t.ns.client, ["ip", "addr", "add", cidr, "dev", "eth0"]);
      assert.equal(r.code, 0, r.stderr);
    }
    const v6 = await t.exec(t.ns.client, [
      "ip",
      "addr",
      "add",
      "2001:db8:1::66/64",
      "dev",
      "eth0",
      "nodad",
    ]);
    assert.equal(v6.code, 0, v6.stderr);
    const v6Name = `${reversedIp("2001:db8:1::66")}.bl.test`;
    const dns = await startDnsmasq([...DNSBL_RECORDS, `host-record=${v6Name},127.0.0.2`], {
      netns: t.ns.gateway,
      address: "127.0.0.1",
      port: 5353,
    });
    try {
      const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
      const sink6 = await startSink(t, t.addr.server6, join(w.dir, "sink6"));
      const ssg = await w.startSsg();
      try {
        const data = await w.message("m.eml", MESSAGE);
        const send = (from: string, server: string = t.addr.server4) =>
          swaks(t, {
            server,
            to: ["b@example.net"],
            dataFile: data,
            extra: ["--local-interface", from],
          });

        // 1. Listed in bl.test (+3): rejected with the rule's reply; the server gets nothing.
        const listed = await send("192.0.2.66");
        const r1 = finalReply(listed.transcript);
        assert.equal(r1?.code, 554, `listed client rejected\n${listed.transcript}`);
        assert.match(r1?.text ?? "", /5\.7\.1 Client listed in a DNS blocklist/);
        assert.ok(
          await eventually(() =>
            /\bpolicy\.verdict\b.*rule="?dnsbl\b.*bl\.test: client 192\.0\.2\.66 → 127\.0\.0\.2/
              .test(ssg.log())
          ),
          "the verdict names the zone and the answer",
        );
        assert.deepEqual(await readSinkDumps(sink.dir), [], "the server received nothing");

        // 2. Unlisted: delivered byte-identical apart from SSG's Received header.
        const clean = await send("192.0.2.10");
        assert.equal(finalReply(clean.transcript)?.code, 250, clean.transcript);
        let dumps = await readSinkDumps(sink.dir);
        assert.equal(dumps.length, 1, "the unlisted client's message was delivered");
        assertForwardedIntact(dumps[0], MESSAGE, "192.0.2.10");

        // 3. Listed in bl.test (+3) and in the allow list wl.test (-5): score -2, delivered.
        const allowed = await send("192.0.2.88");
        assert.equal(finalReply(allowed.transcript)?.code, 250, allowed.transcript);
        dumps = await readSinkDumps(sink.dir);
        assert.equal(dumps.length, 2, "the allowlisted client's message was delivered");
        await ssg.assertLog(/\bpolicy\.verdict\b.*\bdnsbl_score=-2\b/);

        // 4. An IPv6 client listed under its reversed nibbles: rejected.
        const listed6 = await send("2001:db8:1::66", t.addr.server6);
        assert.equal(finalReply(listed6.transcript)?.code, 554, listed6.transcript);
        assert.deepEqual(await readSinkDumps(sink6.dir), [], "the IPv6 server received nothing");
        assert.equal(await dns.queries(v6Name), 1);

        // One query per list and client: the connect-time look-up served the judge.
        for (const ip of ["66.2.0.192", "10.2.0.192", "88.2.0.192"]) {
          assert.equal(await dns.queries(`${ip}.bl.test`), 1, `${ip}.bl.test`);
          assert.equal(await dns.queries(`${ip}.wl.test`), 1, `${ip}.wl.test`);
        }
      } finally {
        await sink.stop();
        await sink6.stop();
      }
    } finally {
      await dns.stop();
    }
  },
);
