// @fleet/native-vz, Linux: a TAP's frames read and written in batches through io_uring, for
// FramePort (issue 20).
//
// Why: tun has no recvmmsg/sendmmsg, so a TAP costs one read() or write() per frame, and on this
// project's machines (paravirtualised guests) the system call itself is most of that cost:
// measured with a C program, a write() loop took ~1.5 µs of CPU per 1514-byte frame, the same
// writes submitted 64 at a time ~0.25–0.33 µs; reads ~1.9 → ~0.9 µs (the reader's own CPU).
// One io_uring_enter now carries a batch.
//
// Never blocking the JS thread:
// - every read and write carries RWF_NOWAIT, so an empty TAP answers -EAGAIN at once instead of
//   leaving the read armed (without it io_uring waits for the next frame, O_NONBLOCK or not);
// - the call waits for exactly the completions it submitted, with a timeout; if they do not all
//   come (a kernel that would punt them to a worker), everything still in flight on the ring is
//   cancelled and waited for, the ring is closed, and the port goes back to read()/write() for good.
// Ordering: requests are issued inline in submission order, so slot i gets the i-th frame the
// TAP had queued. Writes are linked (IOSQE_IO_LINK): one that fails cancels those after it, so a
// batch is accepted as a prefix, as with the write() loop it replaces.
//
// Without liburing at build time (FLEET_HAVE_LIBURING undefined) or with io_uring refused at run
// time (io_uring_disabled, seccomp, an old kernel), Setup() returns false and the caller keeps its
// read()/write() loops.
#pragma once
#ifdef __linux__

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#ifdef FLEET_HAVE_LIBURING
#include <liburing.h>
#endif

namespace nvz {

class TapUring {
 public:
  TapUring() = default;
  TapUring(const TapUring&) = delete;
  TapUring& operator=(const TapUring&) = delete;
  ~TapUring() { Close(); }

  // A ring for batches of up to `entries` requests; false (and inactive) if io_uring is unavailable.
  bool Setup(unsigned entries) {
#ifdef FLEET_HAVE_LIBURING
    if (active_) return true;
    unsigned n = 1;
    while (n < entries && n < 4096) n <<= 1;
    if (io_uring_queue_init(n, &ring_, 0) != 0) return false;
    entries_ = n;
    active_ = true;
    return true;
#else
    (void)entries;
    return false;
#endif
  }

  // Whether this process may set up a ring now: 0, or the errno io_uring_setup answered (ENOSYS
  // when built without liburing).
  static int Probe() {
#ifdef FLEET_HAVE_LIBURING
    io_uring ring;
    int r = io_uring_queue_init(2, &ring, 0);
    if (r != 0) return -r;
    io_uring_queue_exit(&ring);
    return 0;
#else
    return ENOSYS;
#endif
  }

  bool active() const { return active_; }
  unsigned capacity() const { return entries_; }

  void Close() {
#ifdef FLEET_HAVE_LIBURING
    if (active_) io_uring_queue_exit(&ring_);
#endif
    active_ = false;
  }

  // Reads up to `count` (≤ capacity()) frames from `fd` into slot i = base + i * stride, each read
  // asking for `ask` bytes; res[i] gets read()'s result for slot i (bytes, or -errno; -EAGAIN when
  // the TAP was empty). Returns false if the ring failed (res is then meaningless).
  bool Read(int fd, uint8_t* base, size_t stride, size_t ask, size_t count, int32_t* res) {
#ifdef FLEET_HAVE_LIBURING
    for (size_t i = 0; i < count; i++) {
      io_uring_sqe* e = io_uring_get_sqe(&ring_);
      if (e == nullptr) return Fail();
      io_uring_prep_read(e, fd, base + i * stride, static_cast<unsigned>(ask), 0);
      e->rw_flags = RWF_NOWAIT;
      e->user_data = i;
    }
    return Complete(count, res);
#else
    (void)fd, (void)base, (void)stride, (void)ask, (void)count, (void)res;
    return false;
#endif
  }

  // Writes iov[0, count) (≤ capacity()), one frame each, linked so that a failure cancels the
  // rest; res[i] gets write()'s result (bytes, -errno, or -ECANCELED after a failure).
  bool Write(int fd, const iovec* iov, size_t count, int32_t* res) {
#ifdef FLEET_HAVE_LIBURING
    for (size_t i = 0; i < count; i++) {
      io_uring_sqe* e = io_uring_get_sqe(&ring_);
      if (e == nullptr) return Fail();
      io_uring_prep_write(e, fd, iov[i].iov_base, static_cast<unsigned>(iov[i].iov_len), 0);
      e->rw_flags = RWF_NOWAIT;
      if (i + 1 < count) e->flags |= IOSQE_IO_LINK;
      e->user_data = i;
    }
    return Complete(count, res);
#else
    (void)fd, (void)iov, (void)count, (void)res;
    return false;
#endif
  }

 private:
#ifdef FLEET_HAVE_LIBURING
  static constexpr uint64_t kCancelTag = ~uint64_t{0};

  // Submits what was prepared and collects exactly `count` completions into res[user_data].
  bool Complete(size_t count, int32_t* res) {
    int s;
    do {
      s = io_uring_submit(&ring_);
    } while (s == -EINTR);
    if (s > 0) inflight_ += static_cast<size_t>(s);
    if (s < 0 || static_cast<size_t>(s) != count) return Fail();
    // RWF_NOWAIT requests complete during the submission itself: normally all are reaped here.
    Reap(res, count);
    if (inflight_ > 0) {
      // Only a kernel that parks one gets here: wait 100 ms, then cancel and fall back.
      io_uring_cqe* cqe;
      __kernel_timespec ts{0, 100 * 1000 * 1000};
      io_uring_wait_cqes(&ring_, &cqe, static_cast<unsigned>(inflight_), &ts, nullptr);
      Reap(res, count);
      if (inflight_ > 0) return Fail();
    }
    return true;
  }

  // Takes every completion that is ready; res[user_data] for ours, nothing for the cancel's own.
  void Reap(int32_t* res, size_t count) {
    io_uring_cqe* cqe;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      seen++;
      if (cqe->user_data == kCancelTag) continue;
      if (res != nullptr && cqe->user_data < count) res[cqe->user_data] = cqe->res;
      if (inflight_ > 0) inflight_--;
    }
    io_uring_cq_advance(&ring_, seen);
  }

  // Cancels whatever is still in flight and waits for it (its buffers must not be reused while the
  // kernel may still write them), then closes the ring: the port falls back for good.
  bool Fail() {
    io_uring_sqe* e = io_uring_get_sqe(&ring_);
    if (e != nullptr) {
      io_uring_prep_cancel64(e, 0, IORING_ASYNC_CANCEL_ANY);
      e->user_data = kCancelTag;
    }
    // Anything prepared but not submitted goes in first (then counts as in flight), the cancel last.
    int s = io_uring_submit(&ring_);
    if (s > 0) inflight_ += static_cast<size_t>(s) - (e != nullptr ? 1 : 0);
    for (int i = 0; i < 50 && inflight_ > 0; i++) {
      io_uring_cqe* cqe;
      __kernel_timespec ts{0, 100 * 1000 * 1000};
      if (io_uring_wait_cqe_timeout(&ring_, &cqe, &ts) == 0) Reap(nullptr, 0);
    }
    Close();
    return false;
  }

  size_t inflight_ = 0;
  io_uring ring_{};
#endif
  bool active_ = false;
  unsigned entries_ = 0;
};

}  // namespace nvz

#endif  // __linux__
