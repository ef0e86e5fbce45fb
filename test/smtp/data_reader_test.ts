import assert from "node:assert/strict";
import { DataReader, type DataReaderOptions } from "../../src/smtp/data_reader.ts";
import { bytes, text } from "./harness.ts";
import { SMUGGLING_SEQUENCES } from "./smuggling_sequences.ts";

const OPTS: DataReaderOptions = {
  maxMessageBytes: 10_000,
  maxTextLine: 1000,
  bareLineEndings: "reject",
};

/** Feeds `input` in one chunk; returns the reader and the unconsumed tail. */
function decode(input: string, opts: Partial<DataReaderOptions> = {}) {
  const dr = new DataReader({ ...OPTS, ...opts });
  const b = bytes(input);
  const used = dr.push(b);
  return { dr, rest: text(b.subarray(used)), content: text(dr.message()) };
}

const SMUGGLED = "MAIL FROM:<ceo@trusted.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n" +
  "Subject: smuggled\r\n\r\nevil\r\n";

Deno.test("DataReader ends only at CRLF.CRLF and keeps the bytes after it for the next command", () => {
  const { dr, rest, content } = decode("Subject: a\r\n\r\nbody\r\n.\r\nQUIT\r\n");
  assert.equal(dr.done, true);
  assert.equal(content, "Subject: a\r\n\r\nbody\r\n");
  assert.equal(rest, "QUIT\r\n");
  assert.equal(dr.rejected, false);
});

Deno.test("DataReader treats '.' CRLF right after DATA as an empty message", () => {
  const { dr, content, rest } = decode(".\r\nNOOP\r\n");
  assert.equal(dr.done, true);
  assert.equal(content, "");
  assert.equal(rest, "NOOP\r\n");
});

for (const [name, seq] of SMUGGLING_SEQUENCES) {
  Deno.test(`DataReader does not end data at smuggling sequence ${name} (reject policy)`, () => {
    // The attacker's payload: a fake end, then a second transaction ending in a real CRLF.CRLF.
    const head = "Subject: x\r\n\r\nbody" + seq + SMUGGLED;
    assert.equal(decode(head).dr.done, false, "must not end at the smuggling sequence");
    const { dr, rest } = decode(head + ".\r\nQUIT\r\n");
    assert.equal(dr.done, true);
    assert.equal(rest, "QUIT\r\n", "ends only at the real CRLF.CRLF");
    assert.equal(dr.rejected, true);
    assert.equal(text(dr.message()), "");
  });

  Deno.test(`DataReader does not end data at smuggling sequence ${name} (normalize policy)`, () => {
    const input = "Subject: x\r\n\r\nbody" + seq + SMUGGLED + ".\r\nQUIT\r\n";
    const { dr, rest, content } = decode(input, { bareLineEndings: "normalize" });
    assert.equal(dr.done, true);
    assert.equal(rest, "QUIT\r\n");
    if (seq.includes("\x00")) {
      assert.equal(dr.rejected, true, "NUL is refused under both policies");
      return;
    }
    assert.equal(dr.rejected, false);
    // The smuggled commands stayed inside the one message, and no bare CR or LF is left.
    assert.ok(content.includes("MAIL FROM:<ceo@trusted.example>"));
    assert.equal(/\r(?!\n)|(?<!\r)\n/.test(content), false, JSON.stringify(content));
  });
}

Deno.test("DataReader gives the same result however the input is split into chunks", () => {
  const inputs = SMUGGLING_SEQUENCES.map(([, seq]) => "a\r\n..b\r\n" + seq + "c\r\n.\r\nQUIT\r\n")
    .concat(["Subject: a\r\n\r\n.\r\n", "x\r\n.\r\n", "\r\n.\r\n", "..\r\n.\r\n"]);
  for (const policy of ["reject", "normalize"] as const) {
    for (const input of inputs) {
      const whole = decode(input, { bareLineEndings: policy });
      const b = bytes(input);
      for (let cut = 1; cut < b.length; cut++) {
        const dr = new DataReader({ ...OPTS, bareLineEndings: policy });
        let used = dr.push(b.subarray(0, cut));
        if (!dr.done) used += dr.push(b.subarray(cut));
        assert.equal(
          used,
          b.length - whole.rest.length,
          `split at ${cut} of ${JSON.stringify(input)}`,
        );
        assert.equal(text(dr.message()), whole.content);
        assert.deepEqual(dr.defects, whole.dr.defects);
      }
      // One byte per chunk.
      const dr = new DataReader({ ...OPTS, bareLineEndings: policy });
      let used = 0;
      for (let i = 0; i < b.length && !dr.done; i++) used += dr.push(b.subarray(i, i + 1));
      assert.equal(used, b.length - whole.rest.length);
      assert.equal(text(dr.message()), whole.content);
    }
  }
});

Deno.test("DataReader removes exactly one transparency dot (RFC 5321 §4.5.2)", () => {
  const cases: [string, string][] = [
    ["..\r\n", ".\r\n"],
    ["...\r\n", "..\r\n"],
    [".foo\r\n", "foo\r\n"],
    ["..foo\r\n", ".foo\r\n"],
    ["a.b\r\n", "a.b\r\n"],
    ["x\r\n. \r\n", "x\r\n \r\n"],
  ];
  for (const [wire, content] of cases) {
    assert.equal(decode(wire + ".\r\n").content, content, JSON.stringify(wire));
  }
});

