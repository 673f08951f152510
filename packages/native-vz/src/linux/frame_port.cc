// @fleet/native-vz, Linux half: FramePort — batched frame I/O on a datagram socket or TAP fd,
// driven by libuv readiness (one uv_poll_t per port on the JS thread's loop; no threads, no
// busy polling).
//
// Receive: on readability, recvmmsg (sockets, including AF_PACKET SOCK_RAW sockets bound to one
// interface: the veth uplink, packet_socket.cc) or a read() loop (TAP) fills a fixed, preallocated
// receive area (batch x frameSize bytes, an ArrayBuffer owned by the JS wrapper) and calls JS once
// per batch with the frame count; offsets/lengths are written into two Uint32Arrays. The area is
// reused for the next batch, so JS may only look at it during the callback.
// Send: sendmmsg (sockets) or a write() loop (TAP), never blocking; EAGAIN/ENOBUFS stop the batch
// and are counted, never thrown. The return value is how many frames (a prefix) were accepted.
// TAP on Linux: the reads and writes of a batch go through io_uring, one system call per batch
// (tap_uring.h), when the kernel allows it; otherwise the read()/write() loops.
//
// Stream framing (issue 20): on an AF_UNIX SOCK_STREAM socket each frame is a 4-byte big-endian
// length followed by the frame — QEMU's `-netdev stream` (and `-netdev socket`) framing — so one
// read()/sendmsg() moves many frames, in one skb per ~32 KiB instead of one per frame, with one
// wake-up of the peer. Receive: read() fills the receive area, complete frames are handed to JS
// in place (offsets past each prefix), the partial tail is moved to the front for the next read.
// A prefix longer than frameSize but within QEMU's own limit is skipped (counted as rxTruncated,
// like an oversized datagram: the length says where the next frame starts, nothing desynchronises);
// a prefix beyond QEMU's limit cannot come from QEMU's framing, so the stream is shut down (both
// ways) and counted (rxBadLength): resynchronising on garbage could hand the filter forged frames.
// Send: one sendmsg of [prefix, frame] iovec pairs; if the kernel takes only part of a frame, its
// rest is kept (at most one frame) and written before anything else, when the socket is writable
// again — a frame is never split, and frames after it are dropped and counted, like a datagram.
#include <errno.h>
#include <fcntl.h>
#ifdef __linux__
#include <linux/if_packet.h>  // the veth uplink's AF_PACKET socket; macOS gets stand-ins (darwin/mmsg_compat.h)
#endif
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include <memory>
#include <vector>

#include "native_vz.h"
#include "packet_ring.h"
#include "send_queue.h"
#include "tap_uring.h"

