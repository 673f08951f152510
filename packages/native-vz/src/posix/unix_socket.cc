// @fleet/native-vz: a unix stream socket rendezvous and fd passing (SCM_RIGHTS), for both halves.
// Why: on macOS the root "network host" (vmnet, packet filter, frame pump) hands one end of a VM
// NIC socketpair to the unprivileged "VM agent" of another uid, which launchd starts (so it is not
// a child of root and cannot inherit the fd). They meet on a unix socket in a root-owned directory;
// root checks the peer's uid and sends the fd. Node core can neither send fds over a unix socket
// nor read a peer's credentials; this file adds exactly that.
//
// Linux and macOS differ in a few places, marked __APPLE__: no SOCK_CLOEXEC/SOCK_NONBLOCK type
// flags, no accept4 and no MSG_CMSG_CLOEXEC (FD_CLOEXEC is set right after the call; libuv spawns
// with POSIX_SPAWN_CLOEXEC_DEFAULT on macOS, so the short window cannot leak into a child), an
// accepted socket inherits O_NONBLOCK from the listener (cleared), peer credentials via
// getpeereid()/LOCAL_PEERPID instead of SO_PEERCRED, SO_NOSIGPIPE instead of MSG_NOSIGNAL, and
// sun_path is 104 bytes instead of 108. The macOS branch is written against the documented BSD API
// (getpeereid(3), unix(4), <sys/un.h>) and has NOT been compiled on a Mac yet (docs/macos.md).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>  // macOS: also SOL_LOCAL, LOCAL_PEERPID
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#ifdef __APPLE__
#include "../darwin/vz_darwin.h"
#else
#include "../linux/native_vz.h"
#endif

#ifdef __APPLE__
// MSG_NOSIGNAL is not part of the documented macOS API; sendFds sets SO_NOSIGPIPE on the socket
// instead (and Node ignores SIGPIPE anyway).
constexpr int kSendFlags = 0;
#else
constexpr int kSendFlags = MSG_NOSIGNAL;
#endif

namespace nvz {

namespace {

constexpr int kMaxSendFds = 8;
constexpr int kMaxRecvFds = 64;
constexpr size_t kMaxData = 64 * 1024;
// How long sendFds waits for room to finish a message the kernel took only part of.
constexpr int kPartialSendTimeoutMs = 5000;

void ThrowType(Napi::Env env, const std::string& msg) {
  Napi::TypeError e = Napi::TypeError::New(env, msg);
  e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
  e.ThrowAsJavaScriptException();
}

void ThrowRange(Napi::Env env, const std::string& msg) {
  Napi::RangeError e = Napi::RangeError::New(env, msg);
  e.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  e.ThrowAsJavaScriptException();
}

// An integer argument in [lo, hi]; throws a TypeError/RangeError (never crashes) otherwise.
bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name, double lo, double hi, int* out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    ThrowType(info.Env(), std::string(name) + " must be a number");
    return false;
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= lo && v <= hi) || v != static_cast<double>(static_cast<long long>(v))) {
    ThrowRange(info.Env(), std::string(name) + " must be an integer in " + std::to_string(static_cast<long long>(lo)) + ".." +
                               std::to_string(static_cast<long long>(hi)));
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name, int* fd) {
  return ArgInt(info, i, name, 0, 2147483647.0, fd);
}

// Fills a sockaddr_un from a JS string. Refuses an empty path, an embedded NUL (it would silently
// cut the path short, or name a Linux abstract socket) and anything that does not fit sun_path
// with its terminating NUL (ENAMETOOLONG) — the kernel would otherwise truncate or reject it
// with a less helpful EINVAL.
bool ArgPath(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* syscall, struct sockaddr_un* addr, socklen_t* len,
             std::string* path) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsString()) {
    ThrowType(env, std::string(fn) + ": path must be a string");
    return false;
  }
  *path = info[i].As<Napi::String>().Utf8Value();
  if (path->empty()) {
    ThrowRange(env, std::string(fn) + ": path must not be empty");
    return false;
  }
  if (path->find('\0') != std::string::npos) {
    ThrowRange(env, std::string(fn) + ": path must not contain NUL bytes");
    return false;
  }
  memset(addr, 0, sizeof *addr);
  if (path->size() >= sizeof addr->sun_path) {
    ErrnoError(env, ENAMETOOLONG, syscall,
               "socket path is " + std::to_string(path->size()) + " bytes; a unix socket path must be shorter than " +
                   std::to_string(sizeof addr->sun_path) + " bytes (sun_path): use a shorter directory")
        .ThrowAsJavaScriptException();
    return false;
  }
  addr->sun_family = AF_UNIX;
  memcpy(addr->sun_path, path->data(), path->size());
  *len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path->size() + 1);
