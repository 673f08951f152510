/**
 * @fleet/native-vz — Linux half: AF_UNIX/SOCK_DGRAM socketpairs, TAP devices, fd flags and
 * batched frame I/O (FramePort) integrated with libuv readiness. See README.md for the rules on
 * receive-buffer lifetime. On macOS the same module also carries Virtualization.framework and
 * vmnet (src/vz.ts, interface in src/vz-types.ts; never run on a Mac yet, see docs/macos.md).
 */
import { createRequire } from 'node:module';
import os from 'node:os';

/** Stats of a FramePort; all counters are cumulative since the port was created. */
export interface FramePortStats {
  rxFrames: number;
  rxBytes: number;
  /** JS callbacks (one per recvmmsg / read loop that returned frames). */
  rxBatches: number;
  /** Readability wakeups from libuv. */
  rxWakeups: number;
  /** Datagrams larger than frameSize (dropped, never delivered). */
  rxTruncated: number;
  rxErrors: number;
  /** Frames accepted by the kernel (with a sender thread: frames the thread wrote). */
  txFrames: number;
  txBytes: number;
  /** sendmmsg calls that sent at least one frame (TAP: write loops that wrote at least one). */
  txBatches: number;
  /** send()/sendBatch() calls. */
  txCalls: number;
  /** Frames passed to send()/sendBatch() that were not accepted (EAGAIN, ENOBUFS or an error). A caller that retries them sees them counted again. With a sender thread: frames its queue had no room for (txQueueFull), plus frames the kernel refused for good or that were queued when the port closed. */
  txDrops: number;
  /** Send errors other than EAGAIN/ENOBUFS (e.g. ECONNREFUSED: the peer closed its end). */
  txErrors: number;
  eagain: number;
  enobufs: number;
  /** AF_PACKET only (0 otherwise): frames the kernel dropped because this socket's receive queue was full (PACKET_STATISTICS tp_drops). */
  rxQueueDrops: number;
  /** AF_PACKET only: frames refused because their checksum was not filled in yet (TP_STATUS_CSUMNOTREADY: offloads on the sending device). */
  rxCsumPartial: number;
  /** AF_PACKET only: frames refused because the device moved their VLAN tag into metadata (TP_STATUS_VLAN_VALID). */
  rxVlanStripped: number;
  /** Stream framing only (0 otherwise): length prefixes beyond QEMU's own limit (64 KiB + 4 KiB); the stream was shut down, since nothing after them can be trusted to be a frame. */
  rxBadLength: number;
  /** Stream framing only: the peer closed the stream (reading stopped). */
  rxEof: number;
  /** Stream framing only: sends the kernel took only part of a frame of; its rest was kept and written first, later. */
  txPartial: number;
  /** Stream framing only: bytes of such a kept frame tail not written yet (at most one frame). */
  txPendingBytes: number;
  /** AF_PACKET only: slots of the receive ring (rxRingFrames), 0 when frames are read with recvmmsg. */
  rxRingSlots: number;
  /** TAP on Linux only: 1 while the port reads and writes its frames through io_uring (a batch per system call), 0 with read()/write() loops (no liburing at build time, io_uring refused by the kernel, FLEET_TAP_IO_URING=0, or after a fallback). */
  tapIoUring: number;
  /** TAP only: times the port went back to read()/write() for good: the fd refused RWF_NOWAIT (EOPNOTSUPP; nothing lost, the batch went out with write()), or a request did not complete at once (cancelled; that batch counted as dropped). */
  ioUringFallbacks: number;
  /** TAP through io_uring only (0 otherwise): system calls that each read a round of frames (up to a batch, until the TAP was empty). */
  ioUringRxCalls: number;
  /** TAP through io_uring only (0 otherwise): system calls that each wrote a chunk of one send (up to the ring's size: the port's batch, at least 64). */
  ioUringTxCalls: number;
  /** Sender thread only (0 otherwise): frames send()/sendBatch() refused because the queue was full (also in txDrops). */
  txQueueFull: number;
  /** Sender thread only: frames and bytes waiting in the queue now. */
  txQueuedFrames: number;
  txQueuedBytes: number;
  /** errno name of the most recent error, or null. */
  lastError: string | null;
}

/** One received batch. The same object (and the same memory) is reused for every batch: valid only during the callback. */
export interface FrameBatch {
  /** The port's receive area (batch × frameSize bytes). Frame i is buffer[offsets[i] .. offsets[i] + lengths[i]). */
  readonly buffer: Buffer;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  /** Number of frames in this batch (entries past count are stale). */
  count: number;
}