namespace nvz {
namespace {

struct Stats {
  double rxFrames = 0, rxBytes = 0, rxBatches = 0, rxWakeups = 0, rxTruncated = 0, rxErrors = 0;
  double txFrames = 0, txBytes = 0, txBatches = 0, txCalls = 0, txDrops = 0, txErrors = 0;
  double eagain = 0, enobufs = 0;
  // AF_PACKET only: frames the kernel dropped because the receive queue was full
  // (PACKET_STATISTICS tp_drops, accumulated: reading resets the kernel's counter), and frames
  // refused here because their aux data says the checksum is not filled in or the device stripped
  // a VLAN tag into metadata (a plain frame consumer such as QEMU's -netdev dgram cannot take them).
  double rxQueueDrops = 0, rxCsumPartial = 0, rxVlanStripped = 0;
  // Stream framing only: prefixes beyond kStreamMaxPrefix (the stream was shut down), end of
  // stream seen, sends that ended inside a frame (its tail was kept and sent later).
  double rxBadLength = 0, rxEof = 0, txPartial = 0;
  // TAP only: times the port's io_uring failed and it went back to read()/write() for good; and
  // the system calls that read a round of frames / wrote a chunk of frames through it (so that a
  // test and an operator can see the frames really went that way, and how many per call).
  double ioUringFallbacks = 0, ioUringRxCalls = 0, ioUringTxCalls = 0;
  int lastErrno = 0;
};

class FramePort : public Napi::ObjectWrap<FramePort> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "FramePort",
                       {
                           InstanceMethod("start", &FramePort::Start),
                           InstanceMethod("stop", &FramePort::Stop),
                           InstanceMethod("send", &FramePort::Send),
                           InstanceMethod("sendBatch", &FramePort::SendBatch),
                           InstanceMethod("waitWritable", &FramePort::WaitWritable),
                           InstanceMethod("stats", &FramePort::GetStats),
                           InstanceMethod("close", &FramePort::Close),
                           InstanceMethod("ref", &FramePort::RefHandle),
                           InstanceMethod("unref", &FramePort::UnrefHandle),
                           InstanceAccessor("kind", &FramePort::Kind, nullptr),
                           InstanceAccessor("closed", &FramePort::Closed, nullptr),
                           InstanceAccessor("sendThread", &FramePort::HasSendThread, nullptr),
                       });
  }

  // new FramePort(fd, rxArea: ArrayBuffer, offsets: Uint32Array, lengths: Uint32Array,
  //               frameSize, batch, ownsFd, maxBatchesPerWakeup, sendQueueBytes, rxRingFrames)
  explicit FramePort(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FramePort>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 8 || !info[0].IsNumber() || !info[1].IsArrayBuffer() || !info[2].IsTypedArray() ||
        !info[3].IsTypedArray() || !info[4].IsNumber() || !info[5].IsNumber()) {
      Napi::TypeError::New(env, "FramePort(fd, rxArea, offsets, lengths, frameSize, batch, ownsFd, maxBatches)")
          .ThrowAsJavaScriptException();
      return;
    }
    fd_ = info[0].As<Napi::Number>().Int32Value();
    Napi::ArrayBuffer area = info[1].As<Napi::ArrayBuffer>();
    Napi::Uint32Array offs = info[2].As<Napi::Uint32Array>();
    Napi::Uint32Array lens = info[3].As<Napi::Uint32Array>();
    frame_size_ = info[4].As<Napi::Number>().Uint32Value();
    batch_ = info[5].As<Napi::Number>().Uint32Value();
    owns_fd_ = info[6].ToBoolean().Value();
    max_batches_ = info[7].IsNumber() ? info[7].As<Napi::Number>().Uint32Value() : 16;
    if (max_batches_ == 0) max_batches_ = 1;
    double sq_bytes = info.Length() > 8 && info[8].IsNumber() ? info[8].As<Napi::Number>().DoubleValue() : 0;
    if (!(sq_bytes >= 0) || sq_bytes > double(1u << 30) || (sq_bytes > 0 && sq_bytes < double(frame_size_) + 4)) {
      Napi::RangeError::New(env, "FramePort: sendQueueBytes must be 0 or hold one frame (at most 1 GiB)").ThrowAsJavaScriptException();
      fd_ = -1;
      return;
    }
    if (fd_ < 0 || frame_size_ == 0 || batch_ == 0 || batch_ > 1024 || area.ByteLength() < frame_size_ * batch_ ||
        offs.ElementLength() < batch_ || lens.ElementLength() < batch_) {
      Napi::RangeError::New(env, "FramePort: bad fd, frameSize, batch or receive area").ThrowAsJavaScriptException();
      fd_ = -1;  // never close a caller's fd on a failed construction
      return;
    }
    struct stat st;
    if (fstat(fd_, &st) != 0) {
      ErrnoError(env, errno, "fstat").ThrowAsJavaScriptException();
      fd_ = -1;
      return;
    }
    is_socket_ = S_ISSOCK(st.st_mode);
    if (is_socket_) {
      int type = 0, domain = 0;
      socklen_t len = sizeof type, dlen = sizeof domain;
      if (getsockopt(fd_, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
          getsockopt(fd_, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) != 0) {
        ErrnoError(env, errno, "getsockopt SO_TYPE/SO_DOMAIN").ThrowAsJavaScriptException();
        fd_ = -1;
        return;
      }
      // One frame = one datagram: SOCK_DGRAM, or an AF_PACKET SOCK_RAW socket (whole Ethernet frames);
      // or an AF_UNIX SOCK_STREAM socket with QEMU's length-prefixed framing.
      is_packet_ = domain == AF_PACKET && type == SOCK_RAW;
      is_stream_ = domain == AF_UNIX && type == SOCK_STREAM;
      if (type != SOCK_DGRAM && !is_packet_ && !is_stream_) {
        Napi::TypeError::New(env, "FramePort: the socket is neither SOCK_DGRAM, AF_PACKET/SOCK_RAW nor AF_UNIX/SOCK_STREAM")
            .ThrowAsJavaScriptException();
        fd_ = -1;
        return;
      }
      if (is_stream_) {
        // The area must hold one whole frame with its prefix; larger frames are skipped.
        area_len_ = area.ByteLength();
        if (area_len_ < 64 + 4) {
          Napi::RangeError::New(env, "FramePort: the receive area is too small for stream framing").ThrowAsJavaScriptException();
          fd_ = -1;
          return;
        }
        stream_max_ = frame_size_ < area_len_ - 4 ? frame_size_ : area_len_ - 4;
      }
      if (is_packet_) {
        int aux = 0;
        socklen_t alen = sizeof aux;
        auxdata_ = getsockopt(fd_, SOL_PACKET, PACKET_AUXDATA, &aux, &alen) == 0 && aux != 0;
        int vnet = 0;
        alen = sizeof vnet;
        vnet_hdr_ = getsockopt(fd_, SOL_PACKET, PACKET_VNET_HDR, &vnet, &alen) == 0 && vnet != 0;
      }
      // recvmmsg/sendmmsg are called with MSG_DONTWAIT; O_NONBLOCK as well, for any other reader.
      int fl = fcntl(fd_, F_GETFL);
      if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd_, F_SETFL, fl | O_NONBLOCK);
    } else {
      // TAP / character device: read()/write() per frame need O_NONBLOCK on the file description.
      if (area.ByteLength() < frame_size_ * batch_ + 1) {
        Napi::RangeError::New(env, "FramePort: a TAP's receive area needs one spare byte past its slots").ThrowAsJavaScriptException();
        fd_ = -1;
        return;
      }
      int fl = fcntl(fd_, F_GETFL);
      if (fl < 0 || fcntl(fd_, F_SETFL, fl | O_NONBLOCK) < 0) {
        ErrnoError(env, errno, "fcntl O_NONBLOCK").ThrowAsJavaScriptException();
        fd_ = -1;
        return;
      }
#ifdef __linux__
      // FLEET_TAP_IO_URING=0 keeps the read()/write() loops (for measurements).
      const char* uring = getenv("FLEET_TAP_IO_URING");
      // Sends are not bounded by the receive batch (a send-only port may read one frame at a
      // time): at least kTapUringMin requests per system call.
      unsigned entries = static_cast<unsigned>(batch_ > kTapUringMin ? batch_ : kTapUringMin);
      if ((uring == nullptr || strcmp(uring, "0") != 0) && tap_uring_.Setup(entries)) {
        uring_res_.assign(tap_uring_.capacity(), 0);
      }
#endif
    }
    rx_area_ = Napi::Persistent(area);
    rx_offs_ = Napi::Persistent(offs);
    rx_lens_ = Napi::Persistent(lens);
    rx_data_ = static_cast<uint8_t*>(area.Data());
    off_ = offs.Data();
    len_ = lens.Data();

    rx_msgs_.resize(batch_);
    rx_iov_.resize(batch_);
    if (auxdata_) rx_cmsg_.assign(batch_ * kCmsgSpace, 0);
    for (size_t i = 0; i < batch_; i++) {
      rx_iov_[i].iov_base = rx_data_ + i * frame_size_;
      rx_iov_[i].iov_len = frame_size_;
      memset(&rx_msgs_[i], 0, sizeof rx_msgs_[i]);
      rx_msgs_[i].msg_hdr.msg_iov = &rx_iov_[i];
      rx_msgs_[i].msg_hdr.msg_iovlen = 1;
    }

    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "FramePort: no libuv loop").ThrowAsJavaScriptException();
      fd_ = -1;
      return;
    }
    poll_ = static_cast<uv_poll_t*>(malloc(sizeof(uv_poll_t)));  // freed by free() via uv_close
    if (poll_ == nullptr) {
      Napi::Error::New(env, "FramePort: out of memory").ThrowAsJavaScriptException();
      fd_ = -1;
      return;
    }
    if (int r = uv_poll_init(loop, poll_, fd_); r != 0) {
      free(poll_);
      poll_ = nullptr;
      fd_ = -1;
      Napi::Error::New(env, std::string("uv_poll_init: ") + uv_strerror(r)).ThrowAsJavaScriptException();
      return;
    }
    poll_->data = this;
    env_ = env;
    napi_add_env_cleanup_hook(env, &FramePort::CleanupHook, this);
    hook_ = true;
    Napi::Object resource = Napi::Object::New(env);
    async_ = std::make_unique<Napi::AsyncContext>(env, "FLEET_FRAMEPORT", resource);
#ifdef __linux__
    // The receive ring: AF_PACKET without a virtio-net header only (ignored for other kinds).
    double ring_frames = info.Length() > 9 && info[9].IsNumber() ? info[9].As<Napi::Number>().DoubleValue() : 0;
    if (ring_frames > 0 && is_packet_ && !vnet_hdr_) {
      if (ring_frames > 65536 || frame_size_ > 16384) {
        Napi::RangeError::New(env, "FramePort: rxRingFrames must be at most 65536, with frameSize at most 16384").ThrowAsJavaScriptException();
        fd_ = -1;
        Shutdown();
        return;
      }
      // Setting up a ring purges the socket's receive queue: what is queued now is read first
      // and delivered before the ring's frames. (A frame arriving in the microseconds between
      // this read and the ring's set-up is lost, as by a link that comes up a moment later.)
      for (bool drained = false; !drained && early_bytes_ < kEarlyMax;) {
        size_t n = RecvBatch(&drained);
        if (n == 0 && !drained) break;  // an error: counted by RecvBatch
        for (size_t i = 0; i < n; i++) {
          early_.emplace_back(rx_data_ + off_[i], rx_data_ + off_[i] + len_[i]);
          early_bytes_ += len_[i];
        }
      }
      if (int e = ring_.Setup(fd_, frame_size_, static_cast<size_t>(ring_frames)); e != 0) {
        ErrnoError(env, e, "FramePort: PACKET_RX_RING").ThrowAsJavaScriptException();
        fd_ = -1;
        Shutdown();
        return;
      }
    }
