// deno-lint-ignore-file no-control-regex -- the tests look for control characters on purpose
import assert from "node:assert/strict";
import {
  EXIT_TEMPFAIL,
  quarantineCommand,
  type QuarantineSettings,
  terminalSafe,
} from "../../src/action/quarantine_command.ts";
import { QuarantineStore } from "../../src/action/quarantine_store.ts";
import { FakeSmtpServer } from "./fake_smtp_server.ts";
import { bytes, envelope, loopbackConnect, RELAY, tempDir, text } from "./helpers.ts";

const MESSAGE = bytes(
  "Subject: \x1b[2Jlottery\r\nFrom: s@example.org\r\n\r\nbody \x1b]0;pwned\x07\r\n",
);

/** Runs the command with captured output and a settings loader pointing at `dir`. */
async function run(args: string[], dir: string | undefined, port = 1) {
  let out = new Uint8Array(0);
  let err = "";
  const loaded: string[] = [];
  const code = await quarantineCommand(args, {
    loadSettings: (file): Promise<QuarantineSettings> => {
      loaded.push(file);
      return Promise.resolve({
        quarantine: dir ? { dir } : undefined,
        relay: RELAY,
        hostname: "gw.example",
      });
    },
    connect: loopbackConnect(port),
    stdout: (b) => {
      const n = new Uint8Array(out.length + b.length);
      n.set(out);
      n.set(b, out.length);
      out = n;
    },
    stderr: (b) => err += text(b),
  });
  return { code, out, stdout: text(out), stderr: err, loaded };
}

Deno.test("ssg quarantine usage errors exit 2", async () => {
  const cases: string[][] = [
    [],
    ["list"], // no --rules
    ["frobnicate", "--rules", "r.yaml"],
    ["show", "--rules", "r.yaml"], // no id
    ["delete", "a", "b", "--rules", "r.yaml"],
    ["list", "x", "--rules", "r.yaml"],
    ["list", "--raw", "--rules", "r.yaml"],
    ["list", "--rules"],
  ];
  for (const args of cases) {
    const r = await run(args, "/nonexistent");
    assert.equal(r.code, 2, args.join(" "));
    assert.match(r.stderr, /Usage:/);
  }
});

Deno.test("ssg quarantine without a quarantine section, or with a broken rule file, exits 2", async () => {
  const r = await run(["list", "--rules", "r.yaml"], undefined);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no "quarantine:" section/);
  const e = await quarantineCommand(["list", "--rules=r.yaml"], {
    loadSettings: () => Promise.reject(new Error('r.yaml:3:1: unknown key "quarantin"')),
    stderr: () => {},
    stdout: () => {},
  });
  assert.equal(e, 2);
});