export interface FramePortOptions {
  /** Frames per recvmmsg / read loop (1..1024). Default 64. */
  batch?: number;
  /** Receive slot size; larger datagrams are dropped and counted as rxTruncated. Default 65536. */
  frameSize?: number;
  /** Close the fd when the port is closed. Default true. */
  ownsFd?: boolean;
  /** Batches delivered per readability wakeup before yielding to the event loop. Default 16. */
  maxBatchesPerWakeup?: number;
  /**
   * Linux (issue 20): > 0 gives the port a sender thread with a queue of this many bytes.
   * send()/sendBatch() then copy the frames into the queue and return at once (a prefix that fit;
   * the rest is dropped and counted as txQueueFull), and the thread writes them — sendmmsg,
   * or write() per frame on a TAP — waiting for the fd when the peer is slow instead of dropping.
   * The kernel's share of sending then runs beside the caller's thread. waitWritable() resolves
   * when the queue is at most half full. 0 (default): send on the calling thread. Ignored on a
   * stream socket (one sendmsg there moves a whole batch; a thread only adds a copy and a wake-up).
   */
  sendQueueBytes?: number;
  /**
   * Linux, AF_PACKET sockets without PACKET_VNET_HDR (issue 20): > 0 receives through a ring of
   * about this many slots shared with the kernel (PACKET_RX_RING, TPACKET_V2) instead of
   * recvmmsg: the kernel copies each frame in where it receives it, this thread copies it out
   * without a system call. Same counters (pending checksums, VLAN tags, truncation, queue drops).
   * Ignored for other kinds. frameSize must be at most 16384. 0 (default): recvmmsg.
   */
  rxRingFrames?: number;
}

interface NativePort {
  start(cb: (count: number) => void): void;
  stop(): void;
  send(frames: readonly Uint8Array[]): number;
  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  waitWritable(cb: () => void): void;
  stats(): FramePortStats;
  close(): void;
  ref(): void;
  unref(): void;
  readonly kind: FramePortKind;
  readonly closed: boolean;
  readonly sendThread: boolean;
}

/**
 * 'dgram': SOCK_DGRAM socket; 'packet': AF_PACKET SOCK_RAW socket (openPacketSocket); 'stream':
 * AF_UNIX SOCK_STREAM socket with QEMU's `-netdev stream` framing (socketpairStream); 'tap': any
 * other fd (openTap).
 */
export type FramePortKind = 'dgram' | 'packet' | 'stream' | 'tap';

interface NativeFdWatch {
  /** One-shot: cb(null) once the fd is readable, cb('EBADF' etc.) if polling fails. */
  wait(cb: (err: string | null) => void): void;
  close(): void;
  unref(): void;
}

export type FdKind = 'dgram' | 'stream' | 'seqpacket' | 'socket' | 'char' | 'file' | 'other';

interface NativeBinding {
  platform: string;
  socketpairDgram(sndbuf: number, rcvbuf: number, nonblock: boolean): [number, number];
  /** Linux only (frame_port.cc). */
  socketpairStream?(sndbuf: number): [number, number];
  getBufferSizes(fd: number): { sndbuf: number; rcvbuf: number };
  openTap(name: string, nonblock: boolean): { fd: number; name: string };
  setCloexec(fd: number, on: boolean): void;
  setNonBlocking(fd: number, on: boolean): void;
  fdInfo(fd: number): { cloexec: boolean; nonblock: boolean; kind: FdKind };
  closeFd(fd: number): void;
  unixListen(path: string, mode: number, backlog: number): number;
  unixAccept(listenFd: number): number | null;
  unixConnect(path: string): number;
  peerCredentials(fd: number): PeerCredentials;
  sendFds(sock: number, fds: number[], data: Uint8Array): void;
  recvFds(sock: number, maxFds: number, maxBytes: number): ReceivedFds | null;
  FdWatch: new (fd: number) => NativeFdWatch;
  copyFileFromFd(srcFd: number, dstPath: string, mode: number): Promise<CopyFileFromFdResult>;
  /** Linux only (process_guard.cc). */
  setNonDumpable?(): void;
  setNoNewPrivs?(): void;
  processGuard?(): { dumpable: boolean; noNewPrivs: boolean };
  /** Linux only (packet_socket.cc). */
  openPacketSocket?(nsPath: string, ifname: string, opts: PacketSocketOptions): { fd: number; ifindex: number };
  linkOffloads?(nsPath: string, ifname: string, disable: boolean): LinkOffloads;
  openVnetTap?(nsPath: string, ifname: string, offloads: number, up: boolean): { fd: number; name: string; ifindex: number };
  linkStats?(nsPath: string, ifname: string): LinkStats;
  packetRebind?(fd: number, ifindex: number): number;
  /** Linux only: the addon was built with liburing (TAP ports batch through io_uring when the kernel allows). */
  tapIoUringBuilt?: boolean;
  /** Linux only: 0 if this process can set up an io_uring now, else the errno (ENOSYS without liburing). */
  tapIoUringProbe?(): number;
  FramePort: new (
    fd: number,
    area: ArrayBuffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    frameSize: number,
    batch: number,
    ownsFd: boolean,
    maxBatches: number,
    sendQueueBytes: number,
    rxRingFrames: number,
  ) => NativePort;
}

function load(): NativeBinding {
  if (process.platform !== 'linux' && process.platform !== 'darwin') {
    throw new Error(`@fleet/native-vz: supported on Linux and macOS only (platform ${process.platform})`);
  }
  const require = createRequire(import.meta.url);
  try {
    return require('../build/Release/native_vz.node') as NativeBinding;
  } catch (err) {
    const e = new Error(
      '@fleet/native-vz: build/Release/native_vz.node could not be loaded; build it with `pnpm install` ' +
        '(or `pnpm --filter @fleet/native-vz rebuild`), which needs g++, make, python3 and Node headers',
    );
    (e as Error & { cause?: unknown }).cause = err;
    throw e;
  }
}

const native: NativeBinding = load();

/**
 * Whether this build batches TAP reads and writes through io_uring (Linux, built with liburing:
 * Debian's liburing-dev, linked statically). Each TAP port then says in `stats().tapIoUring`
 * whether the kernel let it.
 */
