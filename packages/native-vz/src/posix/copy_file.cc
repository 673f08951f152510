// @fleet/native-vz: copyFileFromFd — copy an already-open regular file into a new file, keeping
// holes, off the JS thread. For macOS privilege separation (issue 17): root copies a VM user's
// Tart bundle files (disk.img: a sparse file of e.g. 64 GiB, mostly holes) into a root-owned
// directory from an fd it opened with O_NOFOLLOW and checked with fstat — never by path again.
//
//   copyFileFromFd(srcFd, dstPath, mode) -> Promise<{ bytes, method }>
//
// The work runs in a Napi::AsyncWorker on libuv's threadpool (one of its threads for the length of
// the copy); the promise settles on the JS thread. Steps:
//   macOS:  fclonefileat(src, AT_FDCWD, dst, CLONE_NOOWNERCOPY) (APFS copy-on-write clone, macOS
//           10.12.2+; it creates dst itself and fails with EEXIST if anything — a symlink too — is
//           there), then the mode is set through an O_NOFOLLOW open (see TryClone for the
//           source's file flags and group/other-writable modes). Any other failure (ENOTSUP on a
//           non-APFS volume, EXDEV across volumes, ...) falls back to the portable copy below.
//   Linux:  dst is created (O_CREAT|O_EXCL|O_NOFOLLOW), then ioctl(dst, FICLONE, src) (reflink on
//           btrfs/xfs/bcachefs), else per data extent (lseek SEEK_DATA/SEEK_HOLE) copy_file_range,
//           falling back to pread/pwrite when it fails with EXDEV/ENOSYS/EINVAL/EOPNOTSUPP.
//   both:   the portable sparse copy: per data extent pread/pwrite (all-zero 1 MiB chunks are not
//           written: they stay holes), then ftruncate(dst, size) so trailing holes are kept.
// The destination's mode is set with fchmod at the end (the umask does not matter; while the copy
// runs the file is 0600). On any failure after this call created dst, dst is unlinked by the same
// path (the directory is root's, so nobody can swap the name in between); a dst this call did not
// create (EEXIST) is never touched.
//
// The source fd: the worker uses a dup (F_DUPFD_CLOEXEC) taken on the JS thread, so closing srcFd
// while the copy runs is harmless. A dup shares the file offset, and lseek(SEEK_DATA/SEEK_HOLE)
// moves it: the offset is saved before and restored after the copy (do not read()/write() through
// srcFd or its duplicates meanwhile; pread is unaffected). Data is read with pread/copy_file_range
// at explicit offsets. The copy is of the file as it is while it runs: stop the writer (the VM)
// first. The size copied is the size fstat reported at the start.
//
// The __APPLE__ branch is written against Apple's documented API (clonefile(2): fclonefileat,
// CLONE_NOOWNERCOPY — without it a clone made by root keeps the source's owner; lseek(2):
// SEEK_HOLE/SEEK_DATA) and has NOT been compiled on a Mac yet (docs/macos.md).
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#ifdef __APPLE__
#include <sys/clonefile.h>
#else
#include <linux/fs.h>  // FICLONE
#include <sys/ioctl.h>
#endif

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#ifdef __APPLE__
#include "../darwin/vz_darwin.h"
#else
#include "../linux/native_vz.h"
#endif

#if !defined(__APPLE__) && !defined(FICLONE)
#define FICLONE _IOW(0x94, 9, int)
#endif

namespace nvz {

namespace {

constexpr size_t kBufBytes = 1 << 20;              // pread/pwrite chunk
#ifndef __APPLE__
constexpr size_t kCopyRangeChunk = size_t(1) << 30;  // per copy_file_range call
#endif

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

bool AllZero(const char* p, size_t n) {
  return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

class CopyFromFdWorker : public Napi::AsyncWorker {
 public:
  CopyFromFdWorker(Napi::Env env, int src, std::string dst, mode_t mode)
      : Napi::AsyncWorker(env, "copyFileFromFd"), deferred_(Napi::Promise::Deferred::New(env)), src_(src), dst_(std::move(dst)), mode_(mode) {}

  ~CopyFromFdWorker() override {
    if (src_ >= 0) close(src_);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    Run();
    close(src_);
    src_ = -1;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(env, err_, syscall_, hint_).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes_)));
    o.Set("method", Napi::String::New(env, method_));
    deferred_.Resolve(o);
  }

