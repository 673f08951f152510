// @fleet/native-vz, macOS half: a vmnet.framework interface (shared or host mode) as the uplink of
// a VM host process. vmnet_start_interface needs root (or com.apple.vm.networking, which Apple
// grants only to approved products): the VM host process starts it as root (docs/macos.md).
// macOS 26 documents a newer API (vmnet_network_create, vmnet_interface_start_with_network,
// VZVmnetNetworkDeviceAttachment) that is reported (lima, Code-Hex/vz; not verified here, and
// Tart still asks for root there) to work without root in shared and host mode. Not used here.
//
// Threading: the interface's callbacks (start completion, packets-available events, stop) run on
// a private serial queue and reach JS through one thread-safe function. Frame I/O is synchronous
// on the JS thread: vmnet_read into the caller's fixed receive area (the FramePort contract:
// offsets/lengths, valid until the next read) and vmnet_write straight from the caller's buffer,
// at most 200 packets and 256 KB per call (vmnet's documented limits: "Each read or write call
// allows up to 200 packets to be read or written for a maximum of 256KB").
//
// Without root, vmnet_start_interface completes with the generic VMNET_FAILURE (1001), not
// VMNET_INVALID_ACCESS (reported by xhyve, socket_vmnet and others), so the error event carries the
// euid the interface was started with and src/vz.ts gives the "needs root" hint from that.
// NOT compiled or run on a Mac by the authors yet (docs/macos.md).
#import <Foundation/Foundation.h>
#include <vmnet/vmnet.h>

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "vz_darwin.h"

namespace nvz {
namespace {

constexpr uint32_t kVmnetMaxPackets = 200;
constexpr size_t kVmnetMaxBytesPerCall = 256 * 1024;

// Names of the vmnet_return_t values. VMNET_SHARING_SERVICE_BUSY (1009) and VMNET_NOT_AUTHORIZED
// (1010) are compared by number: they are newer than the 10.10 set and the deployment target,
// and their names need not exist in every SDK's header. Anything else is reported by number.
std::string StatusName(vmnet_return_t s) {
  const unsigned n = static_cast<unsigned>(s);
  if (n == 1009) return "VMNET_SHARING_SERVICE_BUSY";
  if (n == 1010) return "VMNET_NOT_AUTHORIZED";
  switch (s) {
    case VMNET_SUCCESS: return "VMNET_SUCCESS";
    case VMNET_FAILURE: return "VMNET_FAILURE";
    case VMNET_MEM_FAILURE: return "VMNET_MEM_FAILURE";
    case VMNET_INVALID_ARGUMENT: return "VMNET_INVALID_ARGUMENT";
    case VMNET_SETUP_INCOMPLETE: return "VMNET_SETUP_INCOMPLETE";
    case VMNET_INVALID_ACCESS: return "VMNET_INVALID_ACCESS";
    case VMNET_PACKET_TOO_BIG: return "VMNET_PACKET_TOO_BIG";
    case VMNET_BUFFER_EXHAUSTED: return "VMNET_BUFFER_EXHAUSTED";
    case VMNET_TOO_MANY_PACKETS: return "VMNET_TOO_MANY_PACKETS";
    default: return "vmnet_return_t " + std::to_string(n);
  }
}

struct NetEvent {
  std::string type;  // started | error | readable | stopped
  std::string status;
  double code = 0;
  double euid = -1;  // error: the effective uid vmnet_start_interface ran with
  std::string mac, start, end, mask;
  double mtu = 0, maxPacketSize = 0;
};

// State shared with blocks on the interface queue.
struct Shared {
  Napi::ThreadSafeFunction tsfn;
  std::atomic<bool> released{false};
  std::atomic<bool> readablePending{false};
  // Touched only on the queue:
  interface_ref iface = nullptr;
  bool started = false;
  bool failed = false;  // the start completion reported an error: nothing to stop
  bool callbackSet = false;