export const TAP_IO_URING_BUILT: boolean = native.tapIoUringBuilt === true;

/**
 * Whether a TAP port made now in this process would batch through io_uring: `ok`, or why not
 * (`built: false`: no liburing at build time; else the errno name io_uring_setup answered, e.g.
 * EPERM with kernel.io_uring_disabled set). A check for operators (fleet-worker doctor).
 */
export function tapIoUringStatus(): { ok: boolean; built: boolean; error: string | null } {
  if (!TAP_IO_URING_BUILT || !native.tapIoUringProbe) return { ok: false, built: false, error: null };
  const e = native.tapIoUringProbe();
  if (e === 0) return { ok: true, built: true, error: null };
  const name = Object.entries(os.constants.errno).find(([, v]) => v === e)?.[0];
  return { ok: false, built: true, error: name ?? `errno ${e}` };
}

/** Tart's sizes: 1 MiB send, 4 MiB receive. */
export const DEFAULT_SNDBUF = 1 << 20;
export const DEFAULT_RCVBUF = 4 << 20;

/**
 * A connected AF_UNIX/SOCK_DGRAM socketpair, close-on-exec on both ends (one Ethernet frame per
 * datagram, the contract of VZFileHandleNetworkDeviceAttachment and QEMU's `-netdev dgram`).
 * Buffer sizes are requested with SO_{SND,RCV}BUFFORCE when privileged (else capped at
 * net.core.{w,r}mem_max); Linux reports twice the requested value — see getBufferSizes().
 */
export function socketpairDgram(opts: { sndbuf?: number; rcvbuf?: number; nonblock?: boolean } = {}): [number, number] {
  const sndbuf = opts.sndbuf ?? DEFAULT_SNDBUF;
  const rcvbuf = opts.rcvbuf ?? DEFAULT_RCVBUF;
  for (const [k, v] of [['sndbuf', sndbuf], ['rcvbuf', rcvbuf]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) throw new RangeError(`socketpairDgram: ${k} must be an integer in 0..2^31-1 (0 = kernel default)`);
  }
  return native.socketpairDgram(sndbuf, rcvbuf, opts.nonblock ?? false);
}

/**
 * A connected AF_UNIX/SOCK_STREAM socketpair, close-on-exec and non-blocking on both ends, for
 * QEMU's `-netdev stream` (`addr.type=fd`): every frame is a 4-byte big-endian length followed by
 * the frame, so one read or write moves many frames. A FramePort on either end speaks that framing
 * (kind 'stream'). `sndbuf` bounds the bytes queued by each writer (SO_SNDBUFFORCE when privileged,
 * else capped at net.core.wmem_max). Linux only.
 */
export function socketpairStream(opts: { sndbuf?: number } = {}): [number, number] {
  if (!native.socketpairStream) throw new Error('socketpairStream: Linux only');
  const sndbuf = opts.sndbuf ?? DEFAULT_SNDBUF;
  if (!Number.isInteger(sndbuf) || sndbuf < 0 || sndbuf > 0x7fffffff) throw new RangeError('socketpairStream: sndbuf must be an integer in 0..2^31-1 (0 = kernel default)');
  return native.socketpairStream(sndbuf);
}

/** The socket buffer sizes the kernel applies (SO_SNDBUF / SO_RCVBUF as read back). */
export function getBufferSizes(fd: number): { sndbuf: number; rcvbuf: number } {
  return native.getBufferSizes(fd);
}

/**
 * Opens (creating if needed) the TAP device `name` on /dev/net/tun with IFF_TAP|IFF_NO_PI:
 * one read()/write() = one Ethernet frame, no packet-info header. Close-on-exec; non-blocking
 * unless `nonblock: false`. The device is not persistent: it disappears when the last fd closes.
 * An empty name lets the kernel choose (`tap%d`); the chosen name is returned.
 * Errors: EPERM/EACCES "needs root or CAP_NET_ADMIN", ENOENT "/dev/net/tun is missing", EBUSY.
 */
export function openTap(name: string, opts: { nonblock?: boolean } = {}): { fd: number; name: string } {
  return native.openTap(name, opts.nonblock ?? true);
}

/** Clears FD_CLOEXEC so the fd survives exec() at the same number (e.g. `qemu ... local.str=<fd>`). */
export function clearCloexec(fd: number): void {
  native.setCloexec(fd, false);
}
export function setCloexec(fd: number, on = true): void {
  native.setCloexec(fd, on);
}
export function setNonBlocking(fd: number, on = true): void {
  native.setNonBlocking(fd, on);
}
export function fdInfo(fd: number): { cloexec: boolean; nonblock: boolean; kind: FdKind } {
  return native.fdInfo(fd);
}
/** close(2) on a raw fd (one that no FramePort owns). */
export function closeFd(fd: number): void {
  native.closeFd(fd);
}

// ---- Handing an fd to another uid: unix stream rendezvous + SCM_RIGHTS (README.md) ----

/** Credentials of the process at the other end of a unix socket, as of its connect()/listen(). */
export interface PeerCredentials {
  /** Effective uid. */
  uid: number;
  /** Effective gid. */
  gid: number;
  /** Absent when the kernel cannot tell (e.g. a peer in another pid namespace). */
  pid?: number;
}

