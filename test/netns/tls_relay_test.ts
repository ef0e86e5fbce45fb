/**
 * STARTTLS on the relay leg against a real Postfix server (relay.starttls: opportunistic, the
 * default), end to end through `dist/ssg`: the sending Postfix → SSG → the server Postfix, which
 * offers STARTTLS with a throwaway certificate (harness in `interop.ts`). Asserted on what the
 * real peers logged and stored — the server logged a TLS 1.3 connection from the client's own
 * address (relay.source: client, the default) and stored the message; SSG logged the relay's
 * TLS — and, for the post-handshake stall (start_tls.ts), that several messages in a row all
 * arrive. No timing is asserted here: the per-message figures come from bench/e2e/tls_relay.ts.
 * Needs root and `./build.sh` first; ignored otherwise.
 */
import assert from "node:assert/strict";
import { canRunNetns } from "./topology.ts";
import { requireSsgBinary, startSsg } from "./helpers.ts";
import { deliverViaSender, withInteropWorld } from "./interop.ts";

const ignore = !canRunNetns();
if (!ignore) requireSsgBinary();

Deno.test({
  name: "SSG relays to a Postfix server that offers STARTTLS over TLS 1.3, message after message",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withInteropWorld({}, async (w) => {
      w.ssg = await startSsg(w.t, w.ruleFile, w.logFile);
      const from = w.server.logSize();
      for (let i = 0; i < 3; i++) {
        const o = await deliverViaSender(w, {
          from: "a@sender.test",
          rcpts: ["b@example.net"],
          messageId: `tls-${i}@sender.test`,
          subject: `over TLS ${i}`,
        });
        assert.deepEqual(o.senderStatus, ["b@example.net sent 2.0.0"], `message ${i}`);
        assert.equal(o.stored?.length, 1, `message ${i} stored`);
        assert.match(o.stored![0], new RegExp(`^Subject: over TLS ${i}$`, "m"));
      }
      const serverLog = w.server.logSince(from);
      const tls = [
        ...serverLog.matchAll(/TLS connection established from unknown\[192\.0\.2\.10\]: (\S+)/g),
      ];
      assert.equal(
        tls.length,
        3,
        `three TLS connections, from the client's address:\n${serverLog}`,
      );
      for (const m of tls) assert.equal(m[1], "TLSv1.3");
      await w.ssg.assertLog(/relay\.connect\b.*tls=.?TLSv1\.3/);
      assert.doesNotMatch(w.ssg.log(), /relay\.tls_failed/);
    });
  },
});
