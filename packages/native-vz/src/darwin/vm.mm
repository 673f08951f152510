// @fleet/native-vz, macOS half: one VZVirtualMachine per JS VirtualMachine object.
//
// Rules (docs/macos.md, research notes §3):
// - Each VM gets a private serial dispatch queue and is created with initWithConfiguration:queue:.
//   Every VZVirtualMachine call runs on that queue; Node's main thread runs no CFRunLoop, so the
//   main queue is never used.
// - Results reach JS only through one Napi::ThreadSafeFunction per VM ("events"). All posts happen
//   on the VM queue (progress KVO hops onto it first), and the queue's reference to the function
//   is released by a block on the same queue, so no post can follow the release.
// - The JS thread may dispatch_sync onto the VM queue (state(), can(), construction): blocks on
//   the queue never wait for the JS thread, so this cannot deadlock.
// NOT compiled or run on a Mac by the authors yet (docs/macos.md).
#import <Foundation/Foundation.h>
#import <Virtualization/Virtualization.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>

#include "vz_darwin.h"

namespace nvz {
namespace {

// Nothing here is named `id`: in Objective-C++ that name is the object type, and a variable called
// `id` would hide it for the rest of its scope.
struct VmEvent {
  std::string type;
  double requestId = -1;  // 'done' / 'installProgress': the JS request id
  std::string state;
  double fraction = 0;
  bool hasError = false;
  std::string domain, message, reason;
  double code = 0;
};

void FillError(VmEvent* e, NSError* error) {
  if (error == nil) return;
  e->hasError = true;
  e->domain = error.domain.UTF8String ?: "unknown";
  e->code = static_cast<double>(error.code);
  e->message = error.localizedDescription.UTF8String ?: "unknown error";
  if (error.localizedFailureReason != nil) e->reason = error.localizedFailureReason.UTF8String ?: "";
}

Napi::Object EventToJs(Napi::Env env, const VmEvent& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", e.type);
  if (e.requestId >= 0) o.Set("id", e.requestId);
  if (e.type == "state") o.Set("state", e.state);
  if (e.type == "installProgress") o.Set("fraction", e.fraction);
  if (e.hasError) {
    Napi::Object err = Napi::Object::New(env);
    err.Set("domain", e.domain);
    err.Set("code", e.code);
    err.Set("message", e.message);
    if (!e.reason.empty()) err.Set("reason", e.reason);
    o.Set("error", err);
  }
  return o;
}

// The event sink shared by the C++ wrapper and the Objective-C observer.
struct Bridge {
  Napi::ThreadSafeFunction tsfn;
  std::atomic<bool> released{false};
  // The running VZMacOSInstaller (arm64 only), touched only on the VM queue.
  id installer = nil;

  // Only ever called on the VM queue.
  void Post(VmEvent* e) {
    if (released.load()) {
      delete e;
      return;
    }
    napi_status s = tsfn.NonBlockingCall(e, [](Napi::Env env, Napi::Function cb, VmEvent* ev) {
      if (env != nullptr && !cb.IsEmpty()) {
        Napi::HandleScope scope(env);
        cb.Call({EventToJs(env, *ev)});
      }
      delete ev;
    });
    if (s != napi_ok) delete e;
  }
  // Only ever called on the VM queue (see file header).
  void ReleaseOnQueue() {
    if (!released.exchange(true)) tsfn.Release();
  }
};

const char* StateName(VZVirtualMachineState s) {
  switch (s) {
    case VZVirtualMachineStateStopped: return "stopped";
    case VZVirtualMachineStateRunning: return "running";
    case VZVirtualMachineStatePaused: return "paused";
    case VZVirtualMachineStateError: return "error";
    case VZVirtualMachineStateStarting: return "starting";
    case VZVirtualMachineStatePausing: return "pausing";
    case VZVirtualMachineStateResuming: return "resuming";
    case VZVirtualMachineStateStopping: return "stopping";
    default: break;
  }
  if (@available(macOS 14.0, *)) {
    if (s == VZVirtualMachineStateSaving) return "saving";
    if (s == VZVirtualMachineStateRestoring) return "restoring";
  }
  return "error";
}

}  // namespace
}  // namespace nvz

