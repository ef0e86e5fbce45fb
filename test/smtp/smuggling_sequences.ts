/** Test fixtures: the fake end-of-data sequences of SMTP smuggling. */

/** Every smuggling end-of-data variant from reliability-anchors §2.1 (SEC Consult + hannob). */
export const SMUGGLING_SEQUENCES: [string, string][] = [
  ["lflf \\n.\\n", "\n.\n"],
  ["lfcr \\n.\\r", "\n.\r"],
  ["crlf \\r.\\n", "\r.\n"],
  ["crcr \\r.\\r", "\r.\r"],
  ["lfcrlf \\n.\\r\\n", "\n.\r\n"],
  ["crcrlf \\r.\\r\\n", "\r.\r\n"],
  ["crlflf \\r\\n.\\n", "\r\n.\n"],
  ["crlfcr \\r\\n.\\r", "\r\n.\r"],
  ["nullbefore \\r\\n\\x00.\\r\\n", "\r\n\x00.\r\n"],
  ["nullafter \\r\\n.\\x00\\r\\n", "\r\n.\x00\r\n"],
  ["\\r\\n.\\r\\r\\n", "\r\n.\r\r\n"],
  ["\\r\\r\\n.\\r\\r\\n", "\r\r\n.\r\r\n"],
];
