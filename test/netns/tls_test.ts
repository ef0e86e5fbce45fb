/**
 * STARTTLS end to end, against the built `dist/ssg`, in network namespaces (test/netns/topology.ts):
 *
 *   swaks --tls (client ns) ──TLS──▶ gateway ns: dist/ssg run <rules with smtp.tls> ──▶ smtp-sink
 *                                                                      (server ns, plaintext)
 *
 * smtp-sink offers no STARTTLS, so the relay leg stays in plaintext (opportunistic). Asserted on
 * what the real peers saw: swaks insists on TLS (`--tls` fails without it) and prints the
 * negotiated cipher; smtp-sink's dump shows the message with SSG's "with ESMTPS" Received header.
 * The certificate is a throwaway, test-only one made with openssl in the test's temp dir.
 *
 * Needs root (namespaces, NFQUEUE) and `./build.sh` first; ignored otherwise. SSG's output is
 * printed when the test fails.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { canRunNetns, createTopology } from "./topology.ts";
import {
  readSinkDumps,
  requireSsgBinary,
  ruleFileText,
  type SsgProcess,
  startSink,
  startSsg,
  swaks,
  tempDir,
} from "./helpers.ts";

const ignore = !canRunNetns();
if (!ignore) requireSsgBinary();

Deno.test({
  name:
    "swaks --tls through dist/ssg with smtp.tls: the client gets TLS, the server gets the message",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using t = await createTopology();
    await using tmp = await tempDir();
    const cert = join(tmp.path, "gw.crt");
    const key = join(tmp.path, "gw.key");
    const made = await new Deno.Command("openssl", {
      args: ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ssg.gateway.test"]
        .concat(["-days", "1", "-keyout", key, "-out", cert]),
      stdout: "null",
      stderr: "null",
    }).output();
    assert.ok(made.success, "openssl req");
    const logFile = join(tmp.path, "ssg.log");
    const ruleFile = join(tmp.path, "rules.yaml");
    await Deno.writeTextFile(
      ruleFile,
      ruleFileText({
        logFile,
        extraSections: `smtp:\n  tls: { cert: gw.crt, key: gw.key }\n`,
      }),
    );
    const sink = await startSink(t, t.addr.server4, join(tmp.path, "sink"));
    let ssg: SsgProcess | undefined;
    try {
      ssg = await startSsg(t, ruleFile, logFile);
      const msg = join(tmp.path, "m.eml");
      await Deno.writeTextFile(msg, "Subject: over TLS\r\n\r\nencrypted on the outside link\r\n");
      const r = await swaks(t, {
        server: t.addr.server4,
        to: ["b@example.net"],
        dataFile: msg,
        extra: ["--tls"],
      });
      assert.equal(r.code, 0, r.transcript);
      assert.match(r.transcript, /STARTTLS/);
      assert.match(r.transcript, /=== TLS started with cipher /, r.transcript);
      // Under TLS swaks marks lines "~>"/"<~" (finalReply() reads the plaintext arrows only).
      assert.match(r.transcript, /^ ~> \.\r?\n<~ {2}250 2\.0\.0 /m, r.transcript);
      const dumps = await readSinkDumps(sink.dir);
      assert.equal(dumps.length, 1, "exactly one message reached the server");
      assert.match(dumps[0].message, /^Received: from client\.example\.org /);
      assert.match(dumps[0].message, /by ssg\.gateway\.test \(SSG\) with ESMTPS id /);
      assert.match(dumps[0].message, /encrypted on the outside link/);
      await ssg.assertLog(/\bsmtp\.tls\b.*protocol/);
      const status = await ssg.stop("SIGTERM");
      assert.equal(status.code, 0, ssg.transcript());
    } catch (e) {
      console.error(`\n===== tls_test FAILED; what SSG said =====\n${ssg?.transcript() ?? ""}`);
      throw e;
    } finally {
      await ssg?.[Symbol.asyncDispose]();
      await sink.stop();
    }
  },
});