#endif
    // Not on a stream socket: one sendmsg there moves a whole batch (~40 frames) in a few skbs,
    // so a thread would only add a copy and a wake-up (measured: slower, issue 20 sixth pass).
    if (sq_bytes > 0 && !is_stream_ && !StartSendQueue(env, loop, static_cast<size_t>(sq_bytes))) return;
  }

  ~FramePort() override {
    if (hook_) {
      napi_remove_env_cleanup_hook(env_, &FramePort::CleanupHook, this);
      hook_ = false;
    }
    Shutdown();
  }

 private:
  static void CleanupHook(void* arg) {
    FramePort* self = static_cast<FramePort*>(arg);
    self->hook_ = false;  // being run: must not be removed
    self->Shutdown();
  }

  // The sender thread (send_queue.h): sends become copies into its queue. `room_` wakes this
  // loop when a waitWritable() is pending and the queue has drained to half.
  bool StartSendQueue(Napi::Env env, uv_loop_t* loop, size_t bytes) {
    room_ = static_cast<uv_async_t*>(malloc(sizeof(uv_async_t)));  // freed by free() via uv_close
    if (room_ == nullptr || uv_async_init(loop, room_, &FramePort::OnRoom) != 0) {
      free(room_);
      room_ = nullptr;
      Napi::Error::New(env, "FramePort: uv_async_init failed").ThrowAsJavaScriptException();
      fd_ = -1;  // never close a caller's fd on a failed construction
      Shutdown();
      return false;
    }
    room_->data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(room_));  // only a pending waitWritable keeps the loop alive
    SendQueue::Kind kind = is_socket_ ? SendQueue::Kind::kDatagram : SendQueue::Kind::kTap;
    uv_async_t* wake = room_;
    sq_ = std::make_unique<SendQueue>(fd_, kind, bytes, [wake] { uv_async_send(wake); });
    if (!sq_->Start()) {
      int e = errno;
      sq_.reset();
      ErrnoError(env, e, "FramePort: sender thread pipe").ThrowAsJavaScriptException();
      fd_ = -1;
      Shutdown();
      return false;
    }
    return true;
  }

  static void OnRoom(uv_async_t* handle) {
    FramePort* self = static_cast<FramePort*>(handle->data);
    if (self == nullptr || self->closed_ || !self->want_writable_) return;
    Napi::HandleScope scope(self->env_);
    self->want_writable_ = false;
    uv_unref(reinterpret_cast<uv_handle_t*>(handle));
    self->UpdatePoll();
    Napi::FunctionReference cb = std::move(self->on_writable_);
    if (!cb.IsEmpty()) self->CallJs(cb, {});
  }

  // Stop polling, close the uv handle (freed in its close callback) and the fd if owned.
  void Shutdown() {
    if (closed_) return;
    closed_ = true;
    reading_ = false;
    want_writable_ = false;
    // The sender thread first: it may be writing to the fd, and it wakes room_.
    if (sq_) sq_->Stop();
    if (room_ != nullptr) {
      room_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(room_), reinterpret_cast<uv_close_cb>(reinterpret_cast<void (*)()>(&free)));
      room_ = nullptr;
    }
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);
      poll_->data = nullptr;
      // The close callback runs on a later loop iteration. If the JS environment is being torn
      // down (worker thread exit), Node may have unloaded this addon by then, so the callback must
      // not be code of ours: the handle is malloc'ed and freed by libc's free() directly.
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), reinterpret_cast<uv_close_cb>(reinterpret_cast<void (*)()>(&free)));
      poll_ = nullptr;
    }
    if (resume_ != nullptr) {
      uv_timer_stop(resume_);
      resume_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(resume_), reinterpret_cast<uv_close_cb>(reinterpret_cast<void (*)()>(&free)));
      resume_ = nullptr;
    }
#ifdef __linux__
    ring_.Unmap();
    tap_uring_.Close();
#endif
    if (owns_fd_ && fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  void UpdatePoll() {
    if (closed_ || poll_ == nullptr) return;
    bool poll_writable = !sq_ && (want_writable_ || !tx_pend_.empty());
    int events = (reading_ ? UV_READABLE : 0) | (poll_writable ? UV_WRITABLE : 0);
    if (events == 0) {
      uv_poll_stop(poll_);
    } else if (int r = uv_poll_start(poll_, events, &FramePort::OnPoll); r != 0) {
      stats_.rxErrors++;
      stats_.lastErrno = -r;
    }
    // Keep the JS object alive while the loop may call into it.
    bool need = events != 0 || (sq_ && want_writable_);
    if (need && !self_ref_) {
      Ref();
      self_ref_ = true;
    } else if (!need && self_ref_) {
      self_ref_ = false;
      Unref();
    }
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    FramePort* self = static_cast<FramePort*>(handle->data);
    if (self == nullptr || self->closed_) return;
    Napi::HandleScope scope(self->env_);
    if (status < 0) {
      self->stats_.rxErrors++;
      self->stats_.lastErrno = -status;
      // e.g. EBADF after the fd was closed behind our back: stop, do not spin.
      self->reading_ = false;
      self->want_writable_ = false;
      if (!self->tx_pend_.empty()) {  // a kept frame tail cannot be written any more: lost, counted
        self->stats_.txDrops++;
        self->tx_pend_.clear();
        self->tx_pend_off_ = 0;
      }
      self->UpdatePoll();
      return;
    }
    if ((events & UV_WRITABLE) && !self->tx_pend_.empty()) {
      // The tail of a frame a previous send could only partly write: it goes first.
      self->FlushPending();
      self->UpdatePoll();
    }
    if ((events & UV_WRITABLE) && self->want_writable_ && self->tx_pend_.empty()) {
      self->want_writable_ = false;
      self->UpdatePoll();
      Napi::FunctionReference cb = std::move(self->on_writable_);
      if (!cb.IsEmpty()) self->CallJs(cb, {});
    }
    if ((events & UV_READABLE) && self->reading_ && !self->closed_) self->HandleReadable();
  }

  void CallJs(Napi::FunctionReference& cb, const std::initializer_list<napi_value>& args) {
    cb.MakeCallback(Value(), args, *async_);
    if (env_.IsExceptionPending()) {
      Napi::Error e = env_.GetAndClearPendingException();
      napi_fatal_exception(env_, e.Value());  // -> process 'uncaughtException'
    }
  }

#ifdef __linux__
  // Whether the ring has a frame now, looking again for up to kRingSpinNs (FLEET_RING_SPIN_NS) if not.
  bool SpinForRing() {
    if (ring_.Ready()) return true;
    if (kRingSpinNs <= 0) return false;
    timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
#if defined(__x86_64__) || defined(__i386__)
      for (int i = 0; i < 64; i++) __builtin_ia32_pause();
#endif
      if (ring_.Ready()) return true;
      clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < kRingSpinNs);
    return false;
  }

  // The receive ring's ready frames, copied into the area's slots (up to a batch); each slot goes
  // back to the kernel as soon as it is copied.
  size_t RingBatch() {
    size_t n = 0;
    while (n < batch_ && early_next_ < early_.size()) {  // frames read before the ring existed
      const std::vector<uint8_t>& f = early_[early_next_++];
      memcpy(rx_data_ + n * frame_size_, f.data(), f.size());
      off_[n] = static_cast<uint32_t>(n * frame_size_);
      len_[n] = static_cast<uint32_t>(f.size());
      n++;
    }
    if (early_next_ == early_.size() && !early_.empty()) {
      early_.clear();
      early_.shrink_to_fit();
      early_next_ = 0;
    }
    PacketRing::Verdict v;
    const uint8_t* data;
    uint32_t len;
    while (n < batch_ && ring_.Next(v, data, len)) {
      if (v == PacketRing::Verdict::kFrame && len <= frame_size_) {
        memcpy(rx_data_ + n * frame_size_, data, len);
        off_[n] = static_cast<uint32_t>(n * frame_size_);
        len_[n] = len;
        stats_.rxBytes += len;
        n++;
      } else if (v == PacketRing::Verdict::kCsumPartial) {
        stats_.rxCsumPartial++;
      } else if (v == PacketRing::Verdict::kVlanStripped) {
        stats_.rxVlanStripped++;
      } else {
        stats_.rxTruncated++;
      }
      ring_.Release();
    }
    return n;
  }
