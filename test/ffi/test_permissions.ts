/**
 * What this test run may do: the full suite runs `--allow-all` (as root in CI), the unit task
 * runs with read/write/env/net only. Tests that need more are `ignore`d, never silently green.
 */

/** Whether the run was given permission `name` (no prompt). */
export function granted(name: "ffi" | "run" | "sys"): boolean {
  return Deno.permissions.querySync({ name }).state === "granted";
}

/** Whether we run as root; read from /proc when `--allow-sys` is missing. */
export function isRoot(): boolean {
  if (granted("sys")) return Deno.uid() === 0;
  try {
    const uid = /^Uid:\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"));
    return uid !== null && uid[1] === "0";
  } catch {
    return false;
  }
}
