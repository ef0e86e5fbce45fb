import assert from "node:assert/strict";
import {
  checkId,
  denoQuarantineFs,
  QuarantineError,
  type QuarantineFs,
  QuarantineStore,
} from "../../src/action/quarantine_store.ts";
import type { Verdict } from "../../src/action/verdict_types.ts";
import { FakeSmtpServer } from "./fake_smtp_server.ts";
import { bytes, canRun, envelope, releaseVia, tempDir, uid } from "./helpers.ts";

const VERDICT: Verdict = {
  action: "quarantine",
  rule: "suspicious",
  evidence: 'subject contains "lottery"',
};
// Every byte value, a leading-dot line, a long line and CRLF endings: release must keep them all.
const MESSAGE = (() => {
  const head = bytes("Subject: =?UTF-8?B?7ZWc6riA?= lottery\r\nFrom: S <s@example.org>\r\n\r\n");
  const all = new Uint8Array(256 * 4);
  for (let i = 0; i < all.length; i++) all[i] = i % 256 === 10 || i % 256 === 13 ? 65 : i % 256;
  const tail = bytes("\r\n.leading dot\r\n..two dots\r\n" + "y".repeat(990) + "\r\n.\r\nend\r\n");
  const m = new Uint8Array(head.length + all.length + tail.length);
  m.set(head);
  m.set(all, head.length);
  m.set(tail, head.length + all.length);
  return m;
})();

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test("QuarantineStore.store() writes .eml and .json, and list/show read them back", async () => {
  const t = await tempDir();
  try {
    const dir = `${t.dir}/q`; // created on first store
    const store = new QuarantineStore(dir);
    const id = await store.store(MESSAGE, envelope(), VERDICT);
    assert.match(id, /^\d{8}T\d{6}Z-[0-9a-f]{16}$/);
    assert.deepEqual(await names(dir), [`${id}.eml`, `${id}.json`]);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    assert.equal((await Deno.stat(`${dir}/${id}.eml`)).mode! & 0o777, 0o600);
    assert.deepEqual(await Deno.readFile(`${dir}/${id}.eml`), MESSAGE);

    const list = await store.list();
    assert.equal(list.length, 1);
    assert.equal(list[0].id, id);
    assert.equal(list[0].rule, "suspicious");
    assert.equal(list[0].evidence, VERDICT.evidence);
    assert.equal(list[0].subject, "한글 lottery");
    assert.equal(list[0].from, "S <s@example.org>");
    assert.deepEqual(list[0].server, { ip: "198.51.100.25", port: 25 });
    assert.deepEqual(list[0].envelope, envelope());
    assert.deepEqual(list[0].verdict, VERDICT);
    assert.equal(list[0].size, MESSAGE.length);

    const shown = await store.show(id);
    assert.deepEqual(shown.message, MESSAGE);
    assert.equal(shown.meta.id, id);
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore.store() fsyncs both files before the renames and the directory last", async () => {
  const t = await tempDir();
  try {
    const calls: string[] = [];
    const fs: QuarantineFs = {
      async writeFileSynced(path, data) {
        await denoQuarantineFs.writeFileSynced(path, data);
        calls.push(`write ${path.slice(t.dir.length + 1)}`);
      },
      async syncDir(path) {
        // At the directory fsync both files are in place under their final names.
        calls.push(`syncdir ${(await names(path)).join(",")}`);
        await denoQuarantineFs.syncDir(path);
      },
    };
    const store = new QuarantineStore(t.dir, { fs });
    const id = await store.store(MESSAGE, envelope(), VERDICT);
    assert.deepEqual(calls, [
      `write .${id}.eml.tmp`,
      `write .${id}.json.tmp`,
      `syncdir ${id}.eml,${id}.json`,
    ]);
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore.store() failure cases reject and leave no partial entry", async (t) => {
  const enospc = () => new Error("No space left on device (os error 28)");
  const cases: { name: string; fs: (real: QuarantineFs) => QuarantineFs }[] = [
    {
      name: "ENOSPC half-way through the message",
      fs: (real) => ({
        ...real,
        async writeFileSynced(path, data) {
          if (path.endsWith(".eml.tmp")) {
            await real.writeFileSynced(path, data.subarray(0, data.length >> 1));
            throw enospc();
          }
          await real.writeFileSynced(path, data);
        },
      }),
    },
    {
      name: "ENOSPC writing the metadata (message already written)",
      fs: (real) => ({
        ...real,
        async writeFileSynced(path, data) {
          await real.writeFileSynced(path, path.endsWith(".json.tmp") ? data.subarray(0, 3) : data);
          if (path.endsWith(".json.tmp")) throw enospc();
        },
      }),
    },
    {
      name: "EIO on the directory fsync (both files already renamed)",
      fs: (real) => ({
        ...real,
        syncDir: () => Promise.reject(new Error("Input/output error (os error 5)")),
      }),
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const tmp = await tempDir();
      try {
        const store = new QuarantineStore(tmp.dir, { fs: c.fs(denoQuarantineFs) });
        await assert.rejects(store.store(MESSAGE, envelope(), VERDICT), (e) => {
          assert.ok(e instanceof QuarantineError);
          assert.equal(e.kind, "io");
          assert.ok(e.cause instanceof Error);
          return true;
        });
        assert.deepEqual(await names(tmp.dir), []);
        assert.deepEqual(await store.list(), []);
      } finally {
        await tmp.remove();
      }
    });
  }
});

Deno.test({
  name: "QuarantineStore.store() into an unwritable directory rejects and leaves nothing",
  // Root ignores mode bits, so as root the test needs chattr (a subprocess).
  ignore: uid === undefined || (uid === 0 && !canRun),
}, async () => {
  const t = await tempDir();
  const root = uid === 0;
  // Root ignores mode bits; the immutable attribute (chattr +i) stops root too.
  const lock = async (on: boolean) => {
    if (root) {
      const r = await new Deno.Command("chattr", { args: [on ? "+i" : "-i", t.dir] }).output();
      assert.ok(r.success, "chattr is needed to make a directory unwritable for root");
    } else {
      await Deno.chmod(t.dir, on ? 0o500 : 0o700);
    }
  };
  try {
    await lock(true);
    const store = new QuarantineStore(t.dir);
    await assert.rejects(store.store(MESSAGE, envelope(), VERDICT), (e) => {
      assert.ok(e instanceof QuarantineError);
      assert.equal(e.kind, "io");
      return true;
    });
    await lock(false);
    assert.deepEqual(await names(t.dir), []);
  } finally {
    await lock(false).catch(() => {});
    await t.remove();
  }
});

Deno.test("QuarantineStore.store() where the directory cannot be created rejects", async () => {
  const t = await tempDir();
  try {
    await Deno.writeTextFile(`${t.dir}/file`, "x");
    const store = new QuarantineStore(`${t.dir}/file/q`);
    await assert.rejects(store.store(MESSAGE, envelope(), VERDICT), QuarantineError);
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore max_bytes refuses with kind 'full' at limit+1, accepts at limit", async () => {
  const t = await tempDir();
  try {
    // Measure one entry's size, then set the limit to exactly two entries' worth.
    const probe = new QuarantineStore(`${t.dir}/probe`);
    await probe.store(MESSAGE, envelope(), VERDICT);
    const one = await probe.usage();
    for (const [limit, accepted] of [[2 * one - 1, 1], [2 * one, 2], [2 * one + 1, 2]] as const) {
      const dir = `${t.dir}/q${limit}`;
      const store = new QuarantineStore(dir, { maxBytes: limit });
      let ok = 0;
      for (let i = 0; i < 3; i++) {
        try {
          await store.store(MESSAGE, envelope(), VERDICT);
          ok++;
        } catch (e) {
          assert.ok(e instanceof QuarantineError && e.kind === "full", String(e));
        }
      }
      assert.equal(ok, accepted, `limit ${limit}`);
      assert.ok(await store.usage() <= limit);
    }
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore max_bytes counts afresh after another process deletes entries", async () => {
  const t = await tempDir();
  try {
    const probe = new QuarantineStore(`${t.dir}/probe`);
    await probe.store(MESSAGE, envelope(), VERDICT);
    const one = await probe.usage();
    const daemon = new QuarantineStore(t.dir + "/q", { maxBytes: one });
    const id = await daemon.store(MESSAGE, envelope(), VERDICT);
    await assert.rejects(daemon.store(MESSAGE, envelope(), VERDICT), QuarantineError);
    await new QuarantineStore(t.dir + "/q").delete(id); // the CLI, another object
    await daemon.store(MESSAGE, envelope(), VERDICT);
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore.release() delivers the original bytes and envelope, then removes the entry", async () => {
  const t = await tempDir();
  const server = FakeSmtpServer.start();
  try {
    const store = new QuarantineStore(t.dir);
    const env = envelope({
      mailFrom: "orig@example.org",
      rcptTo: ["a@corp.example", "b@corp.example"],
    });
    const id = await store.store(MESSAGE, env, VERDICT);
    const seen: { ip: string; port: number }[] = [];
    const r = await store.release(id, (message, e, s) => {
      seen.push(s);
      return releaseVia(server.port)(message, e, s);
    });
    assert.equal(r.code, 250);
    assert.deepEqual(seen, [{ ip: "198.51.100.25", port: 25 }]);
    assert.equal(server.transactions.length, 1);
    const tx = server.transactions[0];
    assert.equal(tx.mailFrom, "orig@example.org");
    assert.deepEqual(tx.rcptTo, ["a@corp.example", "b@corp.example"]);
    assert.deepEqual(tx.data, MESSAGE); // byte for byte
    assert.match(tx.mailLine, / BODY=8BITMIME/);
    assert.deepEqual(await names(t.dir), []);
  } finally {
    await server.close();
    await t.remove();
  }
});

Deno.test("QuarantineStore.release() keeps the entry when the server does not say 250", async (t) => {
  for (
    const [name, opts] of [
      ["recipient temporarily refused", { rcpt: () => "450 4.2.1 busy" }],
      ["recipient permanently refused", { rcpt: () => "550 5.1.1 no such user" }],
      ["data refused", { data: "554 5.7.1 no" }],
    ] as const
  ) {
    await t.step(name, async () => {
      const tmp = await tempDir();
      const server = FakeSmtpServer.start(opts);
      try {
        const store = new QuarantineStore(tmp.dir);
        const id = await store.store(MESSAGE, envelope(), VERDICT);
        const r = await store.release(id, releaseVia(server.port));
        assert.notEqual(r.code, 250);
        assert.equal((await store.list()).length, 1);
      } finally {
        await server.close();
        await tmp.remove();
      }
    });
  }
});

Deno.test("QuarantineStore.release() keeps the entry when the server is down", async () => {
  const t = await tempDir();
  try {
    const store = new QuarantineStore(t.dir);
    const id = await store.store(MESSAGE, envelope(), VERDICT);
    // A port nothing listens on: take a free port and close it again.
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    const r = await store.release(id, releaseVia(port));
    assert.equal(r.code, 451);
    assert.equal(r.stage, "connect");
    assert.equal((await store.list()).length, 1);
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore.delete() removes an entry; unknown ids are 'not-found'", async () => {
  const t = await tempDir();
  try {
    const store = new QuarantineStore(t.dir);
    const a = await store.store(MESSAGE, envelope(), VERDICT);
    const b = await store.store(MESSAGE, envelope(), VERDICT);
    await store.delete(a);
    assert.deepEqual((await store.list()).map((m) => m.id), [b]);
    await assert.rejects(
      store.delete(a),
      (e) => e instanceof QuarantineError && e.kind === "not-found",
    );
    await assert.rejects(
      store.show(a),
      (e) => e instanceof QuarantineError && e.kind === "not-found",
    );
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore refuses ids that could escape the directory", async () => {
  const t = await tempDir();
  try {
    await Deno.writeTextFile(`${t.dir}/secret.json`, "{}");
    const store = new QuarantineStore(`${t.dir}/q`);
    for (
      const id of [
        "../secret",
        "/etc/passwd",
        ".hidden",
        "a/b",
        "",
        "a.b",
        "a\0b",
        "x".repeat(101),
        "..",
        "a\nb",
      ]
    ) {
      await assert.rejects(
        store.show(id),
        (e) => e instanceof QuarantineError && e.kind === "invalid-id",
        id,
      );
      await assert.rejects(
        store.delete(id),
        (e) => e instanceof QuarantineError && e.kind === "invalid-id",
        id,
      );
    }
    assert.equal(checkId("x".repeat(100)), "x".repeat(100));
    assert.ok(await Deno.stat(`${t.dir}/secret.json`));
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore.show() detects a message altered on disk", async () => {
  const t = await tempDir();
  try {
    const store = new QuarantineStore(t.dir);
    const id = await store.store(MESSAGE, envelope(), VERDICT);
    const altered = MESSAGE.slice();
    altered[10] ^= 1;
    await Deno.writeFile(`${t.dir}/${id}.eml`, altered);
    await assert.rejects(
      store.show(id),
      (e) => e instanceof QuarantineError && e.kind === "corrupt",
    );
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore.recover() removes leftovers of an interrupted store, keeps entries", async () => {
  const t = await tempDir();
  try {
    const store = new QuarantineStore(t.dir);
    const id = await store.store(MESSAGE, envelope(), VERDICT);
    await Deno.writeTextFile(`${t.dir}/.20260101T000000Z-00.eml.tmp`, "x");
    await Deno.writeTextFile(`${t.dir}/.20260101T000000Z-00.json.tmp`, "x");
    await Deno.writeTextFile(`${t.dir}/20260101T000000Z-01.eml`, "orphan");
    await Deno.writeTextFile(`${t.dir}/README`, "an admin's note is not ours to remove");
    assert.equal(await store.recover(), 3);
    assert.deepEqual(await names(t.dir), [`${id}.eml`, `${id}.json`, "README"].sort());
    assert.equal(await new QuarantineStore(`${t.dir}/none`).recover(), 0);
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore.list() skips unreadable metadata and sorts by time", async () => {
  const t = await tempDir();
  try {
    let clock = Date.parse("2026-11-27T10:00:00Z");
    const store = new QuarantineStore(t.dir, { now: () => new Date(clock -= 1000) });
    const first = await store.store(MESSAGE, envelope(), VERDICT); // 09:59:59
    const second = await store.store(MESSAGE, envelope(), VERDICT); // 09:59:58
    await Deno.writeTextFile(`${t.dir}/broken-1.json`, "{not json");
    assert.deepEqual((await store.list()).map((m) => m.id), [second, first]);
    assert.deepEqual(await new QuarantineStore(`${t.dir}/missing`).list(), []);
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore stores concurrent messages under distinct ids", async () => {
  const t = await tempDir();
  try {
    const store = new QuarantineStore(t.dir);
    const ids = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) => store.store(bytes(`Subject: ${i}\r\n\r\nbody ${i}\r\n`), envelope(), VERDICT),
      ),
    );
    assert.equal(new Set(ids).size, 20);
    const list = await store.list();
    assert.equal(list.length, 20);
    for (const m of list) {
      const { message } = await store.show(m.id);
      assert.equal(
        new TextDecoder().decode(message),
        `Subject: ${m.subject}\r\n\r\nbody ${m.subject}\r\n`,
      );
    }
  } finally {
    await t.remove();
  }
});

Deno.test("QuarantineStore.release() run twice at once delivers once", async () => {
  const t = await tempDir();
  const server = FakeSmtpServer.start();
  try {
    const store = new QuarantineStore(t.dir);
    const id = await store.store(MESSAGE, envelope(), VERDICT);
    const send = releaseVia(server.port);
    const results = await Promise.allSettled([store.release(id, send), store.release(id, send)]);
    const delivered = results.filter((r) => r.status === "fulfilled" && r.value.code === 250);
    const refused = results.filter((r) =>
      r.status === "rejected" && r.reason instanceof QuarantineError &&
      r.reason.kind === "not-found"
    );
    assert.equal(delivered.length, 1);
    assert.equal(refused.length, 1);
    assert.equal(server.transactions.length, 1);
    assert.deepEqual(await names(t.dir), []);
  } finally {
    await server.close();
    await t.remove();
  }
});

Deno.test("QuarantineStore hides an entry while it is being released, and gives back stale claims", async () => {
  const t = await tempDir();
  try {
    let now = Date.parse("2026-11-27T10:00:00Z");
    const store = new QuarantineStore(t.dir, { now: () => new Date(now) });
    const id = await store.store(MESSAGE, envelope(), VERDICT);
    let listedDuring = -1;
    // A release whose process "crashes" in the middle: the send never returns.
    const hung = store.release(id, async () => {
      listedDuring = (await store.list()).length;
      return await new Promise<never>(() => {});
    });
    void hung;
    while (listedDuring < 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(listedDuring, 0);
    assert.equal(await store.restoreStaleClaims(), 0); // young claim: still running
    assert.equal(await store.recover(), 0); // its .eml is not an orphan
    assert.ok((await names(t.dir)).includes(`${id}.eml`));
    now += 3600_000 + 1;
    assert.equal(await store.restoreStaleClaims(), 1);
    assert.deepEqual((await store.list()).map((m) => m.id), [id]);
  } finally {
    await t.remove();
  }
});

Deno.test({
  name: "QuarantineStore on a really full file system (tmpfs) refuses, leaves nothing, recovers",
  ignore: uid !== 0 || !canRun,
  async fn() {
    // A private mount namespace (unshare -m) with a 256 KiB tmpfs: nothing outside the test sees it.
    const t = await tempDir();
    try {
      const script = `${t.dir}/fill.ts`;
      const storeUrl = new URL("../../src/action/quarantine_store.ts", import.meta.url).href;
      await Deno.writeTextFile(
        script,
        `import { QuarantineStore, QuarantineError } from ${JSON.stringify(storeUrl)};
const dir = Deno.args[0] + "/q";
const store = new QuarantineStore(dir);
const env = { mailFrom: "s@example.org", rcptTo: ["u@corp.example"], client: { ip: "203.0.113.5", port: 1 },
  server: { ip: "198.51.100.25", port: 25 }, helo: "h", tls: false, sessionId: "s", transactionId: "t" };
const msg = new TextEncoder().encode("Subject: x\\r\\n\\r\\n" + "y".repeat(40 * 1024) + "\\r\\n");
const ids = [];
let error = null;
for (let i = 0; i < 64; i++) {
  try { ids.push(await store.store(msg, env, { action: "quarantine", rule: "r" })); }
  catch (e) { error = { kind: e instanceof QuarantineError ? e.kind : "other", message: String(e.message) }; break; }
}
const files = [];
for await (const e of Deno.readDir(dir)) files.push(e.name);
const listed = (await store.list()).length;
await store.delete(ids[0]);
await store.delete(ids[1]);
let after = "stored";
try { await store.store(msg, env, { action: "quarantine", rule: "r" }); } catch (e) { after = String(e); }
console.log(JSON.stringify({ stored: ids.length, error, files: files.length, listed, after }));
`,
      );
      const mnt = `${t.dir}/mnt`;
      await Deno.mkdir(mnt);
      const cmd = new Deno.Command("unshare", {
        args: [
          "--mount",
          "--propagation",
          "private",
          "sh",
          "-c",
          `mount -t tmpfs -o size=256k ssgtest "$1" && exec "$2" run -A --quiet "$3" "$1"`,
          "sh",
          mnt,
          Deno.execPath(),
          script,
        ],
        stdout: "piped",
        stderr: "piped",
      });
      const out = await cmd.output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, stderr);
      const r = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.ok(r.stored >= 1 && r.stored < 64, JSON.stringify(r));
      assert.equal(r.error.kind, "io");
      assert.match(r.error.message, /No space left on device|os error 28/);
      assert.equal(r.files, 2 * r.stored, "only complete entries remain");
      assert.equal(r.listed, r.stored);
      assert.equal(r.after, "stored", "space freed: storing works again");
    } finally {
      await t.remove();
    }
  },
});