#endif

  // Fill the receive area; returns the number of frames (0 when drained or on error). *drained
  // when the fd said it had nothing more (recvmmsg/read EAGAIN; never set for a ring).
  size_t ReceiveBatch(bool* drained) {
#ifdef __linux__
    if (ring_.active()) return RingBatch();
#endif
    return RecvBatch(drained);
  }

  // recvmmsg (sockets) or a read() loop (TAP) into the area; *drained when the fd had nothing more.
  size_t RecvBatch(bool* drained) {
    size_t n = 0;
    if (is_socket_) {
      if (auxdata_) {
        // The kernel shrinks msg_controllen to what it wrote: give every slot its full space back.
        for (size_t i = 0; i < batch_; i++) {
          rx_msgs_[i].msg_hdr.msg_control = rx_cmsg_.data() + i * kCmsgSpace;
          rx_msgs_[i].msg_hdr.msg_controllen = kCmsgSpace;
        }
      }
      int r;
      do {
        r = recvmmsg(fd_, rx_msgs_.data(), batch_, MSG_DONTWAIT, nullptr);
      } while (r < 0 && errno == EINTR);
      if (r < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          stats_.rxErrors++;
          stats_.lastErrno = errno;
        } else {
          *drained = true;
        }
        return 0;
      }
      for (int i = 0; i < r; i++) {
        if (rx_msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) {
          stats_.rxTruncated++;
          continue;
        }
        if (auxdata_ && !AuxOk(rx_msgs_[i].msg_hdr)) continue;
        off_[n] = static_cast<uint32_t>(i * frame_size_);
        len_[n] = rx_msgs_[i].msg_len;
        stats_.rxBytes += rx_msgs_[i].msg_len;
        n++;
      }
      return n;
    }
#ifdef __linux__
    if (tap_uring_.active()) return RecvBatchUring(drained);
#endif
    // TAP: one read() per frame (tun has no recvmmsg), up to a batch. One byte more than a slot is
    // asked for (it lands in the next slot, read later, or the area's spare bytes), since tun
    // returns at most what was asked: a read that fills more than the slot is a longer frame.
    for (size_t i = 0; i < batch_; i++) {
      ssize_t r = read(fd_, rx_data_ + i * frame_size_, frame_size_ + 1);
      if (r < 0) {
        if (errno == EINTR) {
          i--;
          continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          stats_.rxErrors++;
          stats_.lastErrno = errno;
        } else {
          *drained = true;
        }
        break;
      }
      if (r == 0) break;
      if (static_cast<size_t>(r) > frame_size_) {
        stats_.rxTruncated++;
        continue;  // its slot stays unused in this batch
      }
      off_[n] = static_cast<uint32_t>(i * frame_size_);
      len_[n] = static_cast<uint32_t>(r);
      stats_.rxBytes += static_cast<double>(r);
      n++;
    }
    return n;
  }

#ifdef __linux__
  // The TAP's frames through io_uring: rounds of reads into consecutive slots until the TAP answers
  // EAGAIN or the batch is full. A round asks for twice what the last one got (at least
  // kMinTapReads): one read per frame plus a few that find the TAP empty, in one system call.
  size_t RecvBatchUring(bool* drained) {
    size_t n = 0;
    size_t slot = 0;
    while (slot < batch_) {
      size_t want = tap_rx_hint_ * 2;
      if (want < kMinTapReads) want = kMinTapReads;
      if (want > batch_ - slot) want = batch_ - slot;
      if (want > tap_uring_.capacity()) want = tap_uring_.capacity();
      // As in the read() loop, one byte more than a slot: the reads run one after another, in
      // slot order, so a stray byte in the next slot is overwritten by that slot's own read.
      if (!tap_uring_.Read(fd_, rx_data_ + slot * frame_size_, frame_size_, frame_size_ + 1, want, uring_res_.data())) {
        stats_.ioUringFallbacks++;
        return n;  // the next batch uses read(); frames of this round, if any, are still in the TAP or lost with the ring
      }
      stats_.ioUringRxCalls++;
      size_t got = 0;
      bool empty = false;
      bool unsupported = false;
      for (size_t i = 0; i < want; i++) {
        int32_t r = uring_res_[i];
        if (r < 0) {
          if (r == -EOPNOTSUPP) {
            unsupported = true;  // this fd refuses RWF_NOWAIT: nothing was read into the slot
          } else if (r == -EAGAIN || r == -EWOULDBLOCK) {
            empty = true;
          } else if (r != -EINTR) {
            stats_.rxErrors++;
            stats_.lastErrno = -r;
            empty = true;  // as the read() loop: stop at an error, poll again
          }
          continue;
        }
        if (r == 0) {
          empty = true;
          continue;
        }
        if (static_cast<size_t>(r) > frame_size_) {
          stats_.rxTruncated++;
          continue;
        }
        off_[n] = static_cast<uint32_t>((slot + i) * frame_size_);
        len_[n] = static_cast<uint32_t>(r);
        stats_.rxBytes += static_cast<double>(r);
        n++;
        got++;
      }
      tap_rx_hint_ = got;
      slot += want;
      if (unsupported) {
        // A kernel (or fd) without RWF_NOWAIT for it: the read() loop from now on. What is still
        // queued makes the fd readable again.
        tap_uring_.Close();
        stats_.ioUringFallbacks++;
        break;
      }
      if (empty) {
        *drained = true;
        break;
      }
    }
    return n;
  }

  // A TAP's send through io_uring, in chunks of the ring's size; a prefix is accepted, as with
  // write(): the writes are linked, so the first failure cancels the rest (-ECANCELED, not counted
  // again). Returns how many were written. *broken if the ring failed: the chunk then in flight is
  // not counted as accepted (whether it went out is unknown), nor is anything after it.
  // *unsupported if the fd refuses RWF_NOWAIT (EOPNOTSUPP: nothing from the returned count on was
  // written): the ring is closed and the caller writes the rest with write().
  size_t TransmitUring(size_t count, bool* broken, bool* unsupported) {
    size_t done = 0;
    while (done < count) {
      size_t chunk = count - done;
      if (chunk > tap_uring_.capacity()) chunk = tap_uring_.capacity();
      if (!tap_uring_.Write(fd_, &tx_iov_[done], chunk, uring_res_.data())) {
        // Which of this chunk were written is unknown: none is counted as accepted.
        stats_.ioUringFallbacks++;
        *broken = true;
        return done;
      }
      stats_.ioUringTxCalls++;
      size_t ok = 0;
      for (; ok < chunk; ok++) {
        int32_t r = uring_res_[ok];
        if (r < 0) {
          if (r == -EOPNOTSUPP) {
            tap_uring_.Close();
            stats_.ioUringFallbacks++;
            *unsupported = true;
          } else {
            CountTxError(-r);
          }
          break;
        }
        stats_.txBytes += static_cast<double>(r);
      }
      done += ok;
      if (ok < chunk) break;
    }
    return done;
  }
