/**
 * One bound NFQUEUE: a netlink socket configured for copy-packet mode, read in batches with
 * `recvmmsg`, answered with batched verdict messages through `send`.
 *
 * Synchronous by design: it is used only inside the queue Worker (`queue_worker.ts`), where
 * blocking in `recvmmsg` stops only that Worker's thread, never the event loop that serves SMTP
 * sessions. SO_RCVTIMEO bounds each block so that the Worker notices a stop request.
 *
 * Settings, deliberately (performance-anchors.md §2.2, §2.3):
 * - copy mode NFQNL_COPY_PACKET with the full range: a NAT verdict must return the whole packet;
 * - NFQA_CFG_F_GSO ON (option `gso`, default true): GSO/GRO packets (up to 64 KB, many segments)
 *   cross the queue whole, one trip instead of one per segment (the C probe: 375 → 1,356 MB/s).
 *   Such packets, and any other the kernel marks NFQA_SKB_CSUMNOTREADY, carry only a partial
 *   TCP checksum, and a payload verdict leaves the kernel with CHECKSUM_NONE (nfqnl_mangle), so
 *   the Worker writes a full TCP checksum into each of them (queue_worker.ts); every other packet
 *   has a complete checksum, which RFC 1624 incremental updates keep correct. With the flag off
 *   the kernel segments and completes checksums before queueing (skb_checksum_help);
 * - NFQA_CFG_F_FAIL_OPEN OFF by default. Security trade-off: with fail-open, packets that find
 *   the queue full are ACCEPTED without rewriting — a new connection then reaches the real server
 *   unfiltered and packets of diverted flows leave half-translated. Fail closed drops them and
 *   TCP retransmits, so a burst costs latency, not filtering. Configurable (`gateway.queue.failOpen`).
 * - queue maxlen and SO_RCVBUFFORCE from `gateway.queue`; NETLINK_NO_ENOBUFS is NOT set because it
 *   only hides the error while the packet is still dropped: we count ENOBUFS and keep reading.
 *
 * Caution: lifetime. The receive slots and the `mmsghdr`/`iovec` arrays are handed to the kernel
 * by address; they are fields of this object so they stay alive as long as the socket does.
 */
import { CAP_NET_ADMIN, hasCapability } from "../src/divert/privileges.ts";
import { loadNative, type Native } from "./native.ts";
import { Errno, NfqError } from "./nfq_error.ts";
import {
  HOST_LITTLE_ENDIAN,
  NF_ACCEPT,
  NFQA_CFG_F_FAIL_OPEN,
  NFQA_CFG_F_GSO,
  NFQA_CFG_FLAGS,
  NFQA_CFG_MASK,
  NFQNL_CFG_CMD_BIND,
  NFQNL_CFG_CMD_UNBIND,
  NFQNL_COPY_PACKET,
  NFQNL_MAX_COPY_RANGE,
  NFQNL_MSG_CONFIG,
  NLM_F_ACK,
  parseDatagram,
  QueuedPacket,
  VerdictWriter,
} from "./nfnetlink.ts";

/** How to open the queue. */
export interface NfqSocketOptions {
  /** NFQUEUE number (the iptables --queue-num / nft queue num). */
  queueNum: number;
  /** Kernel queue length in packets (NFQA_CFG_QUEUE_MAXLEN). */
  maxlen: number;
  /** Receive buffer in bytes (SO_RCVBUFFORCE; falls back to SO_RCVBUF, capped by rmem_max). */
  rcvbuf: number;
  /** Accept packets without asking us when the queue is full (default false: fail closed). */
  failOpen?: boolean;
  /** Datagrams read per `recvmmsg` at most (default 32). */
  slots?: number;
  /** How long one `receive()` blocks when nothing arrives, in ms (default 50). */
  recvTimeoutMs?: number;
  /** Send buffer in bytes for batched verdicts (default 1 MiB). */
  sndbuf?: number;
  /** Ask for whole GSO packets (NFQA_CFG_F_GSO; default true; see the module comment). */
  gso?: boolean;
}