Deno.test("DataReader under 'normalize' turns each bare LF and bare CR into CRLF", () => {
  const cases: [string, string][] = [
    ["a\nb\r\n", "a\r\nb\r\n"],
    ["a\rb\r\n", "a\r\nb\r\n"],
    ["a\r\r\n", "a\r\n\r\n"],
    ["a\n.\nb\r\n", "a\r\n.\r\nb\r\n"], // the "." line after a bare LF is content, not an end
    ["a\n..b\r\n", "a\r\n.b\r\n"], // and is unstuffed like any line
    ["a\r\n.\nb\r\n", "a\r\n.\r\nb\r\n"],
    ["a\r\n.\rb\r\n", "a\r\n.\r\nb\r\n"],
  ];
  for (const [wire, content] of cases) {
    const { dr, content: got } = decode(wire + ".\r\n", { bareLineEndings: "normalize" });
    assert.equal(dr.done, true, JSON.stringify(wire));
    assert.equal(got, content, JSON.stringify(wire));
    assert.equal(dr.rejected, false);
  }
});

Deno.test("DataReader records bare LF, bare CR and NUL separately", () => {
  const cases: [string, Partial<Record<"bareLf" | "bareCr" | "nul", boolean>>][] = [
    ["a\nb\r\n", { bareLf: true }],
    ["a\rb\r\n", { bareCr: true }],
    ["a\x00b\r\n", { nul: true }],
    ["a\r\n", {}],
  ];
  for (const [wire, want] of cases) {
    const { dr } = decode(wire + ".\r\n");
    assert.equal(dr.defects.bareLf, want.bareLf ?? false, JSON.stringify(wire));
    assert.equal(dr.defects.bareCr, want.bareCr ?? false, JSON.stringify(wire));
    assert.equal(dr.defects.nul, want.nul ?? false, JSON.stringify(wire));
  }
});

Deno.test("DataReader text line limit: 999 and 1000 octets pass, 1001 is refused", () => {
  for (const [total, rejected] of [[999, false], [1000, false], [1001, true]] as const) {
    const line = "x".repeat(total - 2) + "\r\n";
    const { dr } = decode(line + ".\r\n");
    assert.equal(dr.defects.lineTooLong, rejected, `line of ${total}`);
    assert.equal(dr.rejected, rejected);
  }
  // The transparency dot is not counted (RFC 5321 §4.5.3.1.6).
  const stuffed = "." + ".".repeat(998) + "\r\n";
  assert.equal(decode(stuffed + ".\r\n").dr.rejected, false);
});

Deno.test("DataReader size limit: limit-1 and limit pass, limit+1 is refused but read to the end", () => {
  const max = 100;
  for (const [size, rejected] of [[max - 1, false], [max, false], [max + 1, true]] as const) {
    const body = "y".repeat(size - 2) + "\r\n";
    const { dr, rest, content } = decode(body + ".\r\nQUIT\r\n", { maxMessageBytes: max });
    assert.equal(dr.done, true);
    assert.equal(rest, "QUIT\r\n");
    assert.equal(dr.size, size);
    assert.equal(dr.defects.overSize, rejected, `size ${size}`);
    assert.equal(content, rejected ? "" : body);
  }
});

Deno.test("DataReader keeps counting past the size limit without storing", () => {
  const dr = new DataReader({ ...OPTS, maxMessageBytes: 10 });
  const chunk = bytes("z".repeat(500) + "\r\n");
  for (let i = 0; i < 100; i++) dr.push(chunk);
  dr.push(bytes(".\r\n"));
  assert.equal(dr.done, true);
  assert.equal(dr.size, 502 * 100);
  assert.equal(dr.message().length, 0);
});

Deno.test("DataReader raw (BDAT): dots and CRLF.CRLF are content; the end is finish(); every smuggling sequence stays content", () => {
  for (const [name, seq] of SMUGGLING_SEQUENCES) {
    const dr = new DataReader({ ...OPTS, bareLineEndings: "normalize", raw: true });
    const input = "a\r\n.\r\n..b" + seq + "c\r\n";
    const used = dr.push(bytes(input));
    assert.equal(used, bytes(input).length, name);
    assert.equal(dr.done, false, name);
    dr.finish();
    assert.equal(dr.done, true, name);
    if (seq.includes("\0")) assert.equal(dr.rejected, true, name); // NUL: refused, as for DATA
    else assert.ok(text(dr.message()).startsWith("a\r\n.\r\n..b"), name);
  }
});

Deno.test("DataReader raw: a message without a final CRLF is kept as it is; a trailing bare CR is recorded", () => {
  const dr = new DataReader({ ...OPTS, raw: true });
  dr.push(bytes("Subject: x\r\n\r\nno newline"));
  dr.finish();
  assert.equal(text(dr.message()), "Subject: x\r\n\r\nno newline");
  const cr = new DataReader({ ...OPTS, raw: true });
  cr.push(bytes("x\r"));
  cr.finish();
  assert.equal(cr.defects.bareCr, true);
  assert.equal(cr.rejected, true);
});

Deno.test("DataReader longLines pass: a line of 999, 1000 and 5000 octets is kept; under reject 1001 is a defect", () => {
  for (const n of [999, 1000, 1001, 5000]) {
    const line = "x".repeat(n - 2) + "\r\n";
    const pass = decode(line + ".\r\n", { longLines: "pass" });
    assert.equal(pass.dr.rejected, false, String(n));
    assert.equal(pass.content, line);
    const strict = decode(line + ".\r\n", { longLines: "reject" });
    assert.equal(strict.dr.defects.lineTooLong, n > 1000, String(n));
  }
});
