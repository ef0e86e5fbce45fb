/**
 * Sizes and durations as an administrator writes them in the rule file: `25M`, `512k`, `5m`,
 * `1h30m`, or plain numbers (bytes, seconds).
 *
 * Trusts nothing: the text comes from the rule file. Limits: the result must be a finite,
 * non-negative number; range checks are the caller's (each setting has its own range).
 * Sizes are binary (k = 1024) because that is what mail sizes conventionally mean: Postfix's and
 * our own default `max_message_bytes` 26214400 is exactly 25M.
 */

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  k: 1024,
  m: 1024 * 1024,
  g: 1024 * 1024 * 1024,
};

const SIZE_RE = /^(\d+)\s*([kmg]?)(?:i?b)?$/i;

/**
 * Parses a size: a non-negative integer of bytes, or a string such as "25M", "512k", "1G",
 * "64KiB", "100B". Returns undefined when the text is not a size.
 */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === "number") {
    return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  }
  const m = SIZE_RE.exec(value.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()];
  return Number.isSafeInteger(n) ? n : undefined;
}

const DURATION_UNITS: Record<string, number> = {
  ms: 0.001,
  s: 1,
  m: 60,
  h: 3600,
  d: 86400,
};

const DURATION_PART_RE = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;

/**
 * Parses a duration into seconds: a non-negative number of seconds, or a string of one or more
 * number+unit parts ("30s", "5m", "1h30m", "250ms", "1.5s"; units ms, s, m, h, d). A bare number
 * in a string ("300") is seconds. Returns undefined when the text is not a duration.
 */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === "number") {
    return Number.isFinite(value) && value >= 0 ? value : undefined;
  }
  const text = value.trim();
  if (/^\d+(?:\.\d+)?$/.test(text)) return Number(text);
  if (text === "") return undefined;
  let total = 0;
  DURATION_PART_RE.lastIndex = 0;
  let pos = 0;
  while (pos < text.length) {
    DURATION_PART_RE.lastIndex = pos;
    const m = DURATION_PART_RE.exec(text);
    if (!m) return undefined;
    total += Number(m[1]) * DURATION_UNITS[m[2]];
    pos = DURATION_PART_RE.lastIndex;
  }
  return Number.isFinite(total) ? total : undefined;
}

/** Formats a byte count for humans: 26214400 → "25M", 1000 → "1000". */
export function formatSize(bytes: number): string {
  for (const [unit, mult] of [["G", SIZE_UNITS.g], ["M", SIZE_UNITS.m], ["k", SIZE_UNITS.k]]) {
    const m = mult as number;
    if (bytes >= m && bytes % m === 0) return `${bytes / m}${unit}`;
  }
  return String(bytes);
}

/** Formats seconds for humans: 300 → "5m", 3600 → "1h", 90 → "90s", 0.25 → "250ms". */
export function formatDuration(seconds: number): string {
  if (seconds > 0 && seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  for (const [unit, mult] of [["d", 86400], ["h", 3600], ["m", 60]] as const) {
    if (seconds >= mult && seconds % mult === 0) return `${seconds / mult}${unit}`;
  }
  return `${seconds}s`;
}