/** What one recvFds() call took off the socket. */
export interface ReceivedFds {
  data: Buffer;
  /** Close-on-exec; the caller owns them (closeFd, FramePort, `net.Socket({ fd })`). */
  fds: number[];
}

export const MAX_SEND_FDS = 8;
export const MAX_FD_MESSAGE_BYTES = 64 * 1024;

function checkFd(fn: string, name: string, fd: unknown): asserts fd is number {
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
    throw argError(TypeError, fn, `${name} must be a non-negative integer fd (got ${describe(fd)})`, 'ERR_INVALID_ARG_TYPE');
  }
}
function checkInt(fn: string, name: string, v: unknown, lo: number, hi: number): asserts v is number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw argError(RangeError, fn, `${name} must be an integer in ${lo}..${hi} (got ${describe(v)})`, 'ERR_OUT_OF_RANGE');
  }
}
function checkPath(fn: string, path: unknown): asserts path is string {
  if (typeof path !== 'string') throw argError(TypeError, fn, `path must be a string (got ${describe(path)})`, 'ERR_INVALID_ARG_TYPE');
}
function describe(v: unknown): string {
  return typeof v === 'number' || typeof v === 'boolean' ? String(v) : v === null ? 'null' : typeof v;
}
function argError(Ctor: typeof TypeError | typeof RangeError, fn: string, msg: string, code: string): Error {
  const e = new Ctor(`${fn}: ${msg}`) as Error & { code: string };
  e.code = code;
  return e;
}

/**
 * A listening AF_UNIX stream socket at `path`: non-blocking, close-on-exec. The socket file gets
 * `mode` (default 0o600) before listen(), so nobody can connect through the umask's mode in
 * between; give it to another uid with `fs.chownSync(path, uid, gid)` (connect needs write
 * permission on the file and search permission on every directory above it). The directory must
 * not be writable by that uid. An existing path is never unlinked: EADDRINUSE. A path that does
 * not fit sun_path (108 bytes on Linux, 104 on macOS, NUL included) fails with ENAMETOOLONG.
 * Closing the fd (closeFd) leaves the file behind: unlink it when done.
 */
export function unixListen(path: string, opts: { mode?: number; backlog?: number } = {}): number {
  checkPath('unixListen', path);
  const mode = opts.mode ?? 0o600;
  const backlog = opts.backlog ?? 16;
  checkInt('unixListen', 'mode', mode, 0, 0o777);
  checkInt('unixListen', 'backlog', backlog, 1, 65535);
  return native.unixListen(path, mode, backlog);
}

/**
 * accept() on a listening fd from unixListen, without blocking: the connected fd, or null when no
 * connection is pending. The returned fd is close-on-exec and BLOCKING on both systems (macOS
 * would inherit the listener's O_NONBLOCK; it is cleared), so sendFds writes whole messages;
 * `new net.Socket({ fd, readable: true, writable: true })` makes it non-blocking itself.
 */
export function unixAccept(listenFd: number): number | null {
  checkFd('unixAccept', 'listenFd', listenFd);
  return native.unixAccept(listenFd);
}

/**
 * Connects to the unix stream socket at `path`; returns a BLOCKING, close-on-exec fd (as
 * unixAccept). Never waits: a listener with a full backlog fails at once (EAGAIN on Linux,
 * ECONNREFUSED on macOS); ENOENT/ECONNREFUSED when nobody listens.
 */
export function unixConnect(path: string): number {
  checkPath('unixConnect', path);
  return native.unixConnect(path);
}

/**
 * The peer's effective uid/gid (and pid when known) as of its connect() — or, seen from the
 * connecting side, the listener's as of listen(). Linux SO_PEERCRED; macOS getpeereid() and
 * LOCAL_PEERPID. Throws ENOTCONN on an unconnected socket. Authorize by uid, never by pid alone
 * (a pid can be reused once that process exits).
 */
export function peerCredentials(fd: number): PeerCredentials {
  checkFd('peerCredentials', 'fd', fd);
  return native.peerCredentials(fd);
}

/**
 * Sends `fds` (1..8) with `data` (1 byte..64 KiB) in one sendmsg with one SCM_RIGHTS message. The
 * receiver gets its own duplicates: close yours when you no longer need them. On a stream socket
 * the rest of a partly accepted message is written at once, waiting up to 5 s for room (the
 * connection would be unusable with half a message); EAGAIN before anything was sent is thrown
 * (nothing sent). No SIGPIPE (MSG_NOSIGNAL / SO_NOSIGPIPE): a closed peer throws EPIPE.
 */
export function sendFds(sock: number, fds: readonly number[], data: Uint8Array): void {
  checkFd('sendFds', 'sock', sock);
  if (!Array.isArray(fds)) throw argError(TypeError, 'sendFds', `fds must be an array (got ${describe(fds)})`, 'ERR_INVALID_ARG_TYPE');
  if (fds.length < 1 || fds.length > MAX_SEND_FDS) {
    throw argError(RangeError, 'sendFds', `fds must hold 1..${MAX_SEND_FDS} descriptors (got ${fds.length})`, 'ERR_OUT_OF_RANGE');
  }
  fds.forEach((fd, i) => checkFd('sendFds', `fds[${i}]`, fd));
  if (!(data instanceof Uint8Array)) throw argError(TypeError, 'sendFds', `data must be a Buffer or Uint8Array (got ${describe(data)})`, 'ERR_INVALID_ARG_TYPE');
  if (data.byteLength < 1 || data.byteLength > MAX_FD_MESSAGE_BYTES) {
    throw argError(RangeError, 'sendFds', `data must be 1..${MAX_FD_MESSAGE_BYTES} bytes (got ${data.byteLength})`, 'ERR_OUT_OF_RANGE');
  }
  native.sendFds(sock, [...fds], data);
}