Deno.test("ssg quarantine list prints a table with terminal-safe text, or JSON", async () => {
  const t = await tempDir();
  try {
    const store = new QuarantineStore(t.dir);
    const id = await store.store(MESSAGE, envelope(), { action: "quarantine", rule: "lotto" });
    const r = await run(["list", "--rules", "rules.yaml"], t.dir);
    assert.equal(r.code, 0);
    assert.deepEqual(r.loaded, ["rules.yaml"]);
    assert.match(r.stdout, /^ID +RECEIVED +SIZE +RULE +FROM +TO +SUBJECT\n/);
    assert.ok(r.stdout.includes(id));
    assert.match(r.stdout, /lotto +sender@example\.org +user@corp\.example +\[2Jlottery/);
    assert.ok(!r.stdout.includes("\x1b"));
    assert.match(r.stdout, /1 entries\n$/);

    const j = await run(["list", "--json", "--rules=rules.yaml"], t.dir);
    assert.equal(j.code, 0);
    assert.equal(JSON.parse(j.stdout)[0].id, id);

    const empty = await tempDir();
    assert.equal((await run(["list", "--rules", "r"], empty.dir)).stdout, "Quarantine is empty.\n");
    await empty.remove();
  } finally {
    await t.remove();
  }
});

Deno.test("ssg quarantine show prints metadata and a terminal-safe message; --raw the exact bytes", async () => {
  const t = await tempDir();
  try {
    const store = new QuarantineStore(t.dir);
    const id = await store.store(MESSAGE, envelope(), {
      action: "quarantine",
      rule: "lotto",
      evidence: "subject \x1b[31m",
    });
    const r = await run(["show", id, "--rules", "r"], t.dir);
    assert.equal(r.code, 0);
    assert.match(r.stdout, new RegExp(`^Id: +${id}$`, "m"));
    assert.match(r.stdout, /^Rule: +lotto$/m);
    assert.ok(!/[\x1b\x07]/.test(r.stdout), "no ESC or BEL reaches the terminal");
    assert.ok(r.stdout.includes("Subject: ?[2Jlottery\r\n"));
    const raw = await run(["show", id, "--raw", "--rules", "r"], t.dir);
    assert.deepEqual(raw.out, MESSAGE);
  } finally {
    await t.remove();
  }
});

Deno.test("ssg quarantine release delivers and removes; a refusal keeps the entry with exit 1 or 75", async () => {
  const t = await tempDir();
  const ok = FakeSmtpServer.start();
  const busy = FakeSmtpServer.start({ rcpt: () => "451 4.3.0 busy" });
  const no = FakeSmtpServer.start({ data: "554 5.7.1 still spam" });
  try {
    const store = new QuarantineStore(t.dir);
    const id = await store.store(MESSAGE, envelope(), { action: "quarantine", rule: "lotto" });

    const r1 = await run(["release", id, "--rules", "r"], t.dir, busy.port);
    assert.equal(r1.code, EXIT_TEMPFAIL);
    assert.match(r1.stderr, /Not released .* \(kept\): at rcpt, server said 451 4\.3\.0 busy/);
    const r2 = await run(["release", id, "--rules", "r"], t.dir, no.port);
    assert.equal(r2.code, 1);
    assert.equal((await store.list()).length, 1);

    const r3 = await run(["release", id, "--rules", "r"], t.dir, ok.port);
    assert.equal(r3.code, 0, r3.stderr);
    assert.match(r3.stdout, /^Released .*: server said 250 2\.0\.0 queued\n$/);
    assert.deepEqual(ok.transactions[0].data, MESSAGE);
    assert.equal((await store.list()).length, 0);

    const r4 = await run(["release", id, "--rules", "r"], t.dir, ok.port);
    assert.equal(r4.code, 1);
    assert.match(r4.stderr, /No quarantine entry/);
  } finally {
    await Promise.all([ok.close(), busy.close(), no.close()]);
    await t.remove();
  }
});

Deno.test("ssg quarantine delete removes; bad ids exit 2 without touching files", async () => {
  const t = await tempDir();
  try {
    const store = new QuarantineStore(`${t.dir}/q`);
    const id = await store.store(MESSAGE, envelope(), { action: "quarantine", rule: "lotto" });
    await Deno.writeTextFile(`${t.dir}/victim.json`, "{}");
    const bad = await run(["delete", "../victim", "--rules", "r"], `${t.dir}/q`);
    assert.equal(bad.code, 2);
    assert.ok(await Deno.stat(`${t.dir}/victim.json`));
    const r = await run(["delete", id, "--rules", "r"], `${t.dir}/q`);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `Deleted ${id}\n`);
    assert.equal((await run(["delete", id, "--rules", "r"], `${t.dir}/q`)).code, 1);
  } finally {
    await t.remove();
  }
});

Deno.test("terminalSafe() keeps TAB, CR, LF and printable text, replaces other controls", () => {
  assert.equal(terminalSafe("a\tb\r\nc\x1b[0m\x00\x07\x9b\u202e"), "a\tb\r\nc?[0m????");
});

Deno.test("ssg quarantine reads the quarantine directory from a real rule file", async () => {
  const t = await tempDir();
  try {
    const rules = `${t.dir}/rules.yaml`;
    const yaml = (key: string) =>
      `gateway:\n  protect: [198.51.100.0/24]\nquarantine:\n  ${key}: ${t.dir}/q\nrules: []\n`;
    await Deno.writeTextFile(rules, yaml("dir"));
    const id = await new QuarantineStore(`${t.dir}/q`).store(MESSAGE, envelope(), {
      action: "quarantine",
      rule: "lotto",
    });
    let out = "";
    let err = "";
    const io = {
      stdout: (b: Uint8Array) => out += text(b),
      stderr: (b: Uint8Array) => err += text(b),
    };
    assert.equal(await quarantineCommand(["list", "--rules", rules], io), 0, err);
    assert.ok(out.includes(id));
    // A misspelt key is the loader's error, with file:line:column, and exit 2.
    await Deno.writeTextFile(rules, yaml("dri"));
    err = "";
    assert.equal(await quarantineCommand(["list", "--rules", rules], io), 2);
    assert.match(err, /rules\.yaml:4:3: unknown key "dri"/);
  } finally {
    await t.remove();
  }
});