#endif

  void HandleReadable() {
    stats_.rxWakeups++;
    if (is_stream_) {
      HandleStreamReadable();
      return;
    }
    for (uint32_t round = 0; round < max_batches_; round++) {
      if (closed_ || !reading_) return;
      bool drained = false;
      size_t n = ReceiveBatch(&drained);
      if (n == 0) return;  // drained (level-triggered poll re-arms if more arrives)
      stats_.rxFrames += static_cast<double>(n);
      stats_.rxBatches++;
      napi_value count = Napi::Number::New(env_, static_cast<double>(n));
      CallJs(on_frames_, {count});
#ifdef __linux__
      // A ring shows the next frame without a system call: wait for it a little rather than
      // sleep in epoll (under traffic it is microseconds away; a sleeping thread costs a wake-up,
      // in a VM a vCPU halt and wake).
      if (closed_ || !reading_) return;  // the callback closed (the ring is unmapped) or paused the port
      if (n < batch_ && ring_.active() && !SpinForRing()) return;
      if (n < batch_ && is_socket_ && !ring_.active()) return;  // recvmmsg got fewer than asked: queue empty
      if (!is_socket_ && drained) return;  // the TAP answered EAGAIN: nothing more queued
#else
      if (n < batch_ && is_socket_) return;  // recvmmsg got fewer than asked: queue empty
#endif
    }
    // More may be queued: the loop polls again next iteration (fair to other handles).
  }

  // Stream framing: read() into the area after the kept partial frame, hand every complete frame
  // to JS in place (batches of at most batch_), keep the partial tail for the next read. Frames
  // still in the area from before a pause() are delivered first.
  void HandleStreamReadable() {
    if (!ParseStream()) return;
    for (uint32_t round = 0; round < max_batches_; round++) {
      if (closed_ || !reading_) return;
      size_t room = area_len_ - rx_fill_;
      ssize_t r;
      do {
        r = read(fd_, rx_data_ + rx_fill_, room);
      } while (r < 0 && errno == EINTR);
      if (r < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          stats_.rxErrors++;
          stats_.lastErrno = errno;
          StopStream();
        }
        return;
      }
      if (r == 0) {
        // The peer closed (QEMU exited): a level-triggered poll would report EOF forever.
        stats_.rxEof++;
        if (rx_fill_ > 0 || rx_skip_ > 0) stats_.rxTruncated++;  // a frame cut off by the close
        rx_fill_ = 0;
        rx_pos_ = 0;
        rx_skip_ = 0;
        reading_ = false;
        UpdatePoll();
        return;
      }
      rx_fill_ += static_cast<size_t>(r);
      if (!ParseStream()) return;
      if (static_cast<size_t>(r) < room) return;  // read less than asked: drained
    }
  }

  // Delivers the complete frames in the area from rx_pos_, then moves the partial tail (at most
  // one prefix + stream_max_ bytes) to the front. False if delivery stopped: the callback paused
  // or closed the port (the area is left untouched, rx_pos_ marks what is not delivered yet), or
  // the stream was shut down for a bad prefix.
  bool ParseStream() {
    size_t pos = rx_pos_, n = 0;
    bool bad = false;
    while (true) {
      if (rx_skip_ > 0) {  // the rest of an oversized frame
        size_t k = rx_fill_ - pos < rx_skip_ ? rx_fill_ - pos : rx_skip_;
        pos += k;
        rx_skip_ -= k;
        if (rx_skip_ > 0) break;
      }
      if (rx_fill_ - pos < 4) break;
      const uint8_t* h = rx_data_ + pos;
      uint32_t len = (uint32_t(h[0]) << 24) | (uint32_t(h[1]) << 16) | (uint32_t(h[2]) << 8) | uint32_t(h[3]);
      if (len > kStreamMaxPrefix) {
        bad = true;
        break;
      }
      if (len > stream_max_) {
        stats_.rxTruncated++;
        pos += 4;
        rx_skip_ = len;
        continue;
      }
      if (rx_fill_ - pos - 4 < len) break;  // partial frame: wait for more
      if (n == batch_) {
        rx_pos_ = pos;
        if (!DeliverStream(n)) return false;
        n = 0;
      }
      off_[n] = static_cast<uint32_t>(pos + 4);
      len_[n] = len;
      stats_.rxBytes += len;
      n++;
      pos += 4 + len;
    }
    rx_pos_ = pos;
    if (n > 0 && !DeliverStream(n)) return false;
    if (bad) {
      stats_.rxBadLength++;
      StopStream();
      return false;
    }
    if (pos > 0 && pos < rx_fill_) memmove(rx_data_, rx_data_ + pos, rx_fill_ - pos);
    rx_fill_ -= pos;
    rx_pos_ = 0;
    return true;
  }

  // Frames held here with nothing left in the fd to make it readable — a stream's area after a
  // pause(), or what a receive ring's set-up read from the socket's queue — are delivered by
  // start() from a zero-delay timer (not inside the caller's JS frame).
  bool HoldsFrames() const {
#ifdef __linux__
    if (early_next_ < early_.size()) return true;
#endif
    return is_stream_ && rx_pos_ < rx_fill_;
  }

  void ScheduleResume() {
    if (closed_ || !HoldsFrames()) return;
    if (resume_ == nullptr) {
      uv_loop_t* loop = nullptr;
      if (napi_get_uv_event_loop(env_, &loop) != napi_ok || loop == nullptr) return;
      resume_ = static_cast<uv_timer_t*>(malloc(sizeof(uv_timer_t)));  // freed by free() via uv_close
      if (resume_ == nullptr) return;
      uv_timer_init(loop, resume_);
      resume_->data = this;
    }
    uv_timer_start(resume_, &FramePort::OnResume, 0, 0);
  }

  static void OnResume(uv_timer_t* t) {
    FramePort* self = static_cast<FramePort*>(t->data);
    if (self == nullptr || self->closed_ || !self->reading_) return;
    Napi::HandleScope scope(self->env_);
    if (self->is_stream_) self->HandleStreamReadable();
    else self->HandleReadable();
  }

  // Calls JS with n frames of the area; false if the callback closed or stopped the port.
  bool DeliverStream(size_t n) {
    stats_.rxFrames += static_cast<double>(n);
    stats_.rxBatches++;
    napi_value count = Napi::Number::New(env_, static_cast<double>(n));
    CallJs(on_frames_, {count});
    return !closed_ && reading_;
  }

  // A stream that cannot be trusted or used any more: shut down both ways (the peer sees EOF),
  // stop reading, drop any kept tail. Later sends fail with EPIPE (counted as txErrors/txDrops).
  void StopStream() {
    if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
    reading_ = false;
    rx_fill_ = 0;
    rx_pos_ = 0;
    rx_skip_ = 0;
    if (!tx_pend_.empty()) {
      stats_.txDrops++;
      tx_pend_.clear();
      tx_pend_off_ = 0;
    }
    UpdatePoll();
  }

  // Writes the kept tail of a partly sent frame; true when nothing is left.
  bool FlushPending() {
    while (tx_pend_off_ < tx_pend_.size()) {
      ssize_t r = send(fd_, tx_pend_.data() + tx_pend_off_, tx_pend_.size() - tx_pend_off_, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r > 0) {
        tx_pend_off_ += static_cast<size_t>(r);
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
      // The connection is gone: the frame is lost (it was counted as sent when it was started).
      stats_.txErrors++;
      stats_.txDrops++;
      stats_.lastErrno = r < 0 ? errno : EPIPE;
      tx_pend_.clear();
      tx_pend_off_ = 0;
      return true;
    }
    tx_pend_.clear();
    tx_pend_off_ = 0;
    return true;
  }

  // Stream framing send of iovecs [0, count) in tx_iov_: one sendmsg per up to 512 frames.
  size_t TransmitStream(size_t count) {
    size_t done = 0;
    if (!tx_pend_.empty() && !FlushPending()) {
      stats_.eagain++;  // still writing an earlier frame's tail: this batch is dropped whole
      stats_.lastErrno = EAGAIN;
      return 0;
    }
    if (tx_hdr_.size() < count) tx_hdr_.resize(count);
    if (tx_siov_.size() < 2 * count) tx_siov_.resize(2 * count);
    for (size_t i = 0; i < count; i++) {
      uint32_t l = static_cast<uint32_t>(tx_iov_[i].iov_len);
      uint8_t* h = tx_hdr_[i].b;
      h[0] = uint8_t(l >> 24);
      h[1] = uint8_t(l >> 16);
      h[2] = uint8_t(l >> 8);
      h[3] = uint8_t(l);
      tx_siov_[2 * i] = {h, 4};
      tx_siov_[2 * i + 1] = tx_iov_[i];
    }
    while (done < count) {
      size_t chunk = count - done;
      if (chunk > 512) chunk = 512;  // 2 iovecs per frame, UIO_MAXIOV = 1024
      msghdr m;
      memset(&m, 0, sizeof m);
      m.msg_iov = &tx_siov_[2 * done];
      m.msg_iovlen = 2 * chunk;
      ssize_t r = sendmsg(fd_, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r < 0) {
        if (errno == EINTR) continue;
        CountTxError(errno);
        break;
      }
      stats_.txBatches++;
      // Walk the frames the kernel took whole; a frame cut in the middle has its rest kept.
      size_t left = static_cast<size_t>(r);
      size_t i = done, end = done + chunk;
      for (; i < end && left >= 4 + tx_iov_[i].iov_len; i++) {
        left -= 4 + tx_iov_[i].iov_len;
        stats_.txBytes += static_cast<double>(tx_iov_[i].iov_len);
      }
      if (i < end && left > 0) {
        size_t flen = tx_iov_[i].iov_len;
        tx_pend_.resize(4 + flen);
        memcpy(tx_pend_.data(), tx_hdr_[i].b, 4);
        memcpy(tx_pend_.data() + 4, tx_iov_[i].iov_base, flen);
        tx_pend_off_ = left;
        stats_.txBytes += static_cast<double>(flen);
        stats_.txPartial++;
        i++;
        done = i;
        // Try the tail at once (the socket may have room again); else when writable.
        if (!FlushPending()) {
          CountTxError(EAGAIN);
          UpdatePoll();
          break;
        }
        continue;
      }
      done = i;
      if (i < end) {  // stopped exactly at a frame boundary: the socket is full
        CountTxError(EAGAIN);
        break;
      }
    }
    return done;
  }

  // AF_PACKET aux data: false (frame dropped, counted) for a frame whose checksum is still to be
  // filled in (CHECKSUM_PARTIAL from a device with tx offloads on) or whose VLAN tag the device
  // moved into metadata: forwarded as plain bytes, the guest would see a bad checksum or lose the tag.
  bool AuxOk(const msghdr& h) {
    for (cmsghdr* c = CMSG_FIRSTHDR(const_cast<msghdr*>(&h)); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
      if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
      tpacket_auxdata aux;
      memcpy(&aux, CMSG_DATA(c), sizeof aux);
      // With PACKET_VNET_HDR the frame's virtio-net header says where its checksum goes: fine.
      if ((aux.tp_status & TP_STATUS_CSUMNOTREADY) && !vnet_hdr_) {
        stats_.rxCsumPartial++;
        return false;
      }
      if (aux.tp_status & TP_STATUS_VLAN_VALID) {
        stats_.rxVlanStripped++;
        return false;
      }
    }
    return true;
  }

  // Adds the kernel's receive-queue drops since the last read (reading resets them).
  void PollPacketStats() {
    if (!is_packet_ || fd_ < 0) return;
    tpacket_stats st;
    socklen_t len = sizeof st;
    if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) stats_.rxQueueDrops += st.tp_drops;
  }

  // Sends iovecs [0, count) already in tx_iov_; returns how many were accepted.
  size_t Transmit(size_t count) {
    stats_.txCalls++;
    size_t done = 0;
    if (is_stream_) {
      done = TransmitStream(count);
    } else if (is_socket_) {
      if (tx_msgs_.size() < count) tx_msgs_.resize(count);
      for (size_t i = 0; i < count; i++) {
        memset(&tx_msgs_[i], 0, sizeof tx_msgs_[i]);
        tx_msgs_[i].msg_hdr.msg_iov = &tx_iov_[i];
        tx_msgs_[i].msg_hdr.msg_iovlen = 1;
      }
      while (done < count) {
        size_t chunk = count - done;
        if (chunk > 1024) chunk = 1024;  // UIO_MAXIOV limits vlen
        int r = sendmmsg(fd_, &tx_msgs_[done], static_cast<unsigned>(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0) {
          stats_.txBatches++;
          for (size_t i = done; i < done + static_cast<size_t>(r); i++) stats_.txBytes += tx_msgs_[i].msg_len;
          done += static_cast<size_t>(r);
          continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (!CountTxError(r < 0 ? errno : EAGAIN)) break;
      }
    } else {
      bool via_uring = false;
#ifdef __linux__
      if (tap_uring_.active()) {
        // After a ring failure TransmitUring stops there (the rest of the batch is not accepted)
        // and the ring is closed: the next send uses write(). An fd that refuses RWF_NOWAIT
        // (EOPNOTSUPP, nothing written from `done` on) gets the rest through write() now.
        bool broken = false, unsupported = false;
        done = TransmitUring(count, &broken, &unsupported);
        via_uring = !unsupported;
      }
#endif
      while (!via_uring && done < count) {
        ssize_t r = write(fd_, tx_iov_[done].iov_base, tx_iov_[done].iov_len);
        if (r >= 0) {
          stats_.txBytes += static_cast<double>(r);
          done++;
          continue;
        }
        if (errno == EINTR) continue;
        if (!CountTxError(errno)) break;
      }
      if (done > 0) stats_.txBatches++;
    }
    stats_.txFrames += static_cast<double>(done);
    stats_.txDrops += static_cast<double>(count - done);
    return done;
  }

  // Sender-thread mode: copies iovecs [0, count) in tx_iov_ into the queue.
  size_t Queue(size_t count) {
    stats_.txCalls++;
    return sq_->Enqueue(tx_iov_.data(), count);
  }

  // Counts a send error; returns false (stop the batch) — kept as a function for one policy.
  bool CountTxError(int err) {
    if (err == EAGAIN || err == EWOULDBLOCK) stats_.eagain++;
    else if (err == ENOBUFS) stats_.enobufs++;
    else stats_.txErrors++;
    stats_.lastErrno = err;
    return false;
  }

  bool CheckOpen(Napi::Env env) {
    if (closed_ || fd_ < 0) {
      Napi::Error e = Napi::Error::New(env, "FramePort is closed");
      e.Set("code", Napi::String::New(env, "ERR_FRAMEPORT_CLOSED"));
      e.ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!CheckOpen(env)) return env.Undefined();
    if (info.Length() > 0 && info[0].IsFunction()) on_frames_ = Napi::Persistent(info[0].As<Napi::Function>());
    if (on_frames_.IsEmpty()) {
      Napi::TypeError::New(env, "start(callback)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    reading_ = true;
    UpdatePoll();
    ScheduleResume();
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    reading_ = false;
    UpdatePoll();
    return info.Env().Undefined();
  }

  // send(frames: Uint8Array[]) -> accepted
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!CheckOpen(env)) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsArray()) {
      Napi::TypeError::New(env, "send(frames: Uint8Array[])").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array arr = info[0].As<Napi::Array>();
    uint32_t count = arr.Length();
    if (tx_iov_.size() < count) tx_iov_.resize(count);
    for (uint32_t i = 0; i < count; i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        Napi::TypeError::New(env, "send: frames[" + std::to_string(i) + "] is not a Uint8Array/Buffer")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
      Napi::Uint8Array u = v.As<Napi::Uint8Array>();
      tx_iov_[i].iov_base = u.Data();
      tx_iov_[i].iov_len = u.ByteLength();
    }
    return Napi::Number::New(env, static_cast<double>(sq_ ? Queue(count) : Transmit(count)));
  }

  // sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count) -> accepted
  Napi::Value SendBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!CheckOpen(env)) return env.Undefined();
    if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
        !info[3].IsNumber()) {
      Napi::TypeError::New(env, "sendBatch(buf, offsets, lengths, count)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
    Napi::Uint32Array offs = info[1].As<Napi::Uint32Array>();
    Napi::Uint32Array lens = info[2].As<Napi::Uint32Array>();
    double c = info[3].As<Napi::Number>().DoubleValue();
    if (!(c >= 0) || c > offs.ElementLength() || c > lens.ElementLength()) {
      Napi::RangeError::New(env, "sendBatch: count exceeds offsets/lengths").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    size_t count = static_cast<size_t>(c);
    uint8_t* base = buf.Data();
    size_t size = buf.ByteLength();
    const uint32_t* o = offs.Data();
    const uint32_t* l = lens.Data();
    if (tx_iov_.size() < count) tx_iov_.resize(count);
    for (size_t i = 0; i < count; i++) {
      if (static_cast<uint64_t>(o[i]) + l[i] > size) {
        Napi::RangeError::New(env, "sendBatch: frame " + std::to_string(i) + " is outside the buffer")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
      tx_iov_[i].iov_base = base + o[i];
      tx_iov_[i].iov_len = l[i];
    }
    return Napi::Number::New(env, static_cast<double>(sq_ ? Queue(count) : Transmit(count)));
  }

  // waitWritable(cb): one-shot; cb() when the fd is writable again (after EAGAIN).
  Napi::Value WaitWritable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!CheckOpen(env)) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "waitWritable(callback)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    on_writable_ = Napi::Persistent(info[0].As<Napi::Function>());
    want_writable_ = true;
    if (sq_) {
      // Room now: the callback still runs from the loop, never inside this call.
      uv_ref(reinterpret_cast<uv_handle_t*>(room_));
      if (sq_->WaitForRoom()) uv_async_send(room_);
    }
    UpdatePoll();
    return env.Undefined();
  }

  Napi::Value GetStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    auto set = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
    set("rxFrames", stats_.rxFrames);
    set("rxBytes", stats_.rxBytes);
    set("rxBatches", stats_.rxBatches);
    set("rxWakeups", stats_.rxWakeups);
    set("rxTruncated", stats_.rxTruncated);
    set("rxErrors", stats_.rxErrors);
    // Sender-thread mode: the send counters are the thread's (frames it wrote; drops include
    // what the queue refused, txQueueFull).
    SendQueue::Stats q = sq_ ? sq_->Snapshot() : SendQueue::Stats{};
    set("txFrames", sq_ ? q.txFrames : stats_.txFrames);
    set("txBytes", sq_ ? q.txBytes : stats_.txBytes);
    set("txBatches", sq_ ? q.txBatches : stats_.txBatches);
    set("txCalls", stats_.txCalls);
    set("txDrops", sq_ ? q.txDrops : stats_.txDrops);
    set("txErrors", sq_ ? q.txErrors : stats_.txErrors);
    set("eagain", sq_ ? q.eagain : stats_.eagain);
    set("enobufs", sq_ ? q.enobufs : stats_.enobufs);
    set("txQueueFull", q.queueFull);
    set("txQueuedFrames", q.queuedFrames);
    set("txQueuedBytes", q.queuedBytes);
    PollPacketStats();
    set("rxQueueDrops", stats_.rxQueueDrops);
    set("rxCsumPartial", stats_.rxCsumPartial);
    set("rxVlanStripped", stats_.rxVlanStripped);
#ifdef __linux__
    set("rxRingSlots", static_cast<double>(ring_.frames()));
    set("tapIoUring", tap_uring_.active() ? 1 : 0);
#else
    set("rxRingSlots", 0);
    set("tapIoUring", 0);
#endif
    set("ioUringFallbacks", stats_.ioUringFallbacks);
    set("ioUringRxCalls", stats_.ioUringRxCalls);
    set("ioUringTxCalls", stats_.ioUringTxCalls);
    set("rxBadLength", stats_.rxBadLength);
    set("rxEof", stats_.rxEof);
    set("txPartial", stats_.txPartial);
    set("txPendingBytes", static_cast<double>(tx_pend_.size() - tx_pend_off_));
    int last = q.lastErrno != 0 ? q.lastErrno : stats_.lastErrno;
    o.Set("lastError", last != 0 ? Napi::Value(Napi::String::New(env, ErrnoName(last))) : env.Null());
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) return env.Undefined();
    if (hook_) {
      napi_remove_env_cleanup_hook(env_, &FramePort::CleanupHook, this);
      hook_ = false;
    }
    Shutdown();
    on_writable_.Reset();
    if (self_ref_) {
      self_ref_ = false;
      Unref();
    }
    return env.Undefined();
  }

  Napi::Value RefHandle(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }
  Napi::Value HasSendThread(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), sq_ != nullptr); }
  Napi::Value Kind(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), is_packet_ ? "packet" : is_stream_ ? "stream" : is_socket_ ? "dgram" : "tap");
  }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), closed_); }

  Napi::Env env_{nullptr};
  int fd_ = -1;
  bool is_socket_ = false;
  bool is_packet_ = false;  // AF_PACKET SOCK_RAW (the veth uplink)
  bool auxdata_ = false;    // PACKET_AUXDATA is on: every received frame carries tpacket_auxdata
  bool vnet_hdr_ = false;   // PACKET_VNET_HDR is on: every frame starts with a virtio_net_hdr
  bool is_stream_ = false;  // AF_UNIX SOCK_STREAM with 4-byte length prefixes (QEMU -netdev stream)
  // QEMU's own receive buffer (NET_BUFSIZE = 4096 + 65536): its framing never announces more.
  static constexpr uint32_t kStreamMaxPrefix = 4096 + 65536;
  size_t area_len_ = 0;     // stream: bytes of the receive area
  size_t stream_max_ = 0;   // stream: the largest frame delivered (min(frameSize, area - 4))
  size_t rx_fill_ = 0;      // stream: bytes in the area (a partial frame kept from the last read)
  size_t rx_pos_ = 0;       // stream: where the frames not delivered yet start (after a pause)
  uv_timer_t* resume_ = nullptr;  // stream: delivers frames left in the area when reading resumes
  size_t rx_skip_ = 0;      // stream: bytes of an oversized frame still to discard
  struct Hdr {
    uint8_t b[4];
  };
  std::vector<Hdr> tx_hdr_;
  std::vector<iovec> tx_siov_;
  std::vector<uint8_t> tx_pend_;  // stream: the rest of a partly written frame (prefix included)
  size_t tx_pend_off_ = 0;
  static constexpr size_t kCmsgSpace = CMSG_SPACE(sizeof(tpacket_auxdata));
  bool owns_fd_ = false;
  bool closed_ = false;
  bool reading_ = false;
  bool want_writable_ = false;
  bool self_ref_ = false;
  bool hook_ = false;
  uint32_t max_batches_ = 16;
  size_t frame_size_ = 0;
  size_t batch_ = 0;
  uv_poll_t* poll_ = nullptr;
  uv_async_t* room_ = nullptr;       // sender-thread mode: "the queue has room" from the thread
  std::unique_ptr<SendQueue> sq_;   // sender-thread mode (sendQueueBytes > 0)