#ifdef __APPLE__
  addr->sun_len = static_cast<unsigned char>(*len);
#endif
  return true;
}

int SetFl(int fd, bool nonblock) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  int want = nonblock ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  return want == fl ? 0 : fcntl(fd, F_SETFL, want);
}

// A new AF_UNIX stream socket, close-on-exec (and SO_NOSIGPIPE on macOS), in the given mode.
int NewStreamSocket(bool nonblock) {
#ifdef __APPLE__
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 || SetFl(fd, nonblock) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
#else
  return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
#endif
}

// unixListen(path, mode, backlog) -> fd (non-blocking, close-on-exec).
// bind() creates the socket file with 0777 & ~umask. Changing the process umask around bind would
// race with every other thread creating files (libuv's threadpool), so the mode is set with
// chmod() after bind and BEFORE listen(): until listen() a connect() is refused (ECONNREFUSED), so
// nobody can get in through the umask's mode in between. Linux's fchmod on the socket fd would not
// reach the file (it changes the sockfs inode) and BSD refuses it, hence chmod by path — the
// directory must not be writable by the other uid (it could swap the path otherwise).
// An existing path is never unlinked: bind fails with EADDRINUSE. If chmod/listen fails, the file
// this call just created is removed again.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_un addr;
  socklen_t len;
  std::string path;
  int mode, backlog;
  if (!ArgPath(info, 0, "unixListen", "bind", &addr, &len, &path) || !ArgInt(info, 1, "mode", 0, 0777, &mode) ||
      !ArgInt(info, 2, "backlog", 1, 65535, &backlog)) {
    return env.Undefined();
  }
  int fd = NewStreamSocket(true);
  if (fd < 0) {
    ErrnoError(env, errno, "socket").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), len) != 0) {
    int e = errno;
    close(fd);
    std::string hint;
    if (e == EADDRINUSE) hint = path + " exists (a stale socket of an earlier run?); it is never removed implicitly: unlink it deliberately first";
    else if (e == EACCES) hint = "no write/search permission on the directory of " + path;
    else if (e == ENOENT) hint = "the directory of " + path + " does not exist";
    ErrnoError(env, e, "bind", hint).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const char* step = "chmod";
  int ok = chmod(path.c_str(), static_cast<mode_t>(mode));
  if (ok == 0) {
    step = "listen";
    ok = listen(fd, backlog);
  }
  if (ok != 0) {
    int e = errno;
    close(fd);
    unlink(path.c_str());  // the file bind() created a moment ago
    ErrnoError(env, e, step).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// unixAccept(listenFd) -> fd | null. The accepted fd is BLOCKING and close-on-exec on both
// systems (so sendFds writes a whole message; recvFds never blocks anyway: MSG_DONTWAIT).
// null when no connection is pending (EAGAIN/EWOULDBLOCK), also on ECONNABORTED (a client that
// gave up while queued: nothing to accept, try again).
Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd;
  if (!ArgFd(info, 0, "listenFd", &lfd)) return env.Undefined();
  int fd;
  for (;;) {
#ifdef __APPLE__
    fd = accept(lfd, nullptr, nullptr);
#else
    fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
#endif
    if (fd >= 0 || errno != EINTR) break;
  }
  if (fd < 0) {
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK || e == ECONNABORTED) return env.Null();
    std::string hint;
    if (e == EINVAL) hint = "not a listening socket";
    ErrnoError(env, e, "accept", hint).ThrowAsJavaScriptException();
    return env.Undefined();
  }
#ifdef __APPLE__
  // BSD: the accepted socket inherits O_NONBLOCK from the listener; make it blocking like Linux's.
  int one = 1;
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 || SetFl(fd, false) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) != 0) {
    int e = errno;
    close(fd);
    ErrnoError(env, e, "fcntl").ThrowAsJavaScriptException();
    return env.Undefined();
  }
