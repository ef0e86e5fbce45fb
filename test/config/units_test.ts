import assert from "node:assert/strict";
import { formatDuration, formatSize, parseDuration, parseSize } from "../../src/config/units.ts";

const show = (v: string | number) => typeof v === "string" ? JSON.stringify(v) : String(v);

const SIZES: [string | number, number | undefined][] = [
  [0, 0],
  [1048576, 1048576],
  ["1048576", 1048576],
  ["512k", 524288],
  ["512K", 524288],
  ["64KiB", 65536],
  ["25M", 26214400],
  ["25MB", 26214400],
  ["1G", 1073741824],
  ["100B", 100],
  [" 2M ", 2097152],
  [-1, undefined],
  [1.5, undefined],
  ["1.5M", undefined],
  ["25 megabytes", undefined],
  ["M", undefined],
  ["", undefined],
  ["99999999999999999999G", undefined],
];
for (const [input, want] of SIZES) {
  Deno.test(`parseSize(${show(input)}) is ${want}`, () => {
    assert.equal(parseSize(input), want);
  });
}

const DURATIONS: [string | number, number | undefined][] = [
  [0, 0],
  [300, 300],
  [1.5, 1.5],
  ["300", 300],
  ["30s", 30],
  ["5m", 300],
  ["1h", 3600],
  ["2d", 172800],
  ["1h30m", 5400],
  ["250ms", 0.25],
  ["1.5s", 1.5],
  [-1, undefined],
  ["5x", undefined],
  ["m5", undefined],
  ["5 m", undefined],
  ["", undefined],
  [Infinity, undefined],
];
for (const [input, want] of DURATIONS) {
  Deno.test(`parseDuration(${show(input)}) is ${want}`, () => {
    assert.equal(parseDuration(input), want);
  });
}

Deno.test("formatSize() and formatDuration() print what an administrator would write", () => {
  assert.deepEqual([26214400, 524288, 1073741824, 1000, 0].map(formatSize), [
    "25M",
    "512k",
    "1G",
    "1000",
    "0",
  ]);
  assert.deepEqual([300, 3600, 90, 0.25, 86400, 0].map(formatDuration), [
    "5m",
    "1h",
    "90s",
    "250ms",
    "1d",
    "0s",
  ]);
});