  void Post(NetEvent* e) {
    if (released.load()) {
      delete e;
      return;
    }
    napi_status s = tsfn.NonBlockingCall(e, [](Napi::Env env, Napi::Function cb, NetEvent* ev) {
      if (env != nullptr && !cb.IsEmpty()) {
        Napi::HandleScope scope(env);
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", ev->type);
        if (ev->type == "error") {
          o.Set("status", ev->status);
          o.Set("code", ev->code);
          if (ev->euid >= 0) o.Set("euid", ev->euid);
        } else if (ev->type == "started") {
          Napi::Object i = Napi::Object::New(env);
          i.Set("mac", ev->mac);
          i.Set("mtu", ev->mtu);
          i.Set("maxPacketSize", ev->maxPacketSize);
          if (!ev->start.empty()) i.Set("startAddress", ev->start);
          if (!ev->end.empty()) i.Set("endAddress", ev->end);
          if (!ev->mask.empty()) i.Set("subnetMask", ev->mask);
          o.Set("info", i);
        }
        cb.Call({o});
      }
      delete ev;
    });
    if (s != napi_ok) delete e;
  }
  // On the queue, once both the interface_ref and the start completion are known. `owner` is
  // this object's own shared_ptr (not named `self`: in Objective-C++ that reads as the receiver).
  // It is copied into a local first: a block captures a C++ reference variable as a reference,
  // and the shared_ptr behind `owner` belongs to a block that is gone once it has run, so the
  // event block must hold its own copy.
  void ArmEvents(dispatch_queue_t queue, const std::shared_ptr<Shared>& owner) {
    if (callbackSet || !started || iface == nullptr) return;
    callbackSet = true;
    std::shared_ptr<Shared> keep = owner;
    vmnet_interface_set_event_callback(iface, VMNET_INTERFACE_PACKETS_AVAILABLE, queue,
                                       ^(interface_event_t event, xpc_object_t params) {
                                         // Coalesce: one 'readable' in flight; JS drains with read().
                                         if (!keep->readablePending.exchange(true)) {
                                           auto* e = new NetEvent();
                                           e->type = "readable";
                                           keep->Post(e);
                                         }
                                       });
  }
};

std::string DictString(xpc_object_t d, const char* key) {
  const char* v = xpc_dictionary_get_string(d, key);
  return v ? std::string(v) : std::string();
}

class VmnetInterface : public Napi::ObjectWrap<VmnetInterface> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "VmnetInterface",
                       {
                           InstanceMethod("read", &VmnetInterface::Read),
                           InstanceMethod("write", &VmnetInterface::Write),
                           InstanceMethod("stats", &VmnetInterface::Stats),
                           InstanceMethod("stop", &VmnetInterface::Stop),
                           InstanceMethod("ref", &VmnetInterface::RefEvents),
                           InstanceMethod("unref", &VmnetInterface::UnrefEvents),
                       });
  }

  // new VmnetInterface(opts, area, offsets, lengths, frameSize, batch, onEvent)
  explicit VmnetInterface(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VmnetInterface>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 7 || !info[0].IsObject() || !info[1].IsArrayBuffer() || !info[2].IsTypedArray() ||
        !info[3].IsTypedArray() || !info[4].IsNumber() || !info[5].IsNumber() || !info[6].IsFunction()) {
      Napi::TypeError::New(env, "VmnetInterface(opts, area, offsets, lengths, frameSize, batch, onEvent)").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object opts = info[0].As<Napi::Object>();
    Napi::ArrayBuffer area = info[1].As<Napi::ArrayBuffer>();
    Napi::Uint32Array offs = info[2].As<Napi::Uint32Array>();
    Napi::Uint32Array lens = info[3].As<Napi::Uint32Array>();
    frame_size_ = info[4].As<Napi::Number>().Uint32Value();
    batch_ = info[5].As<Napi::Number>().Uint32Value();
    // batch x frameSize is what one vmnet_read may fill: it must stay within vmnet's 256 KB per call.
    if (frame_size_ < 64 || batch_ == 0 || batch_ > kVmnetMaxPackets || static_cast<size_t>(frame_size_) * batch_ > kVmnetMaxBytesPerCall ||
        area.ByteLength() < static_cast<size_t>(frame_size_) * batch_ || offs.ElementLength() < batch_ || lens.ElementLength() < batch_) {
      Napi::RangeError::New(env, "VmnetInterface: batch must be 1..200, batch x frameSize at most 256 KiB, and the receive area batch x frameSize bytes")
          .ThrowAsJavaScriptException();
      return;
    }
    rx_area_ = Napi::Persistent(area);
    rx_offs_ = Napi::Persistent(offs);
    rx_lens_ = Napi::Persistent(lens);
    rx_data_ = static_cast<uint8_t*>(area.Data());
    off_ = offs.Data();
    len_ = lens.Data();
    pkts_.resize(kVmnetMaxPackets);
    iov_.resize(kVmnetMaxPackets);

    std::string mode = opts.Get("mode").IsString() ? opts.Get("mode").As<Napi::String>().Utf8Value() : "shared";
    xpc_object_t desc = xpc_dictionary_create(nullptr, nullptr, 0);
    xpc_dictionary_set_uint64(desc, vmnet_operation_mode_key, mode == "host" ? VMNET_HOST_MODE : VMNET_SHARED_MODE);
    auto setStr = [&](const char* jsKey, const char* key) {
      Napi::Value v = opts.Get(jsKey);
      if (v.IsString()) xpc_dictionary_set_string(desc, key, v.As<Napi::String>().Utf8Value().c_str());
    };
    setStr("startAddress", vmnet_start_address_key);
    setStr("endAddress", vmnet_end_address_key);
    setStr("subnetMask", vmnet_subnet_mask_key);
    if (opts.Get("isolation").ToBoolean().Value()) {
      if (@available(macOS 11.0, *)) xpc_dictionary_set_bool(desc, vmnet_enable_isolation_key, true);
    }

    shared_ = std::make_shared<Shared>();
    shared_->tsfn = Napi::ThreadSafeFunction::New(env, info[6].As<Napi::Function>(), "fleet-vmnet", 0, 1);
    queue_ = dispatch_queue_create("dev.fleet.native-vz.vmnet", DISPATCH_QUEUE_SERIAL);
    std::shared_ptr<Shared> shared = shared_;
    dispatch_queue_t queue = queue_;
    const double euid = static_cast<double>(geteuid());
    interface_ref iface = vmnet_start_interface(desc, queue_, ^(vmnet_return_t status, xpc_object_t param) {
      if (status != VMNET_SUCCESS) {
        auto* e = new NetEvent();
        e->type = "error";
        e->status = StatusName(status);
        e->code = static_cast<double>(status);
        e->euid = euid;
        shared->failed = true;
        shared->Post(e);
        // Nothing more will be posted for an interface that never started.
        if (!shared->released.exchange(true)) shared->tsfn.Release();
        return;
      }
      auto* e = new NetEvent();
      e->type = "started";
      e->mac = DictString(param, vmnet_mac_address_key);
      e->mtu = static_cast<double>(xpc_dictionary_get_uint64(param, vmnet_mtu_key));
      e->maxPacketSize = static_cast<double>(xpc_dictionary_get_uint64(param, vmnet_max_packet_size_key));
      e->start = DictString(param, vmnet_start_address_key);
      e->end = DictString(param, vmnet_end_address_key);
      e->mask = DictString(param, vmnet_subnet_mask_key);
      shared->started = true;
      shared->ArmEvents(queue, shared);
      shared->Post(e);
    });
    if (iface == nullptr) {
      stopped_ = true;
      Napi::Error::New(env, "vmnet_start_interface failed at once (invalid interface description)").ThrowAsJavaScriptException();
      dispatch_async(queue_, ^{ if (!shared->released.exchange(true)) shared->tsfn.Release(); });
      return;
    }
    iface_ = iface;
    dispatch_async(queue_, ^{
      shared->iface = iface;
      shared->ArmEvents(queue, shared);
    });
  }

  ~VmnetInterface() override { StopInterface(); }

 private:
  void StopInterface() {
    if (stopped_ || !shared_) return;
    stopped_ = true;
    std::shared_ptr<Shared> shared = shared_;
    interface_ref iface = iface_;
    dispatch_queue_t queue = queue_;
    dispatch_async(queue_, ^{
      if (shared->failed) return;
      if (shared->callbackSet) vmnet_interface_set_event_callback(iface, VMNET_INTERFACE_PACKETS_AVAILABLE, nullptr, nullptr);
      vmnet_return_t r = vmnet_stop_interface(iface, queue, ^(vmnet_return_t status) {
        auto* e = new NetEvent();
        e->type = "stopped";
        shared->Post(e);
        if (!shared->released.exchange(true)) shared->tsfn.Release();
      });
      if (r != VMNET_SUCCESS && !shared->released.exchange(true)) shared->tsfn.Release();
    });
  }

  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (stopped_ || iface_ == nullptr) return Napi::Number::New(env, 0);
    shared_->readablePending.store(false);  // a packets-available event after this posts again
    for (uint32_t i = 0; i < batch_; i++) {
      iov_[i].iov_base = rx_data_ + static_cast<size_t>(i) * frame_size_;
      iov_[i].iov_len = frame_size_;
      pkts_[i].vm_pkt_size = frame_size_;
      pkts_[i].vm_pkt_iov = &iov_[i];
      pkts_[i].vm_pkt_iovcnt = 1;
      pkts_[i].vm_flags = 0;
    }
    int count = static_cast<int>(batch_);
    rx_calls_++;
    vmnet_return_t r = vmnet_read(iface_, pkts_.data(), &count);
    if (r != VMNET_SUCCESS) {
      last_status_ = StatusName(r);
      return Napi::Number::New(env, 0);
    }
    for (int i = 0; i < count; i++) {
      off_[i] = static_cast<uint32_t>(i) * frame_size_;
      len_[i] = static_cast<uint32_t>(pkts_[i].vm_pkt_size);
      rx_bytes_ += static_cast<double>(pkts_[i].vm_pkt_size);
    }
    rx_frames_ += count;
    return Napi::Number::New(env, count);
  }

  // write(buf, offsets, lengths, count) -> accepted prefix length
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() || !info[3].IsNumber()) {
      Napi::TypeError::New(env, "write(buf, offsets, lengths, count)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
    Napi::Uint32Array offs = info[1].As<Napi::Uint32Array>();
    Napi::Uint32Array lens = info[2].As<Napi::Uint32Array>();
    uint32_t count = info[3].As<Napi::Number>().Uint32Value();
    if (count > offs.ElementLength() || count > lens.ElementLength()) {
      Napi::RangeError::New(env, "write: count exceeds offsets/lengths").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    for (uint32_t i = 0; i < count; i++) {
      if (static_cast<uint64_t>(offs[i]) + lens[i] > buf.ByteLength()) {
        Napi::RangeError::New(env, "write: a frame lies outside buf").ThrowAsJavaScriptException();
        return env.Undefined();
      }
    }
    if (stopped_ || iface_ == nullptr) {
      tx_drops_ += count;
      return Napi::Number::New(env, 0);
    }
    uint32_t done = 0;
    while (done < count) {
      // At most 200 packets and 256 KB per vmnet_write (always at least one frame: frames are < 64 KiB).
      uint32_t chunk = 0;
      size_t bytes = 0;
      while (done + chunk < count && chunk < kVmnetMaxPackets) {
        size_t len = lens[done + chunk];
        if (chunk > 0 && bytes + len > kVmnetMaxBytesPerCall) break;
        bytes += len;
        chunk++;
      }
      for (uint32_t i = 0; i < chunk; i++) {
        iov_[i].iov_base = buf.Data() + offs[done + i];
        iov_[i].iov_len = lens[done + i];
        pkts_[i].vm_pkt_size = lens[done + i];
        pkts_[i].vm_pkt_iov = &iov_[i];
        pkts_[i].vm_pkt_iovcnt = 1;
        pkts_[i].vm_flags = 0;
      }
      int n = static_cast<int>(chunk);
      vmnet_return_t r = vmnet_write(iface_, pkts_.data(), &n);
      if (r != VMNET_SUCCESS) {
        tx_errors_++;
        last_status_ = StatusName(r);
        break;
      }
      for (int i = 0; i < n; i++) tx_bytes_ += static_cast<double>(lens[done + i]);
      done += static_cast<uint32_t>(n);
      if (static_cast<uint32_t>(n) < chunk) break;
    }
    tx_frames_ += done;
    tx_drops_ += count - done;
    return Napi::Number::New(env, done);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("rxFrames", rx_frames_);
    o.Set("rxBytes", rx_bytes_);
    o.Set("rxCalls", rx_calls_);
    o.Set("txFrames", tx_frames_);
    o.Set("txBytes", tx_bytes_);
    o.Set("txDrops", tx_drops_);
    o.Set("txErrors", tx_errors_);
    o.Set("lastStatus", last_status_.empty() ? env.Null() : Napi::String::New(env, last_status_));
    return o;
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopInterface();
    return info.Env().Undefined();
  }
  // (Not named Ref/Unref: those would hide ObjectWrap's own reference counting.)
  Napi::Value RefEvents(const Napi::CallbackInfo& info) {
    if (shared_ && !shared_->released.load()) shared_->tsfn.Ref(info.Env());
    return info.Env().Undefined();
  }
  Napi::Value UnrefEvents(const Napi::CallbackInfo& info) {
    if (shared_ && !shared_->released.load()) shared_->tsfn.Unref(info.Env());
    return info.Env().Undefined();
  }

  std::shared_ptr<Shared> shared_;
  dispatch_queue_t queue_ = nil;
  interface_ref iface_ = nullptr;
  bool stopped_ = false;
  Napi::Reference<Napi::ArrayBuffer> rx_area_;
  Napi::Reference<Napi::Uint32Array> rx_offs_, rx_lens_;
  uint8_t* rx_data_ = nullptr;
  uint32_t* off_ = nullptr;
  uint32_t* len_ = nullptr;
  uint32_t frame_size_ = 0, batch_ = 0;
  std::vector<struct vmpktdesc> pkts_;
  std::vector<struct iovec> iov_;
  double rx_frames_ = 0, rx_bytes_ = 0, rx_calls_ = 0, tx_frames_ = 0, tx_bytes_ = 0, tx_drops_ = 0, tx_errors_ = 0;
  std::string last_status_;
};

}  // namespace

void InitVmnet(Napi::Env env, Napi::Object exports) {
  exports.Set("VmnetInterface", VmnetInterface::Init(env));
}

}  // namespace nvz
