/**
 * Smuggling with the new defaults and a mirrored server (issue 7): every fake end-of-data sequence
 * under `bare_line_endings: normalize`, sent with DATA and with BDAT, to a server that offers
 * CHUNKING/SMTPUTF8/DSN and to one that does not, ends in exactly one message whose smuggled
 * transaction is only text, with no bare CR or LF sent on.
 */
import assert from "node:assert/strict";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { FAKE_EHLO, transcript } from "./harness.ts";
import { SMUGGLING_SEQUENCES } from "./smuggling_sequences.ts";

const FULL_EHLO = "250-server.example\r\n250-PIPELINING\r\n250-SIZE 50000000\r\n250-8BITMIME\r\n" +
  "250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const SMUGGLED = "MAIL FROM:<ceo@trusted.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n" +
  "Subject: smuggled\r\n\r\nwire the money\r\n";
const ENV = "EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n";

function bare(s: string): boolean {
  return /\r(?!\n)|(?<!\r)\n/.test(s);
}

for (const [name, seq] of SMUGGLING_SEQUENCES) {
  if (seq.includes("\x00")) continue; // NUL is refused whatever the path (smuggling_test.ts)
  const body = "Subject: innocent\r\n\r\nhello" + seq + SMUGGLED;
  for (
    const [how, input] of [
      ["DATA", ENV + "DATA\r\n" + body + ".\r\nQUIT\r\n"],
      ["BDAT", ENV + `BDAT ${body.length} LAST\r\n` + body + "QUIT\r\n"],
    ] as const
  ) {
    for (const [server, ehlo] of [["CHUNKING server", FULL_EHLO], ["plain server", FAKE_EHLO]]) {
      if (how === "BDAT" && server === "plain server") continue; // BDAT is not offered there
      Deno.test(`Smuggling ${name} by ${how} to a mirrored ${server}: one message, the smuggled one only text`, async () => {
        const r = await transcript(input, {
          profiles: new ServerProfiles(),
          upstream: { ehlo },
          smtp: { bareLineEndings: "normalize", longLines: "pass" },
        });
        const s = r.servers[0];
        assert.equal(s.messages.length, 1, r.output);
        assert.deepEqual(s.commands.filter((c) => /^(MAIL|RCPT)/.test(c)), [
          "MAIL FROM:<alice@example.org>",
          "RCPT TO:<bob@example.net>",
        ]);
        assert.equal(bare(s.messages[0].wire), false, "no bare CR/LF sent on");
        assert.ok(s.messages[0].content.includes("ceo@trusted.example"), "kept as text");
        assert.equal(r.codes[r.codes.length - 1], 221);
      });
    }
  }
}
