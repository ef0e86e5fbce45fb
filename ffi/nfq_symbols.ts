/**
 * The FFI symbol tables: libnetfilter_queue.so.1, libmnl.so.0 and libc, with the C prototype
 * beside each entry. This file and `nfq_socket.ts` are the only places that touch C memory.
 *
 * Which API, and why: libnetfilter_queue 1.0.5 offers the old callback API (`nfq_open`,
 * `nfq_handle_packet` calling a C→JS callback per packet) and the libmnl-style message builders
 * (`nfq_nlmsg_*`). A JS callback per packet costs a V8 re-entry each time (performance-anchors.md
 * §3), so we use the builders for the queue configuration messages and do the socket I/O with libc
 * (`recvmmsg`, `send`): no callback, no Promise, many packets per system call. The per-packet
 * netlink parsing and verdict encoding are done in TypeScript over reused buffers
 * (`nfnetlink.ts`); a unit test proves the TypeScript verdict encoding byte-identical to the
 * library's own `nfq_nlmsg_verdict_put*` output.
 *
 * Caution: every symbol here is unsafe. Pointers returned by C must not leave this directory, and
 * bytes must be copied out of C memory before they do.
 */

/** libnetfilter_queue.so.1 (Debian package libnetfilter-queue1, 1.0.5). */
export const NFQ_SYMBOLS = {
  /** struct nlmsghdr *nfq_nlmsg_put(char *buf, int type, uint32_t queue_num); */
  nfq_nlmsg_put: { parameters: ["buffer", "i32", "u32"], result: "pointer" },
  /** void nfq_nlmsg_cfg_put_cmd(struct nlmsghdr *nlh, uint16_t pf, uint8_t cmd); */
  nfq_nlmsg_cfg_put_cmd: { parameters: ["pointer", "u16", "u8"], result: "void" },
  /** void nfq_nlmsg_cfg_put_params(struct nlmsghdr *nlh, uint8_t mode, int range); */
  nfq_nlmsg_cfg_put_params: { parameters: ["pointer", "u8", "i32"], result: "void" },
  /** void nfq_nlmsg_cfg_put_qmaxlen(struct nlmsghdr *nlh, uint32_t qmaxlen); */
  nfq_nlmsg_cfg_put_qmaxlen: { parameters: ["pointer", "u32"], result: "void" },
  /** void nfq_nlmsg_verdict_put(struct nlmsghdr *nlh, int id, int verdict); */
  nfq_nlmsg_verdict_put: { parameters: ["pointer", "i32", "i32"], result: "void" },
  /** void nfq_nlmsg_verdict_put_mark(struct nlmsghdr *nlh, uint32_t mark); */
  nfq_nlmsg_verdict_put_mark: { parameters: ["pointer", "u32"], result: "void" },
  /** void nfq_nlmsg_verdict_put_pkt(struct nlmsghdr *nlh, const void *pkt, uint32_t pktlen); */
  nfq_nlmsg_verdict_put_pkt: { parameters: ["pointer", "buffer", "u32"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** libmnl.so.0 (pulled in by libnetfilter-queue1). */
export const MNL_SYMBOLS = {
  /** void mnl_attr_put_u32(struct nlmsghdr *nlh, uint16_t type, uint32_t data); */
  mnl_attr_put_u32: { parameters: ["pointer", "u16", "u32"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** libc.so.6 (glibc): the socket calls and errno. */
export const LIBC_SYMBOLS = {
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen); */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  /** int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen); */
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  /** ssize_t send(int sockfd, const void *buf, size_t len, int flags); */
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  /** ssize_t sendmsg(int sockfd, const struct msghdr *msg, int flags); */
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** int recvmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags,
   *              struct timespec *timeout); */
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "pointer"], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** int *__errno_location(void);  (glibc: the calling thread's errno) */
  __errno_location: { parameters: [], result: "pointer" },
  /** char *strerror(int errnum); */
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** File names tried, in order, for each library. */
export const LIBRARY_FILES = {
  nfq: "libnetfilter_queue.so.1",
  mnl: "libmnl.so.0",
  libc: "libc.so.6",
} as const;