/**
 * One recvmsg(MSG_DONTWAIT): never blocks; null when nothing is queued. Received fds are
 * close-on-exec (MSG_CMSG_CLOEXEC on Linux, FD_CLOEXEC right after on macOS).
 *
 * - Stream sockets have no message boundaries: `data` is whatever is queued, up to `maxBytes`
 *   (default 64 KiB) — maybe only the start of what the peer sent with the fds, maybe followed by
 *   bytes it wrote later. Make the first message self-delimiting (e.g. one JSON line) and hand any
 *   bytes past it to the socket that takes over (`socket.unshift(rest)`).
 * - End of stream (the peer closed; nothing and no fds queued) THROWS an Error with
 *   `code: 'EOF'`. On a datagram socket an empty datagram is returned as `{ data: <empty>, fds: [] }`.
 * - More fds than `maxFds` (default 8, 0..64; MSG_CTRUNC), or a datagram longer than maxBytes:
 *   every fd received is closed and EMSGSIZE is thrown (the message is lost).
 */
export function recvFds(sock: number, opts: { maxFds?: number; maxBytes?: number } = {}): ReceivedFds | null {
  checkFd('recvFds', 'sock', sock);
  const maxFds = opts.maxFds ?? MAX_SEND_FDS;
  const maxBytes = opts.maxBytes ?? MAX_FD_MESSAGE_BYTES;
  checkInt('recvFds', 'maxFds', maxFds, 0, 64);
  checkInt('recvFds', 'maxBytes', maxBytes, 1, MAX_FD_MESSAGE_BYTES);
  return native.recvFds(sock, maxFds, maxBytes);
}

/**
 * Resolves once `fd` is readable — a pending connection on a listening fd (then unixAccept), or
 * data, fds or EOF on a connected one (then recvFds) — using libuv readiness (no timer, no
 * thread). Neither reads nor closes the fd. Rejects with the poll error (e.g. EBADF), or with an
 * AbortError when `signal` aborts. `unref: true` lets the process exit while waiting. Do not use it
 * on an fd a net.Socket or FramePort is polling (libuv keeps one watcher per fd).
 */
export function waitReadable(fd: number, opts: { signal?: AbortSignal; unref?: boolean } = {}): Promise<void> {
  checkFd('waitReadable', 'fd', fd);
  const { signal } = opts;
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return new Promise<void>((resolve, reject) => {
    const w = new native.FdWatch(fd);
    const onAbort = (): void => {
      w.close();
      reject(abortError(signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.unref) w.unref();
    w.wait((err) => {
      signal?.removeEventListener('abort', onAbort);
      w.close();
      if (err === null) resolve();
      else reject(Object.assign(new Error(`waitReadable: poll failed: ${err}`), { code: err, syscall: 'poll' }));
    });
  });
}
function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('waitReadable: aborted', { cause: signal.reason }), { name: 'AbortError', code: 'ABORT_ERR' });
}

// ---- Copying a file root holds open (issue 17: the VM user's Tart bundle) ----

/** How copyFileFromFd copied. */
export type CopyFileMethod = 'clone' | 'copy_file_range' | 'sparse-copy';

export interface CopyFileFromFdResult {
  /** Size of the copy in bytes (the source's size when the copy started; holes included). */
  bytes: number;
  /**
   * 'clone': a copy-on-write clone (macOS fclonefileat on APFS; Linux ioctl FICLONE on btrfs/xfs).
   * 'copy_file_range': Linux, every data extent copied in the kernel. 'sparse-copy': data extents
   * read and written with pread/pwrite (all-zero 1 MiB chunks left as holes), or nothing to copy.
   */
  method: CopyFileMethod;
}

/**
 * Copies the regular file open at `srcFd` into a NEW file `dstPath`, keeping holes, on libuv's
 * threadpool (the event loop is never blocked; one threadpool thread is busy for the length of
 * the copy). The source is never re-opened by path: the copy reads a dup of `srcFd` (closing
 * `srcFd` meanwhile is harmless).
 *
 * - `dstPath` is created O_CREAT|O_EXCL|O_NOFOLLOW: an existing file, directory or symlink (even a
 *   dangling one) rejects with EEXIST (or ELOOP) and is left untouched; a link is never followed.
 *   The new file is the caller's and gets `mode` (default 0o644, 0..0o777) by fchmod at the end,
 *   whatever the umask (0600 while the copy runs).
 * - macOS: fclonefileat (APFS clone, CLONE_NOOWNERCOPY so root's copy is root's), falling back to
 *   the sparse copy when the volume cannot clone (ENOTSUP, EXDEV, ...). Linux: ioctl FICLONE, then
 *   per data extent (lseek SEEK_DATA/SEEK_HOLE) copy_file_range, falling back to pread/pwrite
 *   (EXDEV/ENOSYS/EINVAL/EOPNOTSUPP); ftruncate to the size at the end keeps trailing holes.
 * - The source's file offset (shared with its dups) is moved by SEEK_DATA/SEEK_HOLE while the copy
 *   runs and restored afterwards: do not read()/write() through it meanwhile (pread is fine).
 *   The copy is of the file as it is while it runs: stop its writer first.
 * - On failure after `dstPath` was created it is unlinked (by that path: keep it in a directory
 *   only root can write), so no partial copy stays.
 *
 * Bad arguments THROW (TypeError/RangeError, synchronously); system errors REJECT with an Error
 * carrying code/errno/syscall (EBADF for a closed fd, EINVAL "not a regular file", EEXIST, ENOSPC,
 * ...). The macOS branch has not been compiled on a Mac yet (docs/macos.md).
 */
