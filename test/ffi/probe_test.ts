import assert from "node:assert/strict";
import { probeLibrary } from "../../ffi/probe.ts";
import { granted } from "./test_permissions.ts";

Deno.test(
  { name: "probeLibrary() loads libnetfilter_queue.so.1 here", ignore: !granted("ffi") },
  () => {
    assert.equal(probeLibrary(), undefined);
  },
);

Deno.test({
  name: "probeLibrary() without FFI permission says how to fix it instead of throwing",
  ignore: !granted("run"),
}, async () => {
  const url = new URL("../../ffi/probe.ts", import.meta.url).href;
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/probe.ts`;
    await Deno.writeTextFile(
      script,
      `import { probeLibrary } from ${JSON.stringify(url)};\n` +
        `console.log(JSON.stringify(probeLibrary() ?? null));\n`,
    );
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--no-check", "--allow-read", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(r.stdout).trim();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
    assert.match(
      JSON.parse(text),
      /^Cannot load libnetfilter_queue\.so\.1: FFI is not permitted \(run with --allow-ffi\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
