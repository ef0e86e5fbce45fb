import assert from "node:assert/strict";
import { COMMAND_TABLE, type CommandHandlers } from "../../src/smtp/command_table.ts";

/** A CommandHandlers that records which method ran with which argument. */
function recorder(): CommandHandlers & { calls: string[] } {
  const calls: string[] = [];
  const rec = (name: string) => (arg: string) => {
    calls.push(`${name}(${arg})`);
    return Promise.resolve();
  };
  return {
    calls,
    ehlo: rec("ehlo"),
    helo: rec("helo"),
    mail: rec("mail"),
    rcpt: rec("rcpt"),
    data: rec("data"),
    bdat: rec("bdat"),
    auth: rec("auth"),
    query: (verb: string, arg: string) => {
      calls.push(`query(${verb},${arg})`);
      return Promise.resolve();
    },
    rset: rec("rset"),
    noop: rec("noop"),
    quit: rec("quit"),
    vrfy: rec("vrfy"),
    help: rec("help"),
    starttls: rec("starttls"),
    notImplemented: rec("notImplemented"),
    forbidden: rec("forbidden"),
  };
}

Deno.test("COMMAND_TABLE sends each implemented verb to its own handler", async () => {
  const verbs = [
    "EHLO",
    "HELO",
    "MAIL",
    "RCPT",
    "DATA",
    "BDAT",
    "AUTH",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY",
    "HELP",
    "STARTTLS",
  ];
  for (const verb of verbs) {
    const h = recorder();
    await COMMAND_TABLE.get(verb)!.run(h, "arg", verb);
    assert.deepEqual(h.calls, [`${verb.toLowerCase()}(arg)`]);
  }
});

Deno.test("COMMAND_TABLE sends EXPN and ETRN to query (the mirrored server answers them)", async () => {
  for (const verb of ["EXPN", "ETRN"]) {
    const h = recorder();
    await COMMAND_TABLE.get(verb)!.run(h, "staff", verb);
    assert.deepEqual(h.calls, [`query(${verb},staff)`]);
  }
});

Deno.test("COMMAND_TABLE answers known-but-not-offered verbs with notImplemented, HTTP with forbidden", async () => {
  for (const verb of ["TURN", "XCLIENT", "VERB"]) {
    const h = recorder();
    await COMMAND_TABLE.get(verb)!.run(h, "", verb);
    assert.deepEqual(h.calls, [`notImplemented(${verb})`]);
  }
  for (const verb of ["GET", "POST", "CONNECT"]) {
    const h = recorder();
    await COMMAND_TABLE.get(verb)!.run(h, "", verb);
    assert.deepEqual(h.calls, [`forbidden(${verb})`]);
  }
});

Deno.test("COMMAND_TABLE flushes after the RFC 2920 group-ending commands only", () => {
  const buffered = [...COMMAND_TABLE].filter(([, e]) => !e.flush).map(([v]) => v).sort();
  assert.deepEqual(buffered, ["BDAT", "MAIL", "RCPT", "RSET"]);
});

Deno.test("COMMAND_TABLE has no entry for names that are not SMTP verbs", () => {
  for (const name of ["CONSTRUCTOR", "TOSTRING", "__PROTO__", "EHLOX", ""]) {
    assert.equal(COMMAND_TABLE.get(name), undefined);
  }
});
