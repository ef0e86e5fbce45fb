/**
 * The `content:` section: how much of a message SSG reads, and the verdict for one it cannot
 * read fully (issue 8). Every key is optional; an absent or empty section is all defaults
 * (`CONTENT_DEFAULTS`).
 *
 * ```yaml
 * content:
 *   undecodable: quarantine     # quarantine | tempfail | reject | forward
 *   max_parts: 1000             # MIME parts, the root and each reading of an ambiguous part
 *   max_depth: 50               # nesting of multiparts and attached messages
 *   max_header_bytes: 1M        # one header section (the message's or a part's)
 *   max_headers: 1000           # header fields in one header section
 *   max_text_chars: 4194304     # one text, white space runs counted once
 *   timeout: 30s                # the MIME parser's time for one message
 * ```
 * The upper bounds keep one message's decoding within memory and time SSG can afford.
 */
import { isScalar } from "yaml";
import type { ContentConfig } from "./config.ts";
import { CONTENT_DEFAULTS } from "./defaults.ts";
import type { YamlReader, YNode } from "./yaml_reader.ts";

const CONTENT_KEYS = [
  "undecodable",
  "max_parts",
  "max_depth",
  "max_header_bytes",
  "max_headers",
  "max_text_chars",
  "timeout",
] as const;

/** Reads `content:`; undefined when it has errors (reported to `r`). */
export function readContent(
  node: YNode,
  present: boolean,
  r: YamlReader,
  keyNode: YNode,
): ContentConfig | undefined {
  const c: ContentConfig = { ...CONTENT_DEFAULTS };
  const empty = node === null || node === undefined || (isScalar(node) && node.value === null);
  if (!present || empty) return c;
  const f = r.fields(node, `"content"`, CONTENT_KEYS, `in "content"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  const int = (key: string, min: number, max: number, dflt: number) =>
    f.has(key) ? r.int(f.get(key), `"content.${key}"`, min, max, f.key(key)) ?? dflt : dflt;
  if (f.has("undecodable")) {
    c.undecodable = r.oneOf(
      f.get("undecodable"),
      `"content.undecodable"`,
      ["quarantine", "tempfail", "reject", "forward"] as const,
      f.key("undecodable"),
    ) ?? c.undecodable;
  }
  c.maxParts = int("max_parts", 2, 100_000, c.maxParts);
  c.maxDepth = int("max_depth", 1, 1000, c.maxDepth);
  c.maxHeaders = int("max_headers", 10, 100_000, c.maxHeaders);
  c.maxTextChars = int("max_text_chars", 1024, 64 * 1024 * 1024, c.maxTextChars);
  if (f.has("max_header_bytes")) {
    c.maxHeaderBytes = r.size(
      f.get("max_header_bytes"),
      `"content.max_header_bytes"`,
      1024,
      64 * 1024 * 1024,
      f.key("max_header_bytes"),
    ) ?? c.maxHeaderBytes;
  }
  if (f.has("timeout")) {
    c.timeoutSeconds =
      r.duration(f.get("timeout"), `"content.timeout"`, 1, 600, f.key("timeout")) ??
        c.timeoutSeconds;
  }
  return r.issues.length === before ? c : undefined;
}