// Linux constants (x86_64 and aarch64 agree on all of these).
const AF_NETLINK = 16;
const AF_INET = 2;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_NETFILTER = 12;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_RCVTIMEO = 20;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const MSG_TRUNC = 0x20;
const MSG_WAITFORONE = 0x10000;

/** Most payloads referenced per `sendVerdicts` (2 iovecs each, + 1; the kernel allows 1,024). */
export const MAX_VERDICT_REFS = 256;
/** sizeof(struct msghdr) on LP64. */
const MSGHDR_SIZE = 56;

/** Bytes of one receive slot: the largest copy (65,531) plus generous room for attributes. */
const SLOT_SIZE = 65536 + 4096;
/** sizeof(struct mmsghdr) on LP64: struct msghdr (56) + unsigned int msg_len + padding. */
const MMSGHDR_SIZE = 64;
const IOVEC_SIZE = 16;

function int32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, v, true);
  return b;
}

/** A bound, configured NFQUEUE. */
export class NfqSocket {
  #n: Native;
  #fd: number;
  #slots: number;
  #data: Uint8Array;
  #dv: DataView;
  #mmsg: Uint8Array;
  #mmsgDv: DataView;
  #iov: Uint8Array;
  #queueNum: number;
  #sendIov = new Uint8Array((2 * MAX_VERDICT_REFS + 1) * IOVEC_SIZE);
  #sendIovDv = new DataView(this.#sendIov.buffer);
  #sendMsg = new Uint8Array(MSGHDR_SIZE);
  #sendMsgDv = new DataView(this.#sendMsg.buffer);
  #dataAddr: number;
  #seq = 100;
  #closed = false;
  /** Times `recvmmsg` reported ENOBUFS (the kernel dropped packets: rcvbuf overflow). */
  enobufs = 0;
  /** Datagrams larger than a slot (never expected: slots hold the largest copy). */
  truncated = 0;
  /** The receive buffer size the kernel actually granted (getsockopt SO_RCVBUF). */
  readonly rcvbuf: number;