#endif
  return Napi::Number::New(env, fd);
}

// unixConnect(path) -> fd (BLOCKING, close-on-exec, like unixAccept's). The connect itself is
// non-blocking so that a listener with a full backlog cannot stall the event loop: it fails
// (Linux EAGAIN, macOS ECONNREFUSED) instead of waiting.
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_un addr;
  socklen_t len;
  std::string path;
  if (!ArgPath(info, 0, "unixConnect", "connect", &addr, &len, &path)) return env.Undefined();
  int fd = NewStreamSocket(true);
  if (fd < 0) {
    ErrnoError(env, errno, "socket").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int r;
  do {
    r = connect(fd, reinterpret_cast<struct sockaddr*>(&addr), len);
  } while (r != 0 && errno == EINTR);
  // A unix connect completes at once or fails; EINPROGRESS is not expected, but treat it as the
  // BSD case of a full backlog rather than hand out a half-open socket.
  if (r != 0 || SetFl(fd, false) != 0) {
    int e = errno;
    close(fd);
    std::string hint;
    if (e == ENOENT) hint = "no socket at " + path + " (is the listener running?)";
    else if (e == ECONNREFUSED) hint = "nobody listens on " + path + " (or its backlog is full)";
    else if (e == EACCES) hint = "no write permission on " + path + " or no search permission on a directory above it";
    else if (e == EAGAIN || e == EINPROGRESS) hint = "the listener's backlog is full; retry";
    ErrnoError(env, e, "connect", hint).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// peerCredentials(fd) -> { uid, gid, pid? }: the credentials the peer had when it called connect()
// (or listen(), seen from the connecting side). Effective uid/gid.
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return env.Undefined();
  Napi::Object o = Napi::Object::New(env);
#ifdef __APPLE__
  uid_t uid;
  gid_t gid;
  if (getpeereid(fd, &uid, &gid) != 0) {
    int e = errno;
    ErrnoError(env, e, "getpeereid", e == ENOTCONN ? "the socket is not connected" : "").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  o.Set("uid", Napi::Number::New(env, uid));
  o.Set("gid", Napi::Number::New(env, gid));
  pid_t pid = 0;
  socklen_t plen = sizeof pid;
  // LOCAL_PEERPID (macOS 10.8+): best effort, the uid is what authorizes.
  if (getsockopt(fd, SOL_LOCAL, LOCAL_PEERPID, &pid, &plen) == 0 && pid > 0) o.Set("pid", Napi::Number::New(env, pid));
#else
  struct ucred cred;
  socklen_t clen = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
    ErrnoError(env, errno, "getsockopt SO_PEERCRED").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // An unconnected socket reports uid/gid -1 (and no pid); never hand that out as a uid.
  if (cred.uid == static_cast<uid_t>(-1)) {
    ErrnoError(env, ENOTCONN, "getsockopt SO_PEERCRED", "the socket has no peer (not connected)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  o.Set("uid", Napi::Number::New(env, cred.uid));
  o.Set("gid", Napi::Number::New(env, cred.gid));
  // 0 when the peer is in a pid namespace we cannot see.
  if (cred.pid > 0) o.Set("pid", Napi::Number::New(env, cred.pid));
#endif
  return o;
}

// Waits up to the remaining time for POLLOUT; false (errno set) on timeout or error.
bool WaitWritable(int fd, int* remainingMs) {
  struct pollfd p = {fd, POLLOUT, 0};
  for (;;) {
    int r = poll(&p, 1, *remainingMs);
    if (r > 0) return true;
    if (r == 0) {
      errno = ETIMEDOUT;
      *remainingMs = 0;
      return false;
    }
    if (errno != EINTR) return false;
  }
}

// sendFds(sock, fds[], data) -> undefined. One sendmsg with one SCM_RIGHTS cmsg carrying the fds
// and data (>= 1 byte: a stream socket sends no control message without data). The kernel
// duplicates the fds into the message; the caller's copies stay open (close them if not needed).
// On a stream socket the kernel may take only part of data (macOS' unix stream send buffer is
// 8 KiB): the rest is written with send(), waiting for room up to 5 s even on a non-blocking
// socket — a message cut in half would leave the connection unusable. EAGAIN before anything was
// sent is thrown as EAGAIN (nothing sent; retry later).
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock;
  if (!ArgFd(info, 0, "sock", &sock)) return env.Undefined();
  if (info.Length() <= 1 || !info[1].IsArray()) {
    ThrowType(env, "sendFds: fds must be an array of fds");
    return env.Undefined();
  }
  Napi::Array arr = info[1].As<Napi::Array>();
  uint32_t n = arr.Length();
  if (n < 1 || n > kMaxSendFds) {
    ThrowRange(env, "sendFds: fds must hold 1.." + std::to_string(kMaxSendFds) + " descriptors (got " + std::to_string(n) + ")");
    return env.Undefined();
  }
  int fds[kMaxSendFds];
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!v.IsNumber() || !(d >= 0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<int>(d))) {
      ThrowType(env, "sendFds: fds[" + std::to_string(i) + "] must be a non-negative integer");
      return env.Undefined();
    }
    fds[i] = static_cast<int>(d);
  }
  if (info.Length() <= 2 || !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowType(env, "sendFds: data must be a Buffer or Uint8Array");
    return env.Undefined();
  }
  Napi::Uint8Array data = info[2].As<Napi::Uint8Array>();
  size_t dlen = data.ByteLength();
  if (dlen < 1 || dlen > kMaxData) {
    ThrowRange(env, "sendFds: data must be 1.." + std::to_string(kMaxData) + " bytes (got " + std::to_string(dlen) + ")");
    return env.Undefined();
  }
  const uint8_t* bytes = data.Data();

  // Control buffer, aligned for cmsghdr.
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * kMaxSendFds)];
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {const_cast<uint8_t*>(bytes), dlen};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * n);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * n);

