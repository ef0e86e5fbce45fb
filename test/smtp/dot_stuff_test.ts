import assert from "node:assert/strict";
import { dotStuff } from "../../src/smtp/dot_stuff.ts";
import { DataReader } from "../../src/smtp/data_reader.ts";
import { bytes, text } from "./harness.ts";

Deno.test("dotStuff doubles every leading dot and ends with .CRLF", () => {
  const cases: [string, string][] = [
    ["", ".\r\n"],
    ["a\r\n", "a\r\n.\r\n"],
    [".\r\n", "..\r\n.\r\n"],
    ["..\r\n", "...\r\n.\r\n"],
    [".foo\r\nbar\r\n.\r\n", "..foo\r\nbar\r\n..\r\n.\r\n"],
    ["a.b\r\n", "a.b\r\n.\r\n"],
    ["no newline", "no newline\r\n.\r\n"],
  ];
  for (const [content, wire] of cases) assert.equal(text(dotStuff(bytes(content))), wire);
});

Deno.test("dotStuff then DataReader gives back the original content exactly", () => {
  const contents = [
    "",
    ".\r\n",
    "..\r\n",
    ".foo\r\n..foo\r\n",
    "a\r\n.\r\nb\r\n",
    ".\r\n.\r\n.\r\n",
    "Subject: x\r\n\r\n. \r\n.x\r\n",
  ];
  for (const c of contents) {
    const dr = new DataReader({
      maxMessageBytes: 1000,
      maxTextLine: 1000,
      bareLineEndings: "reject",
    });
    const wire = dotStuff(bytes(c));
    assert.equal(dr.push(wire), wire.length);
    assert.equal(dr.done, true);
    assert.equal(text(dr.message()), c);
  }
});

Deno.test("dotStuff over several parts equals dotStuff over their concatenation", () => {
  const whole = "Received: x\r\n.a\r\nb.\r\n.\r\n..c\r\nd";
  for (let i = 0; i <= whole.length; i++) {
    for (let j = i; j <= whole.length; j += 3) {
      const parts = [whole.slice(0, i), whole.slice(i, j), whole.slice(j)].map(bytes);
      assert.equal(text(dotStuff(...parts)), text(dotStuff(bytes(whole))), `cuts ${i},${j}`);
    }
  }
});
