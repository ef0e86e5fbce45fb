/**
 * Interop with real Postfix on both sides, direct vs through `dist/ssg` (harness and topology in
 * `interop.ts`, cases in `interop_cases.ts`). Each test runs its case twice in one fresh world —
 * direct (SSG not running: the gateway only forwards), then through SSG — and asserts, step by
 * step, that the direct run means something and that the run through SSG looks the same from
 * each end: what the sending Postfix logs, what the server stores and logs (the client address
 * it saw), the notifications that come back, and what a raw client reads on the wire.
 *
 * SSG is configured as an administrator would for this server (`interop.ts`): its message size
 * limit at least the server's, and a certificate so that STARTTLS is offered as the server does.
 * The only intended difference is SSG's Received header (and Postfix's BDAT byte count, which
 * includes it). Needs root and `./build.sh` first; ignored otherwise.
 */
import { interopTest } from "./interop.ts";
import {
  bannerAndEhlo,
  bareLf,
  bdatNotOffered,
  bdatOffered,
  clientAccessReject,
  dsnNotifyNever,
  dsnNotifySuccess,
  dsnRetHdrsEnvid,
  largerThanSsgSize,
  longLines,
  openRelay,
  plainDelivery,
  smtputf8,
} from "./interop_cases.ts";

interopTest(plainDelivery, ["status", "stored", "notifications", "client"]);
interopTest(smtputf8, ["status", "stored", "notifications"]);
interopTest(dsnNotifyNever, ["status", "serverStatus", "notifications", "client"]);
interopTest(dsnRetHdrsEnvid, ["status", "serverStatus", "notifications", "client"]);
interopTest(dsnNotifySuccess, ["status", "stored", "notifications", "client"]);
interopTest(openRelay, ["status", "serverStatus", "notifications"]);
interopTest(clientAccessReject, ["status", "stored", "notifications"]);
interopTest(largerThanSsgSize, ["status", "stored", "notifications"]);
interopTest(longLines, ["replies", "stored"]);
interopTest(bareLf, ["replies", "stored"]);
interopTest(bannerAndEhlo, ["greeting", "ehloName", "ehloKeywords"]);
interopTest(bdatOffered, ["replies", "stored"]);
interopTest(bdatNotOffered, ["replies"]);
