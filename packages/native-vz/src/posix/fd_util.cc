// @fleet/native-vz: socketpairs, TAP devices and fd flags, for both halves (Linux and macOS).
// Node core has no AF_UNIX/SOCK_DGRAM sockets and no TAP ioctls; these are the few syscalls it lacks.
// macOS differs in four places, marked __APPLE__: no SOCK_CLOEXEC/SOCK_NONBLOCK type flags (set
// with fcntl right after socketpair), no SO_*BUFFORCE (sizes are capped by kern.ipc.maxsockbuf),
// SO_NOSIGPIPE on every socket, and no TAP devices (openTap throws ENOTSUP: the macOS uplink is
// vmnet). The macOS build of this file has NOT been compiled on a Mac yet (docs/macos.md).
#include <errno.h>
#include <fcntl.h>
#ifndef __APPLE__
#include <linux/if.h>
#include <linux/if_tun.h>
#endif
#include <string.h>
#ifndef __APPLE__
#include <sys/ioctl.h>
#endif
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __APPLE__
#include "../darwin/vz_darwin.h"
#else
#include "../linux/native_vz.h"
#endif

namespace nvz {

const char* ErrnoName(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* n = strerrorname_np(err);
  if (n != nullptr) return n;
#endif
  switch (err) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EBUSY: return "EBUSY";
    case EAGAIN: return "EAGAIN";
    case ENOBUFS: return "ENOBUFS";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EPIPE: return "EPIPE";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOTSUP: return "ENOTSUP";
    case EEXIST: return "EEXIST";
    case ELOOP: return "ELOOP";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSPC: return "ENOSPC";
    case EXDEV: return "EXDEV";
    case EFBIG: return "EFBIG";
    case EIO: return "EIO";
    case EROFS: return "EROFS";
    case EDQUOT: return "EDQUOT";
    default: return "EUNKNOWN";
  }
}

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what, const std::string& hint) {
  std::string msg = what + ": " + strerror(err);
  if (!hint.empty()) msg += " (" + hint + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, what));
  return e;
}

namespace {

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), "fd must be a non-negative integer").ThrowAsJavaScriptException();
    return false;
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 2147483647.0) || v != static_cast<double>(static_cast<int>(v))) {
    Napi::TypeError::New(info.Env(), "fd must be a non-negative integer").ThrowAsJavaScriptException();
    return false;
  }
  *fd = static_cast<int>(v);
  return true;
}

#ifdef __APPLE__
int SetFlags(int fd, bool nonblock) {
  int one = 1;
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) return -1;
  if (nonblock) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return -1;
  }
  return setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
}

int SetBuf(int fd, bool send, int bytes) {
  if (bytes <= 0) return 0;
  return setsockopt(fd, SOL_SOCKET, send ? SO_SNDBUF : SO_RCVBUF, &bytes, sizeof bytes);
}
#else
// Sets a socket buffer size. As root (CAP_NET_ADMIN) the *FORCE variant goes past
// net.core.{w,r}mem_max; otherwise the kernel caps the value at the sysctl. Linux doubles the
// value it stores (bookkeeping overhead), which getsockopt reports.
int SetBuf(int fd, bool send, int bytes) {
  if (bytes <= 0) return 0;
  int force = send ? SO_SNDBUFFORCE : SO_RCVBUFFORCE;
  if (setsockopt(fd, SOL_SOCKET, force, &bytes, sizeof bytes) == 0) return 0;
  int plain = send ? SO_SNDBUF : SO_RCVBUF;
  return setsockopt(fd, SOL_SOCKET, plain, &bytes, sizeof bytes);
}
#endif

// socketpairDgram(sndbuf, rcvbuf, nonblock) -> [fd0, fd1]
Napi::Value SocketpairDgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sndbuf = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1 << 20;
  int rcvbuf = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 4 << 20;
  bool nonblock = info.Length() > 2 && info[2].ToBoolean().Value();
  int sv[2];
#ifdef __APPLE__
  const int type = SOCK_DGRAM;
#else
  const int type = SOCK_DGRAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0);
#endif
  if (socketpair(AF_UNIX, type, 0, sv) != 0) {
    ErrnoError(env, errno, "socketpair").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  for (int fd : sv) {
#ifdef __APPLE__
    bool ok = SetFlags(fd, nonblock) == 0 && SetBuf(fd, true, sndbuf) == 0 && SetBuf(fd, false, rcvbuf) == 0;
    const char* hint = "buffer larger than kern.ipc.maxsockbuf";
#else
    bool ok = SetBuf(fd, true, sndbuf) == 0 && SetBuf(fd, false, rcvbuf) == 0;
    const char* hint = "";
#endif
    if (!ok) {
      int e = errno;
      close(sv[0]);
      close(sv[1]);
      ErrnoError(env, e, "setsockopt", e == ENOBUFS ? hint : "").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(uint32_t(0), Napi::Number::New(env, sv[0]));
  out.Set(uint32_t(1), Napi::Number::New(env, sv[1]));
  return out;
}

// getBufferSizes(fd) -> { sndbuf, rcvbuf } as the kernel reports them.
Napi::Value GetBufferSizes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  int snd = 0, rcv = 0;
  socklen_t l1 = sizeof snd, l2 = sizeof rcv;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, &l1) != 0 || getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, &l2) != 0) {
    ErrnoError(env, errno, "getsockopt").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("sndbuf", Napi::Number::New(env, snd));
  o.Set("rcvbuf", Napi::Number::New(env, rcv));
  return o;
}