  private constructor(n: Native, fd: number, opts: NfqSocketOptions) {
    this.#n = n;
    this.#fd = fd;
    this.#queueNum = opts.queueNum;
    this.#slots = opts.slots ?? 32;
    this.#data = new Uint8Array(this.#slots * SLOT_SIZE);
    this.#dv = new DataView(this.#data.buffer);
    this.#iov = new Uint8Array(this.#slots * IOVEC_SIZE);
    this.#mmsg = new Uint8Array(this.#slots * MMSGHDR_SIZE);
    this.#mmsgDv = new DataView(this.#mmsg.buffer);
    const dataAddr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#data)));
    this.#dataAddr = Number(dataAddr);
    const msgDv = new DataView(this.#sendMsg.buffer);
    msgDv.setBigUint64(
      16,
      BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#sendIov))),
      true,
    );
    const iovAddr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#iov)));
    const iovDv = new DataView(this.#iov.buffer);
    for (let i = 0; i < this.#slots; i++) {
      iovDv.setBigUint64(i * IOVEC_SIZE, dataAddr + BigInt(i * SLOT_SIZE), true);
      iovDv.setBigUint64(i * IOVEC_SIZE + 8, BigInt(SLOT_SIZE), true);
      const m = i * MMSGHDR_SIZE;
      // struct msghdr { void *msg_name; socklen_t msg_namelen; struct iovec *msg_iov;
      //   size_t msg_iovlen; void *msg_control; size_t msg_controllen; int msg_flags; }
      this.#mmsgDv.setBigUint64(m + 16, iovAddr + BigInt(i * IOVEC_SIZE), true);
      this.#mmsgDv.setBigUint64(m + 24, 1n, true);
    }
    this.rcvbuf = this.#getInt(SOL_SOCKET, SO_RCVBUF);
  }

  /**
   * Opens a netlink socket, binds queue `queueNum` and configures it. Throws NfqError with a
   * message that says what to do (missing CAP_NET_ADMIN, queue taken by another process).
   */
  static open(opts: NfqSocketOptions): NfqSocket {
    if (!HOST_LITTLE_ENDIAN) {
      // netlink headers are host-order and nfnetlink.ts reads them little-endian.
      throw new NfqError("NfqSocket.open", Errno.EINVAL, "big-endian hosts are not supported");
    }
    const n = loadNative();
    const fd = n.check(
      "socket(AF_NETLINK, NETLINK_NETFILTER)",
      n.libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER),
    );
    try {
      // struct sockaddr_nl { sa_family_t nl_family; unsigned short nl_pad; __u32 nl_pid; __u32 nl_groups; }
      // nl_pid 0: the kernel assigns our port id.
      const sa = new Uint8Array(12);
      new DataView(sa.buffer).setUint16(0, AF_NETLINK, true);
      n.check("bind(AF_NETLINK)", n.libc.bind(fd, sa, sa.length));
      // Error acknowledgements must not echo whole packets back to us.
      n.libc.setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, int32(1), 4);
      const force = n.libc.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, int32(opts.rcvbuf), 4);
      if (force < 0) {
        // Without CAP_NET_ADMIN the FORCE variant fails; the plain one is capped by rmem_max.
        n.check(
          "setsockopt(SO_RCVBUF)",
          n.libc.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, int32(opts.rcvbuf), 4),
        );
      }
      const sndbuf = opts.sndbuf ?? 1 << 20;
      if (n.libc.setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, int32(sndbuf), 4) < 0) {
        n.libc.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, int32(sndbuf), 4);
      }
      const ms = opts.recvTimeoutMs ?? 50;
      // struct timeval { time_t tv_sec; suseconds_t tv_usec; }
      const tv = new Uint8Array(16);
      const tvDv = new DataView(tv.buffer);
      tvDv.setBigInt64(0, BigInt(Math.floor(ms / 1000)), true);
      tvDv.setBigInt64(8, BigInt((ms % 1000) * 1000), true);
      n.check("setsockopt(SO_RCVTIMEO)", n.libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16));
    } catch (e) {
      n.libc.close(fd);
      throw e;
    }
    const sock = new NfqSocket(n, fd, opts);
    try {
      sock.#configure(opts);
    } catch (e) {
      sock.close();
      throw e;
    }
    return sock;
  }

  #getInt(level: number, name: number): number {
    const v = new Uint8Array(4);
    const len = int32(4);
    if (this.#n.libc.getsockopt(this.#fd, level, name, v, len) < 0) return -1;
    return new DataView(v.buffer).getInt32(0, true);
  }

  /** Builds one NFQNL_MSG_CONFIG with the library's builders; `fill` adds the attributes. */
  #config(fill: (nlh: Deno.PointerObject) => void): Uint8Array {
    const buf = new Uint8Array(256);
    const nlh = this.#n.nfq.nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, this.#queueNum);
    if (nlh === null) throw new NfqError("nfq_nlmsg_put", Errno.EINVAL, "returned NULL");
    fill(nlh);
    const dv = new DataView(buf.buffer);
    // Ask for an acknowledgement so that errors (EPERM, EBUSY) surface here, with our own seq.
    dv.setUint16(6, dv.getUint16(6, true) | NLM_F_ACK, true);
    dv.setUint32(8, ++this.#seq, true);
    return buf.subarray(0, dv.getUint32(0, true));
  }

  #configure(opts: NfqSocketOptions): void {
    const { nfq, mnl } = this.#n;
    const q = opts.queueNum;
    // Since Linux 3.8 the per-family PF_BIND commands are no-ops; one BIND serves IPv4 and IPv6.
    this.#request(
      "NFQNL_CFG_CMD_BIND",
      this.#config((nlh) => nfq.nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND)),
      (errno) => {
        // The kernel answers EPERM both without CAP_NET_ADMIN (nfnetlink_rcv_msg) and when
        // another socket owns the queue (nfqnl_recv_config); our capabilities tell them apart.
        const busy =
          `NFQUEUE ${q} is already bound by another process (another SSG, Suricata, ...): ` +
          `stop it or choose another gateway.queue.num`;
        if (errno === Errno.EBUSY) return busy;
        if (errno !== Errno.EPERM) return undefined;
        return ownCapNetAdmin()
          ? busy
          : `binding NFQUEUE ${q} needs CAP_NET_ADMIN: run SSG as root or grant cap_net_admin`;
      },
    );
    const mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
    const flags = (opts.failOpen ? NFQA_CFG_F_FAIL_OPEN : 0) |
      (opts.gso === false ? 0 : NFQA_CFG_F_GSO);
    this.#request(
      "NFQNL_CFG_PARAMS",
      this.#config((nlh) => {
        nfq.nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, NFQNL_MAX_COPY_RANGE);
        nfq.nfq_nlmsg_cfg_put_qmaxlen(nlh, opts.maxlen);
        // nfnetlink attribute values are big-endian: the library's callers pass htonl().
        mnl.mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, bswap32(flags));
        mnl.mnl_attr_put_u32(nlh, NFQA_CFG_MASK, bswap32(mask));
      }),
      () => undefined,
    );
  }

  /**
   * Sends one request and waits (bounded, 2 s) for its acknowledgement. Packets that arrive in
   * the meantime (the queue may already have rules feeding it) are accepted unmodified: no flow
   * exists yet, so that is what the Diverter would decide too.
   */
  #request(what: string, msg: Uint8Array, explain: (errno: number) => string | undefined): void {
    const seq = new DataView(msg.buffer, msg.byteOffset).getUint32(8, true);
    this.send(msg);
    const deadline = Date.now() + 2000;
    const accept = new VerdictWriter(this.#queueNum, 64 * 1024);
    let answer: number | undefined;
    const pkt = new QueuedPacket();
    const sink = {
      packet: (p: QueuedPacket) => {
        if (!accept.fits(0, false)) this.#flush(accept);
        accept.put(p.id, NF_ACCEPT);
      },
      error: (err: number, s: number) => {
        if (s === seq) answer = err;
      },
      malformed: () => {},
    };
    while (answer === undefined && Date.now() < deadline) {
      const got = this.receive();
      for (let i = 0; i < got; i++) {
        parseDatagram(
          this.#data,
          this.#dv,
          this.start(i),
          this.start(i) + this.length(i),
          sink,
          pkt,
        );
      }
      this.#flush(accept);
    }
    if (answer === undefined) {
      throw new NfqError(
        what,
        Errno.EAGAIN,
        `no answer from the kernel for NFQUEUE ${this.#queueNum}`,
      );
    }
    if (answer !== 0) {
      throw new NfqError(what, answer, explain(answer) ?? this.#n.strerror(answer));
    }
  }

  #flush(w: VerdictWriter): void {
    if (w.count > 0) this.send(w.view());
    w.clear();
  }

  /** The receive buffer holding all slots (read packets through `start(i)`/`length(i)`). */
  get buffer(): Uint8Array {
    return this.#data;
  }
  /** A DataView over `buffer`. */
  get view(): DataView {
    return this.#dv;
  }
  /** The socket's file descriptor (-1 after close). */
  get fd(): number {
    return this.#fd;
  }
  /** The queue number. */
  get queueNum(): number {
    return this.#queueNum;
  }

  /**
   * Reads up to `slots` datagrams: blocks up to the receive timeout for the first, then takes
   * whatever else is already waiting (MSG_WAITFORONE). Returns how many; 0 on timeout,
   * interruption or ENOBUFS (counted in `enobufs`). Throws on other errors or after `close()`.
   */
  receive(): number {
    if (this.#closed) throw new NfqError("recvmmsg", Errno.EINVAL, "socket closed");
    const got = this.#n.libc.recvmmsg(this.#fd, this.#mmsg, this.#slots, MSG_WAITFORONE, null);
    if (got >= 0) {
      for (let i = 0; i < got; i++) {
        if (this.#mmsgDv.getInt32(i * MMSGHDR_SIZE + 48, true) & MSG_TRUNC) this.truncated++;
      }
      return got;
    }
    const e = this.#n.errno();
    if (e === Errno.EAGAIN || e === Errno.EINTR) return 0;
    if (e === Errno.ENOBUFS) {
      this.enobufs++;
      return 0;
    }
    throw new NfqError("recvmmsg", e, this.#n.strerror(e));
  }

  /** Offset of datagram `i` (from the last `receive()`) in `buffer`. */
  start(i: number): number {
    return i * SLOT_SIZE;
  }
  /** Length of datagram `i` (bounded by the slot size). */
  length(i: number): number {
    return Math.min(this.#mmsgDv.getUint32(i * MMSGHDR_SIZE + 56, true), SLOT_SIZE);
  }

  /** Sends encoded netlink messages (one or many) to the kernel. Throws NfqError on failure. */
  send(bytes: Uint8Array): void {
    if (this.#closed) throw new NfqError("send", Errno.EINVAL, "socket closed");
    this.#n.check("send", this.#n.libc.send(this.#fd, bytes, BigInt(bytes.length), 0));
  }

  /**
   * Sends the verdicts of `w` in one system call: `send` when it holds no references, else
   * `sendmsg` with the buffer's bytes and the referenced payloads (which must lie in `buffer`,
   * i.e. `w.source === this.buffer`) as an iovec array — no copy of the packets in userspace.
   */
  sendVerdicts(w: VerdictWriter): void {
    const refs = w.refCount;
    if (refs === 0) {
      this.send(w.view());
      return;
    }
    if (this.#closed) throw new NfqError("sendmsg", Errno.EINVAL, "socket closed");
    if (w.source !== this.#data || refs > MAX_VERDICT_REFS) {
      throw new NfqError("sendmsg", Errno.EINVAL, "verdicts reference a foreign buffer");
    }
    const dv = this.#sendIovDv;
    const wAddr = writerAddress(w);
    let n = 0;
    let from = 0;
    const iov = (addr: number, len: number) => {
      const o = n++ * IOVEC_SIZE;
      dv.setUint32(o, addr % 0x100000000, true);
      dv.setUint32(o + 4, Math.floor(addr / 0x100000000), true);
      dv.setUint32(o + 8, len, true);
      dv.setUint32(o + 12, 0, true);
    };
    for (let i = 0; i < refs; i++) {
      const at = w.refAt(i);
      if (at > from) iov(wAddr + from, at - from);
      iov(this.#dataAddr + w.refOffset(i), w.refLength(i));
      from = at;
    }
    if (w.length > from) iov(wAddr + from, w.length - from);
    this.#sendMsgDv.setUint32(24, n, true); // msg_iovlen (size_t; the high half stays 0)
    const sent = this.#n.check("sendmsg", this.#n.libc.sendmsg(this.#fd, this.#sendMsg, 0));
    if (sent !== w.totalLength) {
      throw new NfqError("sendmsg", Errno.EINVAL, `sent ${sent} of ${w.totalLength} bytes`);
    }
  }

  /** Unbinds the queue (best effort) and closes the socket. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    try {
      const msg = this.#config((nlh) =>
        this.#n.nfq.nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_UNBIND)
      );
      this.#n.libc.send(this.#fd, msg, BigInt(msg.length), 0);
    } catch {
      // Closing the socket unbinds too (nfqnl_rcv_nl_event on NETLINK_URELEASE).
    }
    this.#closed = true;
    this.#n.libc.close(this.#fd);
    this.#fd = -1;
  }
}

const writerAddresses = new WeakMap<VerdictWriter, number>();
function writerAddress(w: VerdictWriter): number {
  let a = writerAddresses.get(w);
  if (a === undefined) {
    a = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(w.buffer)));
    writerAddresses.set(w, a);
  }
  return a;
}

/** Whether this process has CAP_NET_ADMIN (false when /proc cannot be read). */
function ownCapNetAdmin(): boolean {
  try {
    return hasCapability(Deno.readTextFileSync("/proc/self/status"), CAP_NET_ADMIN);
  } catch {
    return false;
  }
}

/** htonl on a little-endian host. */
function bswap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}