static void* const kFleetStateContext = (void*)&kFleetStateContext;
static void* const kFleetProgressContext = (void*)&kFleetProgressContext;

// KVO observer (state, installer progress) and VZVirtualMachineDelegate. The VM's delegate
// property is weak: the C++ wrapper keeps this object alive.
@interface FleetVZObserver : NSObject <VZVirtualMachineDelegate>
- (instancetype)initWithBridge:(std::shared_ptr<nvz::Bridge>)bridge queue:(dispatch_queue_t)queue;
@property(nonatomic) double installId;
@end

@implementation FleetVZObserver {
  std::shared_ptr<nvz::Bridge> _bridge;
  dispatch_queue_t _queue;
}

- (instancetype)initWithBridge:(std::shared_ptr<nvz::Bridge>)bridge queue:(dispatch_queue_t)queue {
  if ((self = [super init])) {
    _bridge = bridge;
    _queue = queue;
    _installId = -1;
  }
  return self;
}

- (void)observeValueForKeyPath:(NSString*)keyPath
                      ofObject:(id)object
                        change:(NSDictionary<NSKeyValueChangeKey, id>*)change
                       context:(void*)context {
  if (context == kFleetStateContext) {
    // State changes happen on the VM queue, so KVO fires there.
    auto* e = new nvz::VmEvent();
    e->type = "state";
    e->state = nvz::StateName(((VZVirtualMachine*)object).state);
    _bridge->Post(e);
  } else if (context == kFleetProgressContext) {
    // NSProgress may be updated on any thread: hop onto the VM queue before posting.
    double fraction = ((NSProgress*)object).fractionCompleted;
    double installId = _installId;
    std::shared_ptr<nvz::Bridge> bridge = _bridge;
    dispatch_async(_queue, ^{
      auto* e = new nvz::VmEvent();
      e->type = "installProgress";
      e->requestId = installId;
      e->fraction = fraction;
      bridge->Post(e);
    });
  } else {
    [super observeValueForKeyPath:keyPath ofObject:object change:change context:context];
  }
}

- (void)guestDidStopVirtualMachine:(VZVirtualMachine*)virtualMachine {
  auto* e = new nvz::VmEvent();
  e->type = "guestStopped";
  _bridge->Post(e);
}

- (void)virtualMachine:(VZVirtualMachine*)virtualMachine didStopWithError:(NSError*)error {
  auto* e = new nvz::VmEvent();
  e->type = "stoppedWithError";
  nvz::FillError(e, error);
  _bridge->Post(e);
}

- (void)virtualMachine:(VZVirtualMachine*)virtualMachine
                 networkDevice:(VZNetworkDevice*)networkDevice
    attachmentWasDisconnectedWithError:(NSError*)error {
  auto* e = new nvz::VmEvent();
  e->type = "networkDisconnected";
  nvz::FillError(e, error);
  _bridge->Post(e);
}
@end

namespace nvz {
namespace {

NSError* ConfigError(NSString* message) {
  return [NSError errorWithDomain:@"FleetNativeVZ"
                             code:1
                         userInfo:@{NSLocalizedDescriptionKey : message}];
}

std::string Str(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}
double Num(const Napi::Object& o, const char* key, double dflt) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : dflt;
}
bool Bool(const Napi::Object& o, const char* key, bool dflt) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : dflt;
}
NSURL* FileURL(const std::string& path) {
  return [NSURL fileURLWithPath:[NSString stringWithUTF8String:path.c_str()]];
}