#ifdef __APPLE__
  // Sockets from this addon already have SO_NOSIGPIPE; one from elsewhere may not.
  int one = 1;
  setsockopt(sock, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  ssize_t r;
  do {
    r = sendmsg(sock, &msg, kSendFlags);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    std::string hint;
    if (e == EAGAIN || e == EWOULDBLOCK) hint = "socket buffer full, nothing was sent; retry when writable";
    else if (e == EBADF) hint = "the socket or one of the fds is not an open descriptor";
    else if (e == EPIPE || e == ECONNRESET) hint = "the peer closed the connection";
    else if (e == ENOTSOCK) hint = "sock is not a socket";
    ErrnoError(env, e, "sendmsg", hint).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t sent = static_cast<size_t>(r);
  int remainingMs = kPartialSendTimeoutMs;
  while (sent < dlen) {
    ssize_t w = send(sock, bytes + sent, dlen - sent, kSendFlags);
    if (w > 0) {
      sent += static_cast<size_t>(w);
      continue;
    }
    int e = errno;
    if (w < 0 && e == EINTR) continue;
    if (w < 0 && (e == EAGAIN || e == EWOULDBLOCK) && WaitWritable(sock, &remainingMs)) continue;
    if (w < 0 && (e == EAGAIN || e == EWOULDBLOCK)) e = errno;
    ErrnoError(env, w < 0 ? e : EIO, "send",
               "message partially sent (" + std::to_string(sent) + " of " + std::to_string(dlen) +
                   " bytes, fds included): the connection is unusable, close it")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return env.Undefined();
}

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

// recvFds(sock, maxFds, maxBytes) -> { data, fds } | null. One recvmsg(MSG_DONTWAIT), so it
// never blocks: null when nothing is queued (EAGAIN). Received fds are close-on-exec.
// - A stream socket has no message boundaries: data is what is queued, up to maxBytes — possibly
//   only the start of what the peer sent with the fds, possibly followed by bytes it wrote later
//   (Linux ends a read after the chunk that carried fds; BSD need not).
// - EOF (the peer closed, 0 bytes and no fds) on a stream socket THROWS an Error with code 'EOF';
//   on a datagram socket 0 bytes is an empty datagram and is returned as such.
// - MSG_CTRUNC (more fds than maxFds, or a process out of fds) closes every fd received and
//   throws EMSGSIZE; so does a datagram longer than maxBytes (MSG_TRUNC).
Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock, maxFds, maxBytes;
  if (!ArgFd(info, 0, "sock", &sock) || !ArgInt(info, 1, "maxFds", 0, kMaxRecvFds, &maxFds) ||
      !ArgInt(info, 2, "maxBytes", 1, static_cast<double>(kMaxData), &maxBytes)) {
    return env.Undefined();
  }
  std::vector<uint8_t> buf(static_cast<size_t>(maxBytes));
  // CMSG_SPACE(0) still leaves room for a header; with maxFds 0 any fd sent is a truncation.
  size_t ctlLen = maxFds > 0 ? CMSG_SPACE(sizeof(int) * maxFds) : 0;
  std::vector<struct cmsghdr> ctl((ctlLen + sizeof(struct cmsghdr) - 1) / sizeof(struct cmsghdr) + 1);  // aligned storage
  struct iovec iov = {buf.data(), buf.size()};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctlLen > 0 ? ctl.data() : nullptr;
  msg.msg_controllen = static_cast<socklen_t>(ctlLen);
#ifdef __APPLE__
  const int flags = MSG_DONTWAIT;
#else
  const int flags = MSG_DONTWAIT | MSG_CMSG_CLOEXEC;
#endif
  ssize_t r;
  do {
    r = recvmsg(sock, &msg, flags);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return env.Null();
    std::string hint;
    if (e == ENOTSOCK) hint = "sock is not a socket";
    else if (e == ECONNRESET) hint = "the peer reset the connection";
    ErrnoError(env, e, "recvmsg", hint).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<int> fds;
  if (msg.msg_controllen > 0) {
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char* p = CMSG_DATA(c);
      for (size_t j = 0; j < k; j++) {
        int fd;
        memcpy(&fd, p + j * sizeof(int), sizeof fd);  // CMSG_DATA need not be int-aligned
        fds.push_back(fd);
      }
    }
  }
#ifdef __APPLE__
  for (int fd : fds) {
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
      int e = errno;
      CloseAll(fds);
      ErrnoError(env, e, "fcntl", "could not make a received fd close-on-exec; all were closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
#endif
  if (msg.msg_flags & MSG_CTRUNC) {
    CloseAll(fds);
    ErrnoError(env, EMSGSIZE, "recvmsg",
               "control data truncated (MSG_CTRUNC): the peer sent more than maxFds=" + std::to_string(maxFds) +
                   " fds, or this process is out of fds; every fd received was closed and the message is lost")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (msg.msg_flags & MSG_TRUNC) {
    CloseAll(fds);
    ErrnoError(env, EMSGSIZE, "recvmsg", "datagram longer than maxBytes=" + std::to_string(maxBytes) + "; its fds were closed")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (r == 0 && fds.empty()) {
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM) {
      Napi::Error e = Napi::Error::New(env, "recvFds: end of stream (the peer closed the connection)");
      e.Set("code", Napi::String::New(env, "EOF"));
      e.Set("syscall", Napi::String::New(env, "recvmsg"));
      e.ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(r)));
  Napi::Array out = Napi::Array::New(env, fds.size());
  for (size_t j = 0; j < fds.size(); j++) out.Set(static_cast<uint32_t>(j), Napi::Number::New(env, fds[j]));
  o.Set("fds", out);
  return o;
}

// FdWatch: one-shot readability of any fd on the JS thread's libuv loop (uv_poll), so JS can
// wait for a pending connection (listening fd) or for the fd message (recvFds) without a timer.
// It never reads, accepts or closes the fd. libuv keeps one watcher per fd and loop: do not watch
// an fd that a net.Socket or FramePort is using at the same time.
//   new FdWatch(fd); w.wait(cb: (err: string | null) => void); w.close()
class FdWatch : public Napi::ObjectWrap<FdWatch> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "FdWatch",
                       {InstanceMethod("wait", &FdWatch::Wait), InstanceMethod("close", &FdWatch::Close),
                        InstanceMethod("unref", &FdWatch::UnrefHandle)});
  }

  explicit FdWatch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatch>(info) {
    Napi::Env env = info.Env();
    int fd;
    if (!ArgFd(info, 0, "fd", &fd)) return;
    struct stat st;
    if (fstat(fd, &st) != 0) {
      ErrnoError(env, errno, "fstat").ThrowAsJavaScriptException();
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "FdWatch: no libuv loop").ThrowAsJavaScriptException();
      return;
    }
    poll_ = static_cast<uv_poll_t*>(malloc(sizeof(uv_poll_t)));  // freed by free() via uv_close
    if (poll_ == nullptr) {
      Napi::Error::New(env, "FdWatch: out of memory").ThrowAsJavaScriptException();
      return;
    }
    if (int r = uv_poll_init(loop, poll_, fd); r != 0) {
      free(poll_);
      poll_ = nullptr;
      ErrnoError(env, -r, "uv_poll_init").ThrowAsJavaScriptException();
      return;
    }
    poll_->data = this;
    env_ = env;
    napi_add_env_cleanup_hook(env, &FdWatch::CleanupHook, this);
    hook_ = true;
    async_ = std::make_unique<Napi::AsyncContext>(env, "FLEET_FDWATCH", Napi::Object::New(env));
  }

  ~FdWatch() override {
    if (hook_) {
      napi_remove_env_cleanup_hook(env_, &FdWatch::CleanupHook, this);
      hook_ = false;
    }
    Shutdown();
  }

 private:
  static void CleanupHook(void* arg) {
    FdWatch* self = static_cast<FdWatch*>(arg);
    self->hook_ = false;  // being run: must not be removed
    self->Shutdown();
  }

  // As FramePort: the close callback is libc's free(), never code of this addon, because Node may
  // have unloaded the addon by the time it runs (worker thread exit).
  void Shutdown() {
    if (poll_ == nullptr) return;
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), reinterpret_cast<uv_close_cb>(reinterpret_cast<void (*)()>(&free)));
    poll_ = nullptr;
  }

  void SetWaiting(bool on) {
    if (on && !self_ref_) {
      Ref();  // keep the JS object alive while the loop may call into it
      self_ref_ = true;
    } else if (!on && self_ref_) {
      self_ref_ = false;
      Unref();
    }
  }

  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (poll_ == nullptr) {
      Napi::Error::New(env, "FdWatch: closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (info.Length() < 1 || !info[0].IsFunction()) {
      ThrowType(env, "FdWatch.wait: callback must be a function");
      return env.Undefined();
    }
    if (int r = uv_poll_start(poll_, UV_READABLE, &FdWatch::OnPoll); r != 0) {
      ErrnoError(env, -r, "uv_poll_start").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    cb_ = Napi::Persistent(info[0].As<Napi::Function>());
    SetWaiting(true);
    return env.Undefined();
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    FdWatch* self = static_cast<FdWatch*>(handle->data);
    if (self == nullptr) return;
    uv_poll_stop(handle);  // one-shot
    Napi::HandleScope scope(self->env_);
    Napi::Object recv = self->Value();  // a local handle first: SetWaiting(false) makes the wrapper collectable
    Napi::FunctionReference cb = std::move(self->cb_);
    self->SetWaiting(false);
    if (cb.IsEmpty()) return;
    Napi::Value arg = status < 0 ? Napi::Value(Napi::String::New(self->env_, ErrnoName(-status))) : self->env_.Null();
    cb.MakeCallback(recv, {arg}, *self->async_);
    if (self->env_.IsExceptionPending()) {
      Napi::Error e = self->env_.GetAndClearPendingException();
      napi_fatal_exception(self->env_, e.Value());  // -> process 'uncaughtException'
    }
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (hook_) {
      napi_remove_env_cleanup_hook(env_, &FdWatch::CleanupHook, this);
      hook_ = false;
    }
    Shutdown();
    cb_.Reset();
    SetWaiting(false);
    return info.Env().Undefined();
  }

  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  Napi::Env env_{nullptr};
  uv_poll_t* poll_ = nullptr;
  bool hook_ = false;
  bool self_ref_ = false;
  std::unique_ptr<Napi::AsyncContext> async_;
  Napi::FunctionReference cb_;
};

}  // namespace

void InitUnixSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept, "unixAccept"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
  exports.Set("FdWatch", FdWatch::Init(env));
}

}  // namespace nvz