export function copyFileFromFd(srcFd: number, dstPath: string, opts: { mode?: number } = {}): Promise<CopyFileFromFdResult> {
  checkFd('copyFileFromFd', 'srcFd', srcFd);
  if (typeof dstPath !== 'string') {
    throw argError(TypeError, 'copyFileFromFd', `dstPath must be a string (got ${describe(dstPath)})`, 'ERR_INVALID_ARG_TYPE');
  }
  if (dstPath.length === 0 || dstPath.includes('\0')) {
    throw argError(RangeError, 'copyFileFromFd', 'dstPath must be a non-empty string without NUL bytes', 'ERR_OUT_OF_RANGE');
  }
  if (opts === null || typeof opts !== 'object') {
    throw argError(TypeError, 'copyFileFromFd', `opts must be an object (got ${describe(opts)})`, 'ERR_INVALID_ARG_TYPE');
  }
  const mode = opts.mode ?? 0o644;
  checkInt('copyFileFromFd', 'mode', mode, 0, 0o777);
  return native.copyFileFromFd(srcFd, dstPath, mode);
}

/**
 * prctl(PR_SET_DUMPABLE, 0): no same-uid process may ptrace this one or open its /proc/<pid>/mem
 * or fd/ (Linux; the VM host process, whose QEMU runs as the same uid). Throws elsewhere.
 */
export function setNonDumpable(): void {
  if (!native.setNonDumpable) throw new Error('setNonDumpable: Linux only');
  native.setNonDumpable();
}
/** prctl(PR_SET_NO_NEW_PRIVS, 1) for this thread and everything it executes (Linux). */
export function setNoNewPrivs(): void {
  if (!native.setNoNewPrivs) throw new Error('setNoNewPrivs: Linux only');
  native.setNoNewPrivs();
}
/** This thread's dumpable flag and no_new_privs (Linux). */
export function processGuard(): { dumpable: boolean; noNewPrivs: boolean } {
  if (!native.processGuard) throw new Error('processGuard: Linux only');
  return native.processGuard();
}

// ---- The veth uplink (issue 20): AF_PACKET sockets in a per-VM network namespace ----

export interface PacketSocketOptions {
  /** SO_RCVBUF(FORCE) in bytes (0 = kernel default). */
  rcvbuf?: number;
  /** SO_SNDBUF(FORCE) in bytes (0 = kernel default). */
  sndbuf?: number;
  /** PACKET_QDISC_BYPASS: sent frames skip the device's qdisc (veth has none by default). Default false. */
  qdiscBypass?: boolean;
  /** PACKET_IGNORE_OUTGOING: frames this socket sends are not looped back to it. Default true. */
  ignoreOutgoing?: boolean;
  /** PACKET_AUXDATA, so FramePort can refuse (and count) frames with a pending checksum or a stripped VLAN tag. Default true. */
  auxdata?: boolean;
  /**
   * PACKET_VNET_HDR: every frame read or written starts with a 10-byte `struct virtio_net_hdr`
   * (VNET_HDR_LEN), so GSO super-frames (up to 64 KiB) and frames whose checksum is still to be
   * filled in cross whole; FramePort then forwards frames with a pending checksum instead of
   * refusing them. Default false.
   */
  vnetHdr?: boolean;
}

/** Length of the `struct virtio_net_hdr` that PACKET_VNET_HDR sockets and openVnetTap TAPs put before every frame. */
export const VNET_HDR_LEN = 10;

/** TUNSETOFFLOAD bits (linux/if_tun.h): what a TAP's reader accepts in a virtio-net header. */
export const TunOffload = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08 } as const;

/** The largest frame a virtio-net header can carry: an IPv4 datagram of 65,535 bytes in an Ethernet frame. */
export const VNET_MAX_FRAME = 65535 + 14;

/** Offload switches of a link as read back (legacy ethtool commands). */
export interface LinkOffloads {
  txChecksum: boolean;
  sg: boolean;
  tso: boolean;
  gso: boolean;
  gro: boolean;
}

function netnsPath(netns: string | undefined): string {
  if (netns === undefined || netns === '') return '';
  if (netns.startsWith('/')) return netns;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(netns)) throw new RangeError(`invalid network namespace name ${JSON.stringify(netns)}`);
  return `/run/netns/${netns}`;
}

/**
 * Opens an AF_PACKET SOCK_RAW socket bound (ETH_P_ALL) to interface `ifname` of network namespace
 * `netns` (an `ip netns` name, an absolute path such as /proc/<pid>/ns/net, or undefined = this
 * process's namespace). The namespace is entered on a short-lived thread; the socket stays bound
 * to that namespace for its life, whoever holds it later. Created with protocol 0, so nothing is
 * queued before bind(). Close-on-exec, non-blocking. Needs CAP_NET_RAW (and CAP_SYS_ADMIN for a
 * namespace): the worker opens it and hands the fd to the unprivileged VM host process, which
 * wraps it in a FramePort (kind 'packet'). Linux only.
 */