 private:
  // Records the first failure; always returns false.
  bool Fail(int err, const char* syscall, const std::string& hint = "") {
    if (err_ == 0) {
      err_ = err;
      syscall_ = syscall;
      hint_ = hint;
    }
    return false;
  }

  std::string OpenHint(int e) const {
    if (e == EEXIST) return dst_ + " exists (a file or a link); it is never replaced or followed";
    if (e == ELOOP) return dst_ + " is a symbolic link; it is never followed";
    if (e == ENOENT) return "the directory of " + dst_ + " does not exist";
    if (e == ENOTDIR) return "a component of " + dst_ + " is not a directory";
    if (e == EACCES || e == EPERM) return "no permission to create " + dst_;
    if (e == EISDIR) return dst_ + " is a directory";
    return "";
  }

  void Run() {
    struct stat st;
    if (fstat(src_, &st) != 0) {
      Fail(errno, "fstat");
      return;
    }
    if (!S_ISREG(st.st_mode)) {
      Fail(EINVAL, "fstat", "srcFd is not a regular file");
      return;
    }
    int fl = fcntl(src_, F_GETFL);
    if (fl < 0) {
      Fail(errno, "fcntl");
      return;
    }
    if ((fl & O_ACCMODE) == O_WRONLY) {
      Fail(EBADF, "read", "srcFd is not open for reading");
      return;
    }
    const off_t size = st.st_size;

#ifdef __APPLE__
    if (TryClone() != kNoClone) return;  // cloned, or failed for good (EEXIST, ...)
#endif

    int dst;
    do {
      dst = open(dst_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    } while (dst < 0 && errno == EINTR);
    if (dst < 0) {
      int e = errno;
      Fail(e, "open", OpenHint(e));
      return;
    }
    bool ok = CopyInto(dst, size);
    if (ok && fchmod(dst, mode_) != 0) ok = Fail(errno, "fchmod");
    if (close(dst) != 0 && errno != EINTR && ok) ok = Fail(errno, "close");
    if (!ok) unlink(dst_.c_str());  // created above with O_EXCL: ours
  }

#ifdef __APPLE__
  enum CloneResult { kCloned, kFailed, kNoClone };

  // APFS clone straight from the fd (fclonefileat(2), macOS 10.12.2+). It creates dst itself and
  // fails with EEXIST if anything is there (a symlink too: links are never followed).
  // CLONE_NOOWNERCOPY: called by root, clonefile would otherwise give the clone the source's owner
  // (the VM user); with it the clone is the caller's, and only the caller (or root) can chmod it.
  // ACLs are not cloned without CLONE_ACL. The clone keeps the source's mode (set-id bits cleared),
  // xattrs and file flags until fixed below:
  //  - group/other-writable mode bits (the VM user controls the source's mode): someone could have
  //    opened the clone for writing before our fchmod, and would keep that fd, so such a clone is
  //    removed and the portable copy (created 0600) is made instead;
  //  - UF_IMMUTABLE/UF_APPEND (the user can chflags their own file) would block fchmod, writes
  //    and unlink: cleared with fchflags (root may).
  // ENOTSUP (not APFS), EXDEV (another volume) and other failures fall back to the portable copy,
  // which reports its own errors; EEXIST is final.
  CloneResult TryClone() {
    if (fclonefileat(src_, AT_FDCWD, dst_.c_str(), CLONE_NOOWNERCOPY) != 0) {
      if (errno == EEXIST) {
        Fail(EEXIST, "fclonefileat", OpenHint(EEXIST));
        return kFailed;
      }
      return kNoClone;
    }
    int fd;
    do {
      fd = open(dst_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    struct stat cst;
    const char* step = "open";
    bool ok = fd >= 0;
    if (ok) {
      step = "fstat";
      ok = fstat(fd, &cst) == 0;
    }
    if (ok && (cst.st_flags & (UF_IMMUTABLE | UF_APPEND)) != 0) {
      step = "fchflags";
      ok = fchflags(fd, cst.st_flags & ~static_cast<uint32_t>(UF_IMMUTABLE | UF_APPEND)) == 0;
    }
    bool writable_by_others = ok && (cst.st_mode & (S_IWGRP | S_IWOTH)) != 0;
    if (ok && !writable_by_others) {
      step = "fchmod";
      ok = fchmod(fd, mode_) == 0;
    }
    int e = errno;
    if (fd >= 0) close(fd);
    if (!ok || writable_by_others) {
      // The clone this call just made.
      if (unlink(dst_.c_str()) != 0 && errno != ENOENT) {
        int ue = errno;
        Fail(ok ? ue : e, ok ? "unlink" : step, "could not remove the clone at " + dst_ + ": remove it by hand");
        return kFailed;
      }
      if (!ok) {
        Fail(e, step, "after cloning to " + dst_ + "; the clone was removed");
        return kFailed;
      }
      return kNoClone;
    }
    bytes_ = static_cast<int64_t>(cst.st_size);
    method_ = "clone";
    return kCloned;
  }
#endif

  bool CopyInto(int dst, off_t size) {
#ifndef __APPLE__
    // Reflink (btrfs, xfs with reflink=1, bcachefs, ...): all or nothing, dst untouched on failure
    // (ext4/tmpfs: EOPNOTSUPP; another filesystem: EXDEV).
    if (ioctl(dst, FICLONE, src_) == 0) {
      struct stat dst_st;
      if (fstat(dst, &dst_st) != 0) return Fail(errno, "fstat");
      bytes_ = static_cast<int64_t>(dst_st.st_size);
      method_ = "clone";
      return true;
    }
#endif
    const off_t saved = lseek(src_, 0, SEEK_CUR);
    bool ok = CopyExtents(dst, size);
    if (saved >= 0) lseek(src_, saved, SEEK_SET);
    if (!ok) return false;
    int r;
    do {
      r = ftruncate(dst, size);
    } while (r != 0 && errno == EINTR);
    if (r != 0) {
      int e = errno;
      return Fail(e, "ftruncate", e == EFBIG ? "the destination filesystem cannot hold a file this large" : "");
    }
    bytes_ = static_cast<int64_t>(size);
    method_ = (used_pread_ || data_bytes_ == 0) ? "sparse-copy" : "copy_file_range";
    return true;
  }

  // Walks the data extents of [0, size) and copies each; holes are skipped.
  bool CopyExtents(int dst, off_t size) {
    off_t off = 0;
    while (off < size) {
      off_t data = off, hole = size;
#ifdef SEEK_DATA
      if (seek_holes_) {
        data = lseek(src_, off, SEEK_DATA);
        if (data < 0) {
          int e = errno;
          if (e == ENXIO) break;  // nothing but a hole from off to EOF
          if (e == EINVAL || e == ENOTSUP || e == EOPNOTSUPP) {
            // A filesystem without SEEK_DATA: the rest is one data extent (zeros still skipped).
            seek_holes_ = false;
            data = off;
          } else {
            return Fail(e, "lseek", "SEEK_DATA");
          }
        }
        if (data >= size) break;
        if (seek_holes_) {
          hole = lseek(src_, data, SEEK_HOLE);
          if (hole < 0) {
            if (errno != ENXIO) return Fail(errno, "lseek", "SEEK_HOLE");
            hole = size;  // the file shrank under us
          }
          if (hole > size) hole = size;
          if (hole <= data) hole = std::min<off_t>(size, data + static_cast<off_t>(kBufBytes));  // never loop in place
        }
      }
#endif
      if (!CopyRange(dst, data, hole)) return false;
      off = hole;
    }
    return true;
  }

  bool CopyRange(int dst, off_t from, off_t to) {
#ifndef __APPLE__
    while (from < to && use_cfr_) {
      loff_t in = from, out = from;
      size_t len = static_cast<size_t>(std::min<off_t>(to - from, static_cast<off_t>(kCopyRangeChunk)));
      ssize_t n = copy_file_range(src_, &in, dst, &out, len, 0);
      if (n > 0) {
        from += n;
        data_bytes_ += n;
        continue;
      }
      if (n == 0) break;  // EOF (the file shrank), or a kernel that declined: pread settles it
      int e = errno;
      if (e == EINTR) continue;
      if (e == EXDEV || e == ENOSYS || e == EINVAL || e == EOPNOTSUPP || e == ENOTSUP) {
        use_cfr_ = false;  // for the rest of this copy
        break;
      }
      return Fail(e, "copy_file_range", e == ENOSPC ? "no space left for " + dst_ : "");
    }
#endif
    while (from < to) {
      if (buf_.empty()) buf_.resize(kBufBytes);
      size_t len = static_cast<size_t>(std::min<off_t>(to - from, static_cast<off_t>(buf_.size())));
      ssize_t n = pread(src_, buf_.data(), len, from);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Fail(errno, "pread");
      }
      if (n == 0) break;  // the file shrank under us
      used_pread_ = true;
      if (!AllZero(buf_.data(), static_cast<size_t>(n))) {
        size_t done = 0;
        while (done < static_cast<size_t>(n)) {
          ssize_t w = pwrite(dst, buf_.data() + done, static_cast<size_t>(n) - done, from + static_cast<off_t>(done));
          if (w < 0) {
            int e = errno;
            if (e == EINTR) continue;
            return Fail(e, "pwrite", e == ENOSPC ? "no space left for " + dst_ : "");
          }
          done += static_cast<size_t>(w);
        }
      }
      from += n;
      data_bytes_ += n;
    }
    return true;
  }

  Napi::Promise::Deferred deferred_;
  int src_;
  const std::string dst_;
  const mode_t mode_;
  // Results (written on the worker thread, read in OnOK after it finished).
  int err_ = 0;
  std::string syscall_;
  std::string hint_;
  int64_t bytes_ = 0;
  const char* method_ = "sparse-copy";
  int64_t data_bytes_ = 0;
  bool used_pread_ = false;
  bool use_cfr_ = true;
  bool seek_holes_ = true;
  std::vector<char> buf_;
};

// copyFileFromFd(srcFd, dstPath, mode) -> Promise<{ bytes, method }>. Bad arguments throw
// (TypeError/RangeError); everything else rejects the promise with an errno Error.
Napi::Value CopyFileFromFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    ThrowType(env, "copyFileFromFd: srcFd must be a number");
    return env.Undefined();
  }
  double fdv = info[0].As<Napi::Number>().DoubleValue();
  if (!(fdv >= 0 && fdv <= 2147483647.0) || fdv != static_cast<double>(static_cast<int>(fdv))) {
    ThrowRange(env, "copyFileFromFd: srcFd must be an integer in 0..2147483647");
    return env.Undefined();
  }
  if (info.Length() < 2 || !info[1].IsString()) {
    ThrowType(env, "copyFileFromFd: dstPath must be a string");
    return env.Undefined();
  }
  std::string dst = info[1].As<Napi::String>().Utf8Value();
  if (dst.empty() || dst.find('\0') != std::string::npos) {
    ThrowRange(env, "copyFileFromFd: dstPath must be a non-empty string without NUL bytes");
    return env.Undefined();
  }
  if (info.Length() < 3 || !info[2].IsNumber()) {
    ThrowType(env, "copyFileFromFd: mode must be a number");
    return env.Undefined();
  }
  double mv = info[2].As<Napi::Number>().DoubleValue();
  if (!(mv >= 0 && mv <= 0777) || mv != static_cast<double>(static_cast<int>(mv))) {
    ThrowRange(env, "copyFileFromFd: mode must be an integer in 0..0o777");
    return env.Undefined();
  }
  // The worker's own reference to the open file: closing srcFd meanwhile cannot make it copy from
  // whatever file later gets that number.
  int src = fcntl(static_cast<int>(fdv), F_DUPFD_CLOEXEC, 0);
  if (src < 0) {
    int e = errno;
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    d.Reject(ErrnoError(env, e, "fcntl", e == EBADF ? "srcFd is not an open descriptor" : "").Value());
    return d.Promise();
  }
  auto* w = new CopyFromFdWorker(env, src, std::move(dst), static_cast<mode_t>(mv));
  Napi::Promise p = w->Promise();
  w->Queue();  // the worker deletes itself after OnOK
  return p;
}

}  // namespace

void InitCopyFile(Napi::Env env, Napi::Object exports) {
  exports.Set("copyFileFromFd", Napi::Function::New(env, CopyFileFromFd, "copyFileFromFd"));
}

}  // namespace nvz