#ifdef __linux__
  PacketRing ring_;                 // AF_PACKET receive ring (rxRingFrames > 0)
  std::vector<std::vector<uint8_t>> early_;  // frames queued before the ring, delivered first
  size_t early_next_ = 0, early_bytes_ = 0;
  static constexpr size_t kEarlyMax = 64u << 20;
  // 0 by default: on two cores the spin took CPU from the threads that feed the ring (host -> VM
  // on the veth, 11 interleaved runs: 4-5 % more frames/s without it; issue 20 seventh pass), as
  // the sender thread's did. Kept as a knob for measurements.
  const long kRingSpinNs = getenv("FLEET_RING_SPIN_NS") ? atol(getenv("FLEET_RING_SPIN_NS")) : 0;
  TapUring tap_uring_;              // TAP: batched read()/write() through io_uring (tap_uring.h)
  std::vector<int32_t> uring_res_;  // TAP: each request's result, by slot
  size_t tap_rx_hint_ = 0;          // TAP: frames the last io_uring read round got
  static constexpr size_t kMinTapReads = 4;
  static constexpr size_t kTapUringMin = 64;
#endif
  std::unique_ptr<Napi::AsyncContext> async_;
  Napi::FunctionReference on_frames_;
  Napi::FunctionReference on_writable_;
  Napi::Reference<Napi::ArrayBuffer> rx_area_;
  Napi::Reference<Napi::Uint32Array> rx_offs_;
  Napi::Reference<Napi::Uint32Array> rx_lens_;
  uint8_t* rx_data_ = nullptr;
  uint32_t* off_ = nullptr;
  uint32_t* len_ = nullptr;
  std::vector<mmsghdr> rx_msgs_;
  std::vector<iovec> rx_iov_;
  std::vector<uint8_t> rx_cmsg_;
  std::vector<mmsghdr> tx_msgs_;
  std::vector<iovec> tx_iov_;
  Stats stats_;
};

}  // namespace

