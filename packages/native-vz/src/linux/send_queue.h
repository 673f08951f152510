// @fleet/native-vz: a FramePort's sender thread (issue 20) — a bounded queue of frames and one
// thread that writes them to the port's fd.
//
// Why: the kernel's share of a send (sendmmsg into a veth or AF_PACKET socket: skb allocation,
// copy, and the delivery to the peer, which runs on the sending CPU; one write() per frame on a
// TAP) is most of the pump's per-frame cost. Done on the JS thread, it serialises with the
// receive and the filter on one core while the second core idles. With a sender thread the JS
// thread only copies the frames the filter passed into this queue (one memcpy each, ~0.1 µs)
// and goes back to receiving.
//
// Contract (the same as a synchronous send, one queue deeper): Enqueue never blocks; it copies
// a prefix of the frames that fits and returns its length — what does not fit is the caller's to
// drop and count (a NIC whose transmit ring is full). The thread never drops a frame because the
// peer is slow: on EAGAIN it waits (poll) for the fd to be writable, or for Stop(). It drops only
// what the kernel refuses for good (ENOBUFS, EMSGSIZE, a closed peer), counted. For datagram
// kinds only (sendmmsg on a socket, write() per frame on a TAP): a stream socket moves a batch in
// one sendmsg already.
//
// Header-only: compiled into frame_port.cc, which the macOS build also compiles (portable POSIX:
// poll, a self-pipe, std::thread).
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace nvz {

class SendQueue {
 public:
  enum class Kind { kDatagram, kTap };

  // Counters of the sender thread and the queue; read with Snapshot() (under the lock).
  struct Stats {
    double txFrames = 0, txBytes = 0, txBatches = 0, txDrops = 0, txErrors = 0;
    double eagain = 0, enobufs = 0;
    double queueFull = 0;   // frames Enqueue refused (the queue had no room)
    double queuedFrames = 0, queuedBytes = 0;  // in the queue now
    int lastErrno = 0;
  };

  // `bytes`: the queue's data capacity.
  // `on_room`: called on the sender thread when a WaitForRoom() is pending and the queue has
  // drained to half; it must be thread-safe (FramePort: uv_async_send).
  SendQueue(int fd, Kind kind, size_t bytes, std::function<void()> on_room)
      : fd_(fd), kind_(kind), cap_(bytes), on_room_(std::move(on_room)) {
    // Not zero-filled: a page of the queue costs memory only once a frame has been written to it
    // (an idle VM's queue stays near empty, and an empty queue starts again at its front).
    buf_.reset(new uint8_t[bytes]);
    slots_ = 64;
    while (slots_ < bytes / 256 && slots_ < (1u << 14)) slots_ <<= 1;
    desc_.reset(new Desc[slots_]);
  }

  ~SendQueue() { Stop(); }

  // Starts the thread; false (errno set) if the wake-up pipe cannot be made.
  bool Start() {
    if (pipe(wake_) != 0) return false;
    for (int p : wake_) {
      fcntl(p, F_SETFD, FD_CLOEXEC);
      fcntl(p, F_SETFL, fcntl(p, F_GETFL) | O_NONBLOCK);
    }
    thread_ = std::thread([this] { Run(); });
    return true;
  }

  // Stops and joins the thread; frames still queued are dropped and counted. Idempotent.
  void Stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_one();
    if (wake_[1] >= 0) {
      char b = 1;
      ssize_t w = write(wake_[1], &b, 1);
      (void)w;
    }
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lk(mu_);
    stats_.txDrops += static_cast<double>(tail_ - head_);
    head_ = tail_;
    queued_bytes_ = 0;
    for (int& p : wake_) {
      if (p >= 0) close(p);
      p = -1;
    }
  }

  // Copies frames[0, count) into the queue, in order, up to the first that does not fit.
  size_t Enqueue(const iovec* frames, size_t count) {
    uint64_t head, tail;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return 0;
      head = head_;
      tail = tail_;
    }
    // The consumer only frees space, so a stale head is conservative. Frames are placed whole,
    // contiguously: at wpos_, or at 0 when the end of the buffer is too short.
    const size_t cap = cap_;
    const size_t slots = slots_;
    size_t n = 0, bytes = 0;
    for (; n < count; n++) {
      if (tail - head >= slots) break;
      size_t need = frames[n].iov_len;
      size_t at;
      if (tail == head) {
        at = 0;  // empty: the consumer holds nothing
        if (need > cap) break;
      } else {
        size_t oldest = desc_[head & (slots - 1)].off;
        if (wpos_ >= oldest) {  // [oldest, wpos_) in use: free is [wpos_, cap) and [0, oldest)
          if (wpos_ + need <= cap) at = wpos_;
          else if (need < oldest) at = 0;
          else break;
        } else {  // wrapped: free is [wpos_, oldest)
          if (wpos_ + need < oldest) at = wpos_;
          else break;
        }
      }
      memcpy(buf_.get() + at, frames[n].iov_base, frames[n].iov_len);
      desc_[tail & (slots - 1)] = {static_cast<uint32_t>(at), static_cast<uint32_t>(need)};
      wpos_ = at + need;
      bytes += need;
      tail++;
    }
    bool wake = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      tail_ = tail;
      tail_pub_.store(tail, std::memory_order_release);
      queued_bytes_ += bytes;
      stats_.queueFull += static_cast<double>(count - n);
      stats_.txDrops += static_cast<double>(count - n);
      wake = idle_ && n > 0;
    }
    if (wake) cv_.notify_one();
    return n;
  }

  // True if the queue is at most half full now; otherwise on_room() runs (once) when it is.
  bool WaitForRoom() {
    std::lock_guard<std::mutex> lk(mu_);
    if (HasRoomLocked()) return true;
    want_room_ = true;
    return false;
  }

  Stats Snapshot() {
    std::lock_guard<std::mutex> lk(mu_);
    Stats s = stats_;
    s.queuedFrames = static_cast<double>(tail_ - head_);
    s.queuedBytes = static_cast<double>(queued_bytes_);
    return s;
  }

 private:
  struct Desc {
    uint32_t off, len;
  };

  bool HasRoomLocked() const { return queued_bytes_ * 2 <= cap_ && (tail_ - head_) * 2 <= slots_; }

  void Run() {
    const size_t slots = slots_;
    std::vector<iovec> iov;
    std::vector<mmsghdr> msgs;
    while (true) {
      uint64_t head, tail;
      SpinForWork();
      {
        std::unique_lock<std::mutex> lk(mu_);
        idle_ = true;
        cv_.wait(lk, [this] { return stopping_ || tail_ != head_; });
        idle_ = false;
        if (stopping_) return;
        head = head_;
        tail = tail_;
      }
      size_t n = static_cast<size_t>(tail - head);
      if (n > kMaxChunk) n = kMaxChunk;
      iov.resize(n);
      size_t bytes = 0;
      for (size_t i = 0; i < n; i++) {
        const Desc& d = desc_[(head + i) & (slots - 1)];
        iov[i] = {buf_.get() + d.off, d.len};
        bytes += d.len;
      }
      Stats delta;
      if (kind_ == Kind::kDatagram) SendDatagrams(iov.data(), n, msgs, delta);
      else SendTap(iov.data(), n, delta);
      bool room = false;
      {
        std::lock_guard<std::mutex> lk(mu_);
        head_ = head + n;
        queued_bytes_ -= bytes;
        stats_.txFrames += delta.txFrames;
        stats_.txBytes += delta.txBytes;
        stats_.txBatches += delta.txBatches;
        stats_.txDrops += delta.txDrops;
        stats_.txErrors += delta.txErrors;
        stats_.enobufs += delta.enobufs;
        if (delta.lastErrno != 0) stats_.lastErrno = delta.lastErrno;
        if (want_room_ && HasRoomLocked()) {
          want_room_ = false;
          room = true;
        }
      }
      if (room && on_room_) on_room_();
    }
  }

  // Optionally, before sleeping on the condition variable, look for more frames for a while:
  // under traffic the next batch is microseconds away, and a sleeping thread costs the producer a
  // futex wake and the machine a CPU wake-up (expensive in a VM, where an idle vCPU halts).
  void SpinForWork() {
    if (spin_ns_ <= 0) return;
    auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns_);
    uint64_t head;
    {
      std::lock_guard<std::mutex> lk(mu_);
      head = head_;
    }
    while (tail_pub_.load(std::memory_order_acquire) == head && std::chrono::steady_clock::now() < until) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }

  // Waits until the fd is writable (true) or Stop() was called (false).
  bool WaitWritable() {
    while (true) {
      pollfd p[2] = {{fd_, POLLOUT, 0}, {wake_[0], POLLIN, 0}};
      int r = poll(p, 2, -1);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 || (p[1].revents & POLLIN)) return false;
      if (p[0].revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) return true;
    }
  }

  // Counted at once (not with the chunk's other counters): a thread waiting for its peer shows it.
  void NoteEagain() {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.eagain++;
  }

  static void Fail(Stats& d, int err) {
    if (err == ENOBUFS) d.enobufs++;
    else d.txErrors++;
    d.lastErrno = err;
  }

  void SendDatagrams(iovec* iov, size_t n, std::vector<mmsghdr>& msgs, Stats& d) {
    msgs.resize(n);
    for (size_t i = 0; i < n; i++) {
      memset(&msgs[i], 0, sizeof msgs[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    size_t done = 0;
    while (done < n) {
      int r = sendmmsg(fd_, &msgs[done], static_cast<unsigned>(n - done), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r > 0) {
        d.txBatches++;
        for (size_t i = done; i < done + static_cast<size_t>(r); i++) d.txBytes += msgs[i].msg_len;
        d.txFrames += r;
        done += static_cast<size_t>(r);
        continue;
      }
      int err = r < 0 ? errno : EAGAIN;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        NoteEagain();
        if (WaitWritable()) continue;
        break;  // stopping: the rest is dropped below
      }
      // Refused: this frame is lost. After ENOBUFS (the device's queue) or EMSGSIZE (this frame
      // alone) the next may pass; any other error (the device or peer is gone) would refuse every
      // frame of the chunk in turn, so the rest is dropped below at once.
      Fail(d, err);
      d.txDrops++;
      done++;
      if (err != ENOBUFS && err != EMSGSIZE) break;
    }
    d.txDrops += static_cast<double>(n - done);
  }

  void SendTap(iovec* iov, size_t n, Stats& d) {
    size_t done = 0;
    while (done < n) {
      ssize_t r = write(fd_, iov[done].iov_base, iov[done].iov_len);
      if (r >= 0) {
        d.txBytes += static_cast<double>(r);
        d.txFrames++;
        done++;
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        NoteEagain();
        if (WaitWritable()) continue;
        break;
      }
      Fail(d, errno);
      d.txDrops++;
      done++;
      if (errno == EBADF || errno == EIO) break;  // the device is gone: no frame will pass
    }
    if (done > 0) d.txBatches++;
    d.txDrops += static_cast<double>(n - done);
  }

  static constexpr size_t kMaxChunk = 256;

  const int fd_;
  const Kind kind_;
  const size_t cap_;
  std::unique_ptr<uint8_t[]> buf_;
  size_t slots_;
  std::unique_ptr<Desc[]> desc_;  // slots_ entries, a power of two
  std::function<void()> on_room_;
  int wake_[2] = {-1, -1};
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t head_ = 0, tail_ = 0;  // descriptor indices; [head_, tail_) is queued
  std::atomic<uint64_t> tail_pub_{0};  // tail_, readable without the lock (SpinForWork)
  // 0 by default: on two cores a spinning sender took the CPU the threads feeding it needed
  // (bench/frame-pump.ts, issue 20 sixth pass); kept as a knob for measurements.
  long spin_ns_ = getenv("FLEET_SENDQ_SPIN_NS") ? atol(getenv("FLEET_SENDQ_SPIN_NS")) : 0;
  size_t queued_bytes_ = 0;
  size_t wpos_ = 0;  // producer only: where the next frame goes
  bool idle_ = false;
  bool stopping_ = false;
  bool want_room_ = false;
  Stats stats_;
};

}  // namespace nvz