// Builds the VZVirtualMachineConfiguration described by a VzMachineConfig (src/vz-types.ts).
// Returns nil and sets *error on failure. Objective-C exceptions (thrown by some setters on bad
// input) are caught by the caller.
VZVirtualMachineConfiguration* BuildConfiguration(const Napi::Object& cfg, NSError** error) {
  VZVirtualMachineConfiguration* c = [[VZVirtualMachineConfiguration alloc] init];
  std::string guest = Str(cfg, "guest");
  bool suspendable = Bool(cfg, "suspendable", false);

  // CPU and memory, clamped to what the framework allows (memory in whole MiB).
  double cpus = Num(cfg, "cpus", 1);
  double lo = static_cast<double>(VZVirtualMachineConfiguration.minimumAllowedCPUCount);
  double hi = static_cast<double>(VZVirtualMachineConfiguration.maximumAllowedCPUCount);
  c.CPUCount = static_cast<NSUInteger>(std::min(hi, std::max(lo, cpus)));
  double mem = Num(cfg, "memoryBytes", 0);
  double mlo = static_cast<double>(VZVirtualMachineConfiguration.minimumAllowedMemorySize);
  double mhi = static_cast<double>(VZVirtualMachineConfiguration.maximumAllowedMemorySize);
  uint64_t memory = static_cast<uint64_t>(std::min(mhi, std::max(mlo, mem)));
  c.memorySize = memory - (memory % (1024ull * 1024ull));

  Napi::Value displayV = cfg.Get("display");
  NSInteger width = 1024, height = 768, ppi = 80;
  if (displayV.IsObject()) {
    Napi::Object d = displayV.As<Napi::Object>();
    width = static_cast<NSInteger>(Num(d, "width", 1024));
    height = static_cast<NSInteger>(Num(d, "height", 768));
    ppi = static_cast<NSInteger>(Num(d, "ppi", 80));
  }

  if (guest == "macos") {
#if defined(__arm64__)
    Napi::Value mv = cfg.Get("macos");
    if (!mv.IsObject()) {
      *error = ConfigError(@"a macOS guest needs `macos` (hardwareModel, machineIdentifier, auxiliaryStoragePath)");
      return nil;
    }
    Napi::Object m = mv.As<Napi::Object>();
    NSData* hwData = ToNSData(m.Get("hardwareModel"));
    NSData* idData = ToNSData(m.Get("machineIdentifier"));
    VZMacHardwareModel* hw = hwData ? [[VZMacHardwareModel alloc] initWithDataRepresentation:hwData] : nil;
    if (hw == nil) {
      *error = ConfigError(@"hardwareModel is not a valid VZMacHardwareModel data representation");
      return nil;
    }
    if (!hw.supported) {
      *error = ConfigError(@"this VM's hardware model is not supported on this host (newer macOS guest than the host can run?)");
      return nil;
    }
    VZMacMachineIdentifier* mid = idData ? [[VZMacMachineIdentifier alloc] initWithDataRepresentation:idData] : nil;
    if (mid == nil) {
      *error = ConfigError(@"machineIdentifier is not a valid VZMacMachineIdentifier data representation");
      return nil;
    }
    VZMacPlatformConfiguration* p = [[VZMacPlatformConfiguration alloc] init];
    p.hardwareModel = hw;
    p.machineIdentifier = mid;
    p.auxiliaryStorage = [[VZMacAuxiliaryStorage alloc] initWithURL:FileURL(Str(m, "auxiliaryStoragePath"))];
    c.platform = p;
    c.bootLoader = [[VZMacOSBootLoader alloc] init];

    VZMacGraphicsDeviceConfiguration* g = [[VZMacGraphicsDeviceConfiguration alloc] init];
    g.displays = @[ [[VZMacGraphicsDisplayConfiguration alloc] initWithWidthInPixels:width
                                                                      heightInPixels:height
                                                                       pixelsPerInch:ppi] ];
    c.graphicsDevices = @[ g ];
    // Input devices as Tart attaches them: a USB keyboard and pointer for every guest (guests
    // older than macOS 13 have no driver for the Mac keyboard/trackpad), plus the Mac keyboard
    // (host 14+) and trackpad (host 13+) for guests that have one. Suspendable VMs get only the
    // Mac devices, as Tart configures them (it drops the USB input devices for save/restore).
    if (suspendable) {
      if (@available(macOS 14.0, *)) {
        c.keyboards = @[ [[VZMacKeyboardConfiguration alloc] init] ];
      } else {
        c.keyboards = @[ [[VZUSBKeyboardConfiguration alloc] init] ];  // unreachable in practice: suspendable needs 14 (checked below)
      }
      c.pointingDevices = @[ [[VZMacTrackpadConfiguration alloc] init] ];
    } else {
      if (@available(macOS 14.0, *)) {
        c.keyboards = @[ [[VZUSBKeyboardConfiguration alloc] init], [[VZMacKeyboardConfiguration alloc] init] ];
      } else {
        c.keyboards = @[ [[VZUSBKeyboardConfiguration alloc] init] ];
      }
      c.pointingDevices = @[ [[VZUSBScreenCoordinatePointingDeviceConfiguration alloc] init],
                             [[VZMacTrackpadConfiguration alloc] init] ];
    }
#else
    *error = ConfigError(@"macOS guests need an Apple silicon (arm64) host");
    return nil;
#endif
  } else if (guest == "linux") {
    Napi::Value lv = cfg.Get("linux");
    if (!lv.IsObject()) {
      *error = ConfigError(@"a Linux guest needs `linux` (efi or kernel boot)");
      return nil;
    }
    Napi::Object l = lv.As<Napi::Object>();
    std::string kind = Str(l, "kind");
    if (kind == "efi") {
      NSURL* storeURL = FileURL(Str(l, "variableStorePath"));
      VZEFIVariableStore* store = nil;
      if (Bool(l, "create", false)) {
        store = [[VZEFIVariableStore alloc] initCreatingVariableStoreAtURL:storeURL
                                                                   options:VZEFIVariableStoreInitializationOptionAllowOverwrite
                                                                     error:error];
        if (store == nil) return nil;
      } else {
        store = [[VZEFIVariableStore alloc] initWithURL:storeURL];
      }
      VZEFIBootLoader* bl = [[VZEFIBootLoader alloc] init];
      bl.variableStore = store;
      c.bootLoader = bl;
    } else if (kind == "kernel") {
      VZLinuxBootLoader* bl = [[VZLinuxBootLoader alloc] initWithKernelURL:FileURL(Str(l, "kernelPath"))];
      std::string initrd = Str(l, "initrdPath");
      if (!initrd.empty()) bl.initialRamdiskURL = FileURL(initrd);
      bl.commandLine = [NSString stringWithUTF8String:Str(l, "cmdline").c_str()];
      c.bootLoader = bl;
    } else {
      *error = ConfigError(@"linux.kind must be \"efi\" or \"kernel\"");
      return nil;
    }
    c.platform = [[VZGenericPlatformConfiguration alloc] init];
    if (displayV.IsObject()) {
      VZVirtioGraphicsDeviceConfiguration* g = [[VZVirtioGraphicsDeviceConfiguration alloc] init];
      g.scanouts = @[ [[VZVirtioGraphicsScanoutConfiguration alloc] initWithWidthInPixels:width heightInPixels:height] ];
      c.graphicsDevices = @[ g ];
      c.keyboards = @[ [[VZUSBKeyboardConfiguration alloc] init] ];
      c.pointingDevices = @[ [[VZUSBScreenCoordinatePointingDeviceConfiguration alloc] init] ];
    }
  } else {
    *error = ConfigError(@"guest must be \"macos\" or \"linux\"");
    return nil;
  }

  // Disks: virtio block devices on disk image files.
  NSMutableArray<VZStorageDeviceConfiguration*>* disks = [NSMutableArray array];
  Napi::Value dv = cfg.Get("disks");
  if (dv.IsArray()) {
    Napi::Array arr = dv.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value item = arr.Get(i);
      if (!item.IsObject()) continue;
      Napi::Object d = item.As<Napi::Object>();
      std::string caching = Str(d, "caching");
      std::string sync = Str(d, "sync");
      VZDiskImageCachingMode cm = caching == "cached"     ? VZDiskImageCachingModeCached
                                  : caching == "uncached" ? VZDiskImageCachingModeUncached
                                                          : VZDiskImageCachingModeAutomatic;
      VZDiskImageSynchronizationMode sm = sync == "fsync"  ? VZDiskImageSynchronizationModeFsync
                                          : sync == "none" ? VZDiskImageSynchronizationModeNone
                                                           : VZDiskImageSynchronizationModeFull;
      VZDiskImageStorageDeviceAttachment* a =
          [[VZDiskImageStorageDeviceAttachment alloc] initWithURL:FileURL(Str(d, "path"))
                                                         readOnly:Bool(d, "readOnly", false)
                                                      cachingMode:cm
                                              synchronizationMode:sm
                                                            error:error];
      if (a == nil) return nil;
      [disks addObject:[[VZVirtioBlockDeviceConfiguration alloc] initWithAttachment:a]];
    }
  }
  c.storageDevices = disks;

  // The NIC: one end of a connected SOCK_DGRAM socketpair. We dup the fd so that the
  // NSFileHandle owns (and closes) its own copy; the caller keeps and closes the original.
  Napi::Value nv = cfg.Get("network");
  if (nv.IsObject()) {
    Napi::Object n = nv.As<Napi::Object>();
    int fd = static_cast<int>(Num(n, "fd", -1));
    int copy = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1;
    if (copy < 0) {
      *error = ConfigError(@"network.fd is not an open file descriptor");
      return nil;
    }
    NSFileHandle* fh = [[NSFileHandle alloc] initWithFileDescriptor:copy closeOnDealloc:YES];
    VZFileHandleNetworkDeviceAttachment* att = [[VZFileHandleNetworkDeviceAttachment alloc] initWithFileHandle:fh];
    double mtu = Num(n, "mtu", 0);
    if (mtu > 0) {
      if (@available(macOS 13.0, *)) att.maximumTransmissionUnit = static_cast<NSInteger>(mtu);
    }
    VZMACAddress* mac = [[VZMACAddress alloc] initWithString:[NSString stringWithUTF8String:Str(n, "mac").c_str()]];
    if (mac == nil) {
      *error = ConfigError(@"network.mac is not a MAC address (aa:bb:cc:dd:ee:ff)");
      return nil;
    }
    VZVirtioNetworkDeviceConfiguration* net = [[VZVirtioNetworkDeviceConfiguration alloc] init];
    net.MACAddress = mac;
    net.attachment = att;
    c.networkDevices = @[ net ];
  }

  std::string serial = Str(cfg, "serialLogPath");
  if (!serial.empty()) {
    VZFileSerialPortAttachment* sa = [[VZFileSerialPortAttachment alloc] initWithURL:FileURL(serial) append:YES error:error];
    if (sa == nil) return nil;
    VZVirtioConsoleDeviceSerialPortConfiguration* sp = [[VZVirtioConsoleDeviceSerialPortConfiguration alloc] init];
    sp.attachment = sa;
    c.serialPorts = @[ sp ];
  }
  if (Bool(cfg, "entropy", true) && !suspendable) {
    c.entropyDevices = @[ [[VZVirtioEntropyDeviceConfiguration alloc] init] ];
  }
  if (Bool(cfg, "vsock", true)) {
    c.socketDevices = @[ [[VZVirtioSocketDeviceConfiguration alloc] init] ];
  }

  if (![c validateWithError:error]) return nil;
  if (suspendable) {
    if (@available(macOS 14.0, *)) {
      if (![c validateSaveRestoreSupportWithError:error]) return nil;
    } else {
      *error = ConfigError(@"suspendable VMs need macOS 14 or later on the host");
      return nil;
    }
  }
  return c;
}