export function openPacketSocket(ifname: string, opts: PacketSocketOptions & { netns?: string } = {}): { fd: number; ifindex: number } {
  if (!native.openPacketSocket) throw new Error('openPacketSocket: Linux only');
  const { netns, ...rest } = opts;
  for (const k of ['rcvbuf', 'sndbuf'] as const) {
    const v = rest[k];
    if (v !== undefined) checkInt('openPacketSocket', k, v, 0, 0x7fffffff);
  }
  try {
    return native.openPacketSocket(netnsPath(netns), ifname, rest);
  } catch (e) {
    throw Object.assign(e as Error, { message: `${(e as Error).message} (interface ${ifname}${netns ? ` in netns ${netns}` : ''})` });
  }
}

/**
 * Reads a link's offload switches; with `disable: true` first turns TSO, GSO, GRO, SG and tx
 * checksumming off (SIOCETHTOOL), so that every frame leaving or crossing it is a plain ≤ MTU frame
 * with its checksum filled in — what QEMU's `-netdev dgram` (no virtio-net header) needs. Linux only.
 */
export function linkOffloads(ifname: string, opts: { netns?: string; disable?: boolean } = {}): LinkOffloads {
  if (!native.linkOffloads) throw new Error('linkOffloads: Linux only');
  try {
    return native.linkOffloads(netnsPath(opts.netns), ifname, opts.disable ?? false);
  } catch (e) {
    throw Object.assign(e as Error, { message: `${(e as Error).message} (interface ${ifname}${opts.netns ? ` in netns ${opts.netns}` : ''})` });
  }
}

/**
 * Opens a TAP with IFF_VNET_HDR (a 10-byte virtio-net header before every frame read or written)
 * in network namespace `netns` (as openPacketSocket; undefined = this process's), creating it if
 * it does not exist — then it is not persistent and goes with its last fd. `offloads`
 * (TunOffload bits, TUNSETOFFLOAD) is what the kernel may hand this fd's reader as GSO
 * super-frames or with a pending checksum; 0 = plain frames. `up` brings the link up. Close-on-
 * exec, non-blocking. Creating one, or opening one in another namespace, needs CAP_NET_ADMIN; the
 * owner of a persistent TAP may open it in its own namespace. Linux only.
 */
export function openVnetTap(name: string, opts: { netns?: string; offloads?: number; up?: boolean } = {}): { fd: number; name: string; ifindex: number } {
  if (!native.openVnetTap) throw new Error('openVnetTap: Linux only');
  const offloads = opts.offloads ?? 0;
  checkInt('openVnetTap', 'offloads', offloads, 0, 0x0f);
  try {
    return native.openVnetTap(netnsPath(opts.netns), name, offloads, opts.up ?? false);
  } catch (e) {
    throw Object.assign(e as Error, { message: `${(e as Error).message} (TAP ${name}${opts.netns ? ` in netns ${opts.netns}` : ''})` });
  }
}

/** An interface's kernel counters (IFLA_STATS64). */
export interface LinkStats {
  rxPackets: number;
  rxBytes: number;
  rxDropped: number;
  txPackets: number;
  txBytes: number;
  /** Frames the kernel dropped on transmit: on a TAP, those its reader (QEMU) did not take in time. */
  txDropped: number;
}

/**
 * The kernel's counters of interface `ifname` in network namespace `netns` (as openPacketSocket),
 * read over a NETLINK_ROUTE socket opened there on a short-lived thread. Needs CAP_SYS_ADMIN for
 * another namespace. Linux only.
 */
export function linkStats(ifname: string, opts: { netns?: string } = {}): LinkStats {
  if (!native.linkStats) throw new Error('linkStats: Linux only');
  try {
    return native.linkStats(netnsPath(opts.netns), ifname);
  } catch (e) {
    throw Object.assign(e as Error, { message: `${(e as Error).message} (interface ${ifname}${opts.netns ? ` in netns ${opts.netns}` : ''})` });
  }
}

/**
 * bind()s an open packet socket to another ifindex and returns the errno (0 = it worked): what a
 * compromised holder of the socket could attempt. For tests of the per-VM namespace isolation.
 */
export function packetRebind(fd: number, ifindex: number): number {
  if (!native.packetRebind) throw new Error('packetRebind: Linux only');
  checkFd('packetRebind', 'fd', fd);
  checkInt('packetRebind', 'ifindex', ifindex, 0, 0x7fffffff);
  return native.packetRebind(fd, ifindex);
}

