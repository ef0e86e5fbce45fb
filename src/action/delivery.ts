/**
 * The `bcc` and `redirect` actions: the message delivered over SMTP to the rule's recipients, at
 * the rule's server or (by default) the transaction's original server, with the ORIGINAL envelope
 * sender — so a refusal downstream goes back to the real sender's path, not to SSG, and SSG never
 * originates a bounce (the mission's "reject beats bounce").
 *
 * The session calls this before it answers end-of-data (before-queue): a `bcc` that fails makes
 * the session answer 451 (the client retries; a duplicate archive copy is preferred to a lost
 * one), and a `redirect`'s reply is the client's answer. Bounds and timeouts are `RelayConfig`'s
 * (see `send_message.ts`).
 */
import type { RelayConfig } from "../config/config.ts";
import { type Connect, sendMessage, type SendResult } from "./send_message.ts";
import type { Delivery, Envelope } from "./verdict_types.ts";

/** What a delivery needs besides the message. */
export interface DeliveryOptions {
  /** Our name for EHLO. */
  hostname: string;
  /** Opens the connection. */
  connect: Connect;
  /** Timeouts. */
  relay: RelayConfig;
}

/** Where `delivery` goes: its own server, or the transaction's original server. */
export function deliveryServer(
  delivery: Delivery,
  envelope: Envelope,
): { host: string; port: number } {
  return delivery.server ?? { host: envelope.server.ip, port: envelope.server.port };
}

/**
 * Delivers `message` (the bytes as they would be forwarded: already tagged) to `delivery.to`
 * with `envelope.mailFrom` as the sender. Resolves with the deciding reply (250 only when every
 * recipient and the data were accepted); never rejects.
 */
export function deliver(
  delivery: Delivery,
  message: Uint8Array,
  envelope: Envelope,
  opts: DeliveryOptions,
): Promise<SendResult> {
  return sendMessage(
    { server: deliveryServer(delivery, envelope), ...opts },
    { mailFrom: envelope.mailFrom, rcptTo: delivery.to },
    message,
  );
}