// openTap(name, nonblock) -> { fd, name }
Napi::Value OpenTap(const Napi::CallbackInfo& info) {
#ifdef __APPLE__
  ErrnoError(info.Env(), ENOTSUP, "openTap", "macOS has no TAP devices; the macOS uplink is vmnet (VmnetInterface)")
      .ThrowAsJavaScriptException();
  return info.Env().Undefined();
#else
  Napi::Env env = info.Env();
  std::string name = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  bool nonblock = info.Length() > 1 ? info[1].ToBoolean().Value() : true;
  if (name.size() >= IFNAMSIZ) {
    Napi::Error::New(env, "openTap: interface name \"" + name + "\" is longer than " + std::to_string(IFNAMSIZ - 1) + " bytes")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | (nonblock ? O_NONBLOCK : 0));
  if (fd < 0) {
    int e = errno;
    std::string hint;
    if (e == ENOENT) hint = "/dev/net/tun is missing: load the tun module (modprobe tun) or, in a container, pass the device through";
    else if (e == EACCES || e == EPERM) hint = "needs root or CAP_NET_ADMIN and access to /dev/net/tun";
    ErrnoError(env, e, "open /dev/net/tun", hint).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int e = errno;
    close(fd);
    std::string hint;
    if (e == EPERM || e == EACCES) hint = "needs root or CAP_NET_ADMIN";
    else if (e == EBUSY) hint = "interface \"" + name + "\" exists and is in use (or is not a TAP device)";
    else if (e == EINVAL) hint = "bad interface name \"" + name + "\", or an existing interface of another kind";
    ErrnoError(env, e, "ioctl TUNSETIFF", hint).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", Napi::Number::New(env, fd));
  ifr.ifr_name[IFNAMSIZ - 1] = 0;
  o.Set("name", Napi::String::New(env, ifr.ifr_name));
  return o;
#endif
}

Napi::Value SetFdFlag(const Napi::CallbackInfo& info, bool cloexec) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  bool on = info.Length() > 1 && info[1].ToBoolean().Value();
  int getcmd = cloexec ? F_GETFD : F_GETFL;
  int setcmd = cloexec ? F_SETFD : F_SETFL;
  int bit = cloexec ? FD_CLOEXEC : O_NONBLOCK;
  int flags = fcntl(fd, getcmd);
  if (flags < 0 || fcntl(fd, setcmd, on ? (flags | bit) : (flags & ~bit)) < 0) {
    ErrnoError(env, errno, "fcntl").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return env.Undefined();
}

Napi::Value SetCloexec(const Napi::CallbackInfo& info) { return SetFdFlag(info, true); }
Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) { return SetFdFlag(info, false); }

// fdInfo(fd) -> { cloexec, nonblock, kind: 'dgram' | 'stream' | 'seqpacket' | 'socket' | 'char' | 'file' | 'other' }
Napi::Value FdInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  int fdfl = fcntl(fd, F_GETFD);
  int flfl = fcntl(fd, F_GETFL);
  struct stat st;
  if (fdfl < 0 || flfl < 0 || fstat(fd, &st) != 0) {
    ErrnoError(env, errno, "fcntl").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const char* kind = "other";
  if (S_ISSOCK(st.st_mode)) {
    int type = 0;
    socklen_t len = sizeof type;
    kind = "socket";
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) {
      if (type == SOCK_DGRAM) kind = "dgram";
      else if (type == SOCK_STREAM) kind = "stream";
      else if (type == SOCK_SEQPACKET) kind = "seqpacket";
    }
  } else if (S_ISCHR(st.st_mode)) {
    kind = "char";
  } else if (S_ISREG(st.st_mode)) {
    kind = "file";
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("cloexec", Napi::Boolean::New(env, (fdfl & FD_CLOEXEC) != 0));
  o.Set("nonblock", Napi::Boolean::New(env, (flfl & O_NONBLOCK) != 0));
  o.Set("kind", Napi::String::New(env, kind));
  return o;
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  if (close(fd) != 0 && errno != EINTR) {
    ErrnoError(env, errno, "close").ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

}  // namespace

void InitFdUtil(Napi::Env env, Napi::Object exports) {
  exports.Set("socketpairDgram", Napi::Function::New(env, SocketpairDgram, "socketpairDgram"));
  exports.Set("getBufferSizes", Napi::Function::New(env, GetBufferSizes, "getBufferSizes"));
  exports.Set("openTap", Napi::Function::New(env, OpenTap, "openTap"));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec, "setCloexec"));
  exports.Set("setNonBlocking", Napi::Function::New(env, SetNonBlocking, "setNonBlocking"));
  exports.Set("fdInfo", Napi::Function::New(env, FdInfo, "fdInfo"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
}

}  // namespace nvz