/**
 * Batched frame I/O on a SOCK_DGRAM socket (recvmmsg/sendmmsg), an AF_PACKET socket, a TAP fd
 * (read/write loops) or an AF_UNIX stream socket with QEMU's length-prefixed framing (one read of
 * up to the whole receive area, one sendmsg per batch), driven by a libuv poll handle on the fd:
 * no busy polling, no thread.
 *
 * Stream framing: frames longer than frameSize are skipped and counted (rxTruncated), as oversized
 * datagrams are; a length prefix beyond QEMU's own limit shuts the stream down (rxBadLength); a
 * send the kernel takes only part of keeps that frame's rest and writes it first when the socket is
 * writable again (txPartial, txPendingBytes) — frames are never split or interleaved; the frames
 * after it are not accepted (txDrops, eagain), like a full datagram socket.
 *
 * Receive memory is fixed: one preallocated area of batch × frameSize bytes, reused for every
 * batch. Callbacks see views of it that are valid ONLY during the callback — copy what you keep.
 * Sending never throws for EAGAIN/ENOBUFS: it returns how many frames (a prefix) were accepted
 * and counts the rest (stats().txDrops, .eagain, .enobufs).
 */
export class FramePort {
  readonly fd: number;
  readonly batchSize: number;
  readonly frameSize: number;
  private readonly native: NativePort;
  private readonly batch: FrameBatch;

  constructor(fd: number, opts: FramePortOptions = {}) {
    const batch = opts.batch ?? 64;
    const frameSize = opts.frameSize ?? 65536;
    if (!Number.isInteger(batch) || batch < 1 || batch > 1024) throw new RangeError('FramePort: batch must be 1..1024');
    if (!Number.isInteger(frameSize) || frameSize < 64 || frameSize > 262144) throw new RangeError('FramePort: frameSize must be 64..262144');
    // 4 bytes more than the frames: on a stream socket a whole frame of frameSize fits with its prefix.
    const area = new ArrayBuffer(batch * frameSize + 4);
    const offsets = new Uint32Array(batch);
    const lengths = new Uint32Array(batch);
    const sendQueueBytes = opts.sendQueueBytes ?? 0;
    if (!Number.isInteger(sendQueueBytes) || sendQueueBytes < 0 || sendQueueBytes > 2 ** 30) throw new RangeError('FramePort: sendQueueBytes must be 0..1 GiB');
    const rxRingFrames = opts.rxRingFrames ?? 0;
    if (!Number.isInteger(rxRingFrames) || rxRingFrames < 0 || rxRingFrames > 65536) throw new RangeError('FramePort: rxRingFrames must be 0..65536');
    this.native = new native.FramePort(fd, area, offsets, lengths, frameSize, batch, opts.ownsFd ?? true, opts.maxBatchesPerWakeup ?? 16, sendQueueBytes, rxRingFrames);
    this.fd = fd;
    this.batchSize = batch;
    this.frameSize = frameSize;
    this.batch = { buffer: Buffer.from(area), offsets, lengths, count: 0 };
  }

  /** 'dgram' (a SOCK_DGRAM socket), 'packet' (AF_PACKET SOCK_RAW), 'stream' (AF_UNIX SOCK_STREAM, length-prefixed) or 'tap' (any other fd, e.g. from openTap). */
  get kind(): FramePortKind {
    return this.native.kind;
  }
  get closed(): boolean {
    return this.native.closed;
  }
  /** Whether sends go through a sender thread (sendQueueBytes > 0). */
  get sendThread(): boolean {
    return this.native.sendThread;
  }

  /**
   * Starts reading: `cb` runs once per batch with the shared FrameBatch (zero-copy; valid only
   * during the callback). Replaces a previous onBatch/onFrames callback.
   */
  onBatch(cb: (batch: FrameBatch) => void): this {
    const b = this.batch;
    this.native.start((count: number) => {
      b.count = count;
      cb(b);
    });
    return this;
  }

  /**
   * Starts reading: `cb` gets an array of frames per batch. By default the frames are views into
   * the receive area, valid only during the callback; `{ copy: true }` gives owned copies.
   */
  onFrames(cb: (frames: Buffer[]) => void, opts: { copy?: boolean } = {}): this {
    const copy = opts.copy ?? false;
    return this.onBatch((b) => {
      const frames = new Array<Buffer>(b.count);
      for (let i = 0; i < b.count; i++) {
        const view = b.buffer.subarray(b.offsets[i]!, b.offsets[i]! + b.lengths[i]!);
        frames[i] = copy ? Buffer.from(view) : view;
      }
      cb(frames);
    });
  }

  /** Stops reading (the fd stays open; onBatch/onFrames resumes). */
  pause(): void {
    this.native.stop();
  }

  /** Sends frames in one sendmmsg (TAP: a write loop). Returns how many (a prefix) were accepted. */
  send(frames: readonly Uint8Array[]): number {
    return this.native.send(frames);
  }

  /** Sends `count` frames described by offsets/lengths into `buf` (e.g. a received FrameBatch, forwarded without copying). */
  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    return this.native.sendBatch(buf, offsets, lengths, count);
  }

  /** One-shot: `cb` runs when the fd is writable again (e.g. after send() accepted fewer frames than given); with a sender thread, when its queue is at most half full. */
  waitWritable(cb: () => void): void {
    this.native.waitWritable(cb);
  }
  writable(): Promise<void> {
    return new Promise((resolve) => this.native.waitWritable(resolve));
  }

  stats(): FramePortStats {
    return this.native.stats();
  }

  /** Stops polling and closes the fd (if owned). Idempotent; safe inside a callback. */
  close(): void {
    this.native.close();
  }

  /** Let the process exit while this port is open (like socket.unref()). */
  unref(): this {
    this.native.unref();
    return this;
  }
  ref(): this {
    this.native.ref();
    return this;
  }
}

export const platform: string = native.platform;