#ifndef __APPLE__  // SOCK_CLOEXEC/SOCK_NONBLOCK and SO_SNDBUFFORCE are Linux's; this file is also built for macOS
// socketpairStream(sndbuf) -> [fd0, fd1]: AF_UNIX SOCK_STREAM, close-on-exec, non-blocking, for
// QEMU's `-netdev stream` (stream framing above). Only SO_SNDBUF matters on a unix stream socket
// (the sender's queued bytes are charged to it); SO_SNDBUFFORCE when privileged.
Napi::Value SocketpairStream(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sndbuf = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1 << 20;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
    ErrnoError(env, errno, "socketpair").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  for (int fd : sv) {
    if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0 &&
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) != 0) {
      int e = errno;
      close(sv[0]);
      close(sv[1]);
      ErrnoError(env, e, "setsockopt SO_SNDBUF").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(uint32_t(0), Napi::Number::New(env, sv[0]));
  out.Set(uint32_t(1), Napi::Number::New(env, sv[1]));
  return out;
}

#endif

#ifdef __linux__
// tapIoUringProbe() -> 0 or errno: whether a TAP port made now in this process gets its io_uring.
Napi::Value TapIoUringProbe(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), TapUring::Probe());
}
#endif

void InitFramePort(Napi::Env env, Napi::Object exports) {
  exports.Set("FramePort", FramePort::Init(env));
#ifdef __linux__
  exports.Set("tapIoUringProbe", Napi::Function::New(env, TapIoUringProbe, "tapIoUringProbe"));
#endif
#ifndef __APPLE__
  exports.Set("socketpairStream", Napi::Function::New(env, SocketpairStream, "socketpairStream"));
#endif
}

}  // namespace nvz