class VirtualMachine : public Napi::ObjectWrap<VirtualMachine> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "VirtualMachine",
                       {
                           InstanceMethod("state", &VirtualMachine::State),
                           InstanceMethod("can", &VirtualMachine::Can),
                           InstanceMethod("start", &VirtualMachine::Start),
                           InstanceMethod("pause", &VirtualMachine::Pause),
                           InstanceMethod("resume", &VirtualMachine::Resume),
                           InstanceMethod("stop", &VirtualMachine::Stop),
                           InstanceMethod("requestStop", &VirtualMachine::RequestStop),
                           InstanceMethod("saveState", &VirtualMachine::SaveState),
                           InstanceMethod("restoreState", &VirtualMachine::RestoreState),
                           InstanceMethod("install", &VirtualMachine::Install),
                           InstanceMethod("cancelInstall", &VirtualMachine::CancelInstall),
                           InstanceMethod("ref", &VirtualMachine::RefEvents),
                           InstanceMethod("unref", &VirtualMachine::UnrefEvents),
                           InstanceMethod("close", &VirtualMachine::Close),
                       });
  }

  // new VirtualMachine(config: VzMachineConfig, onEvent: (e: VzEvent) => void)
  explicit VirtualMachine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VirtualMachine>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "VirtualMachine(config, onEvent)").ThrowAsJavaScriptException();
      return;
    }
    @autoreleasepool {
      // __autoreleasing: BuildConfiguration passes it straight on to framework out-parameters.
      NSError* __autoreleasing error = nil;
      VZVirtualMachineConfiguration* config = nil;
      @try {
        config = BuildConfiguration(info[0].As<Napi::Object>(), &error);
      } @catch (NSException* ex) {
        Napi::Error::New(env, std::string("VirtualMachine: invalid configuration: ") + (ex.reason.UTF8String ?: "exception"))
            .ThrowAsJavaScriptException();
        return;
      }
      if (config == nil) {
        NSErrorToJs(env, error ?: ConfigError(@"unknown configuration error"), "VirtualMachine: invalid configuration")
            .ThrowAsJavaScriptException();
        return;
      }
      bridge_ = std::make_shared<Bridge>();
      bridge_->tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "fleet-vz-vm", 0, 1);
      queue_ = dispatch_queue_create("dev.fleet.native-vz.vm", DISPATCH_QUEUE_SERIAL);
      observer_ = [[FleetVZObserver alloc] initWithBridge:bridge_ queue:queue_];
      __block VZVirtualMachine* vm = nil;
      FleetVZObserver* observer = observer_;
      dispatch_queue_t queue = queue_;
      dispatch_sync(queue_, ^{
        vm = [[VZVirtualMachine alloc] initWithConfiguration:config queue:queue];
        vm.delegate = observer;
        [vm addObserver:observer forKeyPath:@"state" options:NSKeyValueObservingOptionNew context:kFleetStateContext];
      });
      vm_ = vm;
    }
  }

  ~VirtualMachine() override { Teardown(); }

 private:
  // Detach observers and release the queue's reference to the event function, on the queue.
  void Teardown() {
    if (vm_ == nil || torn_down_) return;
    torn_down_ = true;
    VZVirtualMachine* vm = vm_;
    FleetVZObserver* observer = observer_;
    std::shared_ptr<Bridge> bridge = bridge_;
    dispatch_async(queue_, ^{
      [vm removeObserver:observer forKeyPath:@"state" context:kFleetStateContext];
      vm.delegate = nil;
      bridge->ReleaseOnQueue();
    });
  }

  bool Ready(const Napi::CallbackInfo& info) {
    if (vm_ == nil || torn_down_) {
      Napi::Error::New(info.Env(), "VirtualMachine is closed").ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  static double RequestId(const Napi::CallbackInfo& info) {
    return info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  }

  // Posts a 'done' event for request `reqId` (call on the queue).
  static void Done(const std::shared_ptr<Bridge>& bridge, double reqId, NSError* error) {
    auto* e = new VmEvent();
    e->type = "done";
    e->requestId = reqId;
    FillError(e, error);
    bridge->Post(e);
  }

  Napi::Value State(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
    __block VZVirtualMachineState s = VZVirtualMachineStateStopped;
    VZVirtualMachine* vm = vm_;
    dispatch_sync(queue_, ^{ s = vm.state; });
    return Napi::String::New(info.Env(), StateName(s));
  }

  Napi::Value Can(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
    __block BOOL start = NO, pause = NO, resume = NO, requestStop = NO, stop = NO;
    VZVirtualMachine* vm = vm_;
    dispatch_sync(queue_, ^{
      start = vm.canStart;
      pause = vm.canPause;
      resume = vm.canResume;
      requestStop = vm.canRequestStop;
      stop = vm.canStop;
    });
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("start", static_cast<bool>(start));
    o.Set("pause", static_cast<bool>(pause));
    o.Set("resume", static_cast<bool>(resume));
    o.Set("requestStop", static_cast<bool>(requestStop));
    o.Set("stop", static_cast<bool>(stop));
    return o;
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
    double reqId = RequestId(info);
    bool recovery = info.Length() > 1 && info[1].IsObject() && Bool(info[1].As<Napi::Object>(), "recovery", false);
    VZVirtualMachine* vm = vm_;
    std::shared_ptr<Bridge> bridge = bridge_;
    dispatch_async(queue_, ^{
      void (^handler)(NSError*) = ^(NSError* error) { Done(bridge, reqId, error); };
#if defined(__arm64__)
      if (recovery) {
        if (@available(macOS 13.0, *)) {
          VZMacOSVirtualMachineStartOptions* opts = [[VZMacOSVirtualMachineStartOptions alloc] init];
          opts.startUpFromMacOSRecovery = YES;
          [vm startWithOptions:opts completionHandler:handler];
          return;
        }
        Done(bridge, reqId, ConfigError(@"starting in recovery needs macOS 13 or later on the host"));
        return;
      }
#else
      if (recovery) {
        Done(bridge, reqId, ConfigError(@"starting in recovery needs an Apple silicon host"));
        return;
      }
#endif
      [vm startWithCompletionHandler:handler];
    });
    return info.Env().Undefined();
  }

  Napi::Value Pause(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
    double reqId = RequestId(info);
    VZVirtualMachine* vm = vm_;
    std::shared_ptr<Bridge> bridge = bridge_;
    dispatch_async(queue_, ^{
      [vm pauseWithCompletionHandler:^(NSError* error) { Done(bridge, reqId, error); }];
    });
    return info.Env().Undefined();
  }

  Napi::Value Resume(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
    double reqId = RequestId(info);
    VZVirtualMachine* vm = vm_;
    std::shared_ptr<Bridge> bridge = bridge_;
    dispatch_async(queue_, ^{
      [vm resumeWithCompletionHandler:^(NSError* error) { Done(bridge, reqId, error); }];
    });
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
    double reqId = RequestId(info);
    VZVirtualMachine* vm = vm_;
    std::shared_ptr<Bridge> bridge = bridge_;
    dispatch_async(queue_, ^{
      [vm stopWithCompletionHandler:^(NSError* error) { Done(bridge, reqId, error); }];
    });
    return info.Env().Undefined();
  }

  Napi::Value RequestStop(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
    double reqId = RequestId(info);
    VZVirtualMachine* vm = vm_;
    std::shared_ptr<Bridge> bridge = bridge_;
    dispatch_async(queue_, ^{
      NSError* error = nil;
      BOOL ok = [vm requestStopWithError:&error];
      Done(bridge, reqId, ok ? nil : (error ?: ConfigError(@"requestStop failed")));
    });
    return info.Env().Undefined();
  }

  Napi::Value SaveOrRestore(const Napi::CallbackInfo& info, bool save) {
    if (!Ready(info)) return info.Env().Undefined();
    double reqId = RequestId(info);
    // +[NSURL fileURLWithPath:] raises on an empty path, and nothing catches an exception here.
    if (info.Length() < 2 || !info[1].IsString() || info[1].As<Napi::String>().Utf8Value().rfind('/', 0) != 0) {
      Napi::TypeError::New(info.Env(), save ? "saveState(id, path): path must be absolute" : "restoreState(id, path): path must be absolute").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    NSURL* url = FileURL(info[1].As<Napi::String>().Utf8Value());
    VZVirtualMachine* vm = vm_;
    std::shared_ptr<Bridge> bridge = bridge_;
    dispatch_async(queue_, ^{
      if (@available(macOS 14.0, *)) {
        void (^handler)(NSError*) = ^(NSError* error) { Done(bridge, reqId, error); };
        if (save) [vm saveMachineStateToURL:url completionHandler:handler];
        else [vm restoreMachineStateFromURL:url completionHandler:handler];
      } else {
        Done(bridge, reqId, ConfigError(@"saving and restoring VM state needs macOS 14 or later on the host"));
      }
    });
    return info.Env().Undefined();
  }
  Napi::Value SaveState(const Napi::CallbackInfo& info) { return SaveOrRestore(info, true); }
  Napi::Value RestoreState(const Napi::CallbackInfo& info) { return SaveOrRestore(info, false); }

  Napi::Value Install(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
    double reqId = RequestId(info);
    if (info.Length() < 2 || !info[1].IsString() || info[1].As<Napi::String>().Utf8Value().rfind('/', 0) != 0) {
      Napi::TypeError::New(info.Env(), "install(id, ipswPath): ipswPath must be absolute").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    std::shared_ptr<Bridge> bridge = bridge_;
#if defined(__arm64__)
    NSURL* url = FileURL(info[1].As<Napi::String>().Utf8Value());
    VZVirtualMachine* vm = vm_;
    FleetVZObserver* observer = observer_;
    dispatch_async(queue_, ^{
      if (bridge->installer != nil) {
        Done(bridge, reqId, ConfigError(@"an installation is already running on this VM"));
        return;
      }
      VZMacOSInstaller* installer = [[VZMacOSInstaller alloc] initWithVirtualMachine:vm restoreImageURL:url];
      bridge->installer = installer;
      observer.installId = reqId;
      [installer.progress addObserver:observer
                           forKeyPath:@"fractionCompleted"
                              options:NSKeyValueObservingOptionNew
                              context:kFleetProgressContext];
      [installer installWithCompletionHandler:^(NSError* error) {
        [installer.progress removeObserver:observer forKeyPath:@"fractionCompleted" context:kFleetProgressContext];
        bridge->installer = nil;
        Done(bridge, reqId, error);
      }];
    });
#else
    dispatch_async(queue_, ^{ Done(bridge, reqId, ConfigError(@"installing macOS needs an Apple silicon host")); });
#endif
    return info.Env().Undefined();
  }

  Napi::Value CancelInstall(const Napi::CallbackInfo& info) {
    if (!Ready(info)) return info.Env().Undefined();
#if defined(__arm64__)
    std::shared_ptr<Bridge> bridge = bridge_;
    dispatch_async(queue_, ^{ [((VZMacOSInstaller*)bridge->installer).progress cancel]; });
#endif
    return info.Env().Undefined();
  }

  // (Not named Ref/Unref: those would hide ObjectWrap's own reference counting.)
  Napi::Value RefEvents(const Napi::CallbackInfo& info) {
    if (bridge_ && !torn_down_) bridge_->tsfn.Ref(info.Env());
    return info.Env().Undefined();
  }
  Napi::Value UnrefEvents(const Napi::CallbackInfo& info) {
    if (bridge_ && !torn_down_) bridge_->tsfn.Unref(info.Env());
    return info.Env().Undefined();
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Teardown();
    return info.Env().Undefined();
  }

  std::shared_ptr<Bridge> bridge_;
  dispatch_queue_t queue_ = nil;
  VZVirtualMachine* vm_ = nil;
  FleetVZObserver* observer_ = nil;
  bool torn_down_ = false;
};

Napi::Value IsSupported(const Napi::CallbackInfo& info) {
  // +[VZVirtualMachine isSupported] (the class property `supported`), as a message send.
  return Napi::Boolean::New(info.Env(), [VZVirtualMachine isSupported]);
}

Napi::Value Limits(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("minCpus", static_cast<double>(VZVirtualMachineConfiguration.minimumAllowedCPUCount));
  o.Set("maxCpus", static_cast<double>(VZVirtualMachineConfiguration.maximumAllowedCPUCount));
  o.Set("minMemoryBytes", static_cast<double>(VZVirtualMachineConfiguration.minimumAllowedMemorySize));
  o.Set("maxMemoryBytes", static_cast<double>(VZVirtualMachineConfiguration.maximumAllowedMemorySize));
  return o;
}

}  // namespace

void InitVirtualMachine(Napi::Env env, Napi::Object exports) {
  exports.Set("VirtualMachine", VirtualMachine::Init(env));
  exports.Set("isSupported", Napi::Function::New(env, IsSupported, "isSupported"));
  exports.Set("limits", Napi::Function::New(env, Limits, "limits"));
}

}  // namespace nvz
