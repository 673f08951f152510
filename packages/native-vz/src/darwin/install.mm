// @fleet/native-vz, macOS half: macOS guest identity and installation media.
//   newMachineIdentifier()            VZMacMachineIdentifier (fresh ECID for clones)
//   hardwareModelSupported(data)      VZMacHardwareModel(dataRepresentation:).isSupported
//   createAuxiliaryStorage(path, hw)  VZMacAuxiliaryStorage initCreatingStorageAtURL:...
//   loadRestoreImage(path, cb)        VZMacOSRestoreImage loadFileURL:completionHandler:
// The installation itself runs on the VM's queue (VirtualMachine.install in vm.mm).
// All of this is arm64-only in Apple's headers; on x86_64 the functions report that plainly.
// NOT compiled or run on a Mac by the authors yet (docs/macos.md).
#import <Foundation/Foundation.h>
#import <Virtualization/Virtualization.h>

#include <string>

#include "vz_darwin.h"

namespace nvz {
namespace {

// +[NSURL fileURLWithPath:] raises on an empty path; the framework wants local file URLs.
bool IsAbsolutePath(const Napi::Value& v) {
  return v.IsString() && v.As<Napi::String>().Utf8Value().rfind('/', 0) == 0;
}

Napi::Value NotOnIntel(Napi::Env env, const char* what) {
  Napi::Error::New(env, std::string(what) + ": macOS guests need an Apple silicon (arm64) host").ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value NewMachineIdentifier(const Napi::CallbackInfo& info) {
#if defined(__arm64__)
  @autoreleasepool {
    VZMacMachineIdentifier* mid = [[VZMacMachineIdentifier alloc] init];
    return FromNSData(info.Env(), mid.dataRepresentation);
  }
#else
  return NotOnIntel(info.Env(), "newMachineIdentifier");
#endif
}

Napi::Value HardwareModelSupported(const Napi::CallbackInfo& info) {
#if defined(__arm64__)
  @autoreleasepool {
    NSData* data = info.Length() > 0 ? ToNSData(info[0]) : nil;
    if (data == nil) {
      Napi::TypeError::New(info.Env(), "hardwareModelSupported(data: Uint8Array)").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    VZMacHardwareModel* hw = [[VZMacHardwareModel alloc] initWithDataRepresentation:data];
    return Napi::Boolean::New(info.Env(), hw != nil && hw.supported);
  }
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Value CreateAuxiliaryStorage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !IsAbsolutePath(info[0]) || !info[1].IsTypedArray()) {
    Napi::TypeError::New(env, "createAuxiliaryStorage(path: absolute, hardwareModel: Uint8Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
#if defined(__arm64__)
  @autoreleasepool {
    VZMacHardwareModel* hw = [[VZMacHardwareModel alloc] initWithDataRepresentation:ToNSData(info[1])];
    if (hw == nil) {
      Napi::Error::New(env, "createAuxiliaryStorage: not a valid VZMacHardwareModel data representation").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    NSError* error = nil;
    NSURL* url = [NSURL fileURLWithPath:ToNSString(info[0])];
    VZMacAuxiliaryStorage* aux = [[VZMacAuxiliaryStorage alloc] initCreatingStorageAtURL:url
                                                                           hardwareModel:hw
                                                                                 options:VZMacAuxiliaryStorageInitializationOptionAllowOverwrite
                                                                                   error:&error];
    if (aux == nil) NSErrorToJs(env, error, "createAuxiliaryStorage").ThrowAsJavaScriptException();
    return env.Undefined();
  }
#else
  return NotOnIntel(env, "createAuxiliaryStorage");
#endif
}

struct RestoreImageResult {
  bool hasError = false;
  std::string domain, message, reason;
  double code = 0;
  std::string buildVersion, osVersion;
  bool supported = false;
  std::string hardwareModel;  // bytes
  double minCpus = 0, minMemory = 0;
};

// loadRestoreImage(path, cb(error | null, info | null))
Napi::Value LoadRestoreImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !IsAbsolutePath(info[0]) || !info[1].IsFunction()) {
    Napi::TypeError::New(env, "loadRestoreImage(path: absolute, cb)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
#if defined(__arm64__)
  // One-shot thread-safe function: the completion handler runs on a framework queue.
  Napi::ThreadSafeFunction tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "fleet-vz-restore-image", 0, 1);
  // VZ rejects symlinked IPSW paths (Tart's finding): resolve them first.
  NSURL* url = [[NSURL fileURLWithPath:ToNSString(info[0])] URLByResolvingSymlinksInPath];
  // Apple: "If the fileURL parameter doesn't refer to a local file, the system raises an
  // exception." An uncaught Objective-C exception would abort node: turn it into a JS error.
  @try {
    [VZMacOSRestoreImage loadFileURL:url
                   completionHandler:^(VZMacOSRestoreImage* image, NSError* error) {
                     auto* r = new RestoreImageResult();
                     if (image == nil) {
                       r->hasError = true;
                       r->domain = error.domain.UTF8String ?: "unknown";
                       r->code = static_cast<double>(error.code);
                       r->message = error.localizedDescription.UTF8String ?: "cannot load the restore image";
                       if (error.localizedFailureReason != nil) r->reason = error.localizedFailureReason.UTF8String ?: "";
                     } else {
                       r->buildVersion = image.buildVersion.UTF8String ?: "";
                       NSOperatingSystemVersion v = image.operatingSystemVersion;
                       r->osVersion = std::to_string(v.majorVersion) + "." + std::to_string(v.minorVersion) + "." + std::to_string(v.patchVersion);
                       VZMacOSConfigurationRequirements* req = image.mostFeaturefulSupportedConfiguration;
                       if (req != nil && req.hardwareModel.supported) {
                         r->supported = true;
                         NSData* hw = req.hardwareModel.dataRepresentation;
                         r->hardwareModel.assign(static_cast<const char*>(hw.bytes), hw.length);
                         r->minCpus = static_cast<double>(req.minimumSupportedCPUCount);
                         r->minMemory = static_cast<double>(req.minimumSupportedMemorySize);
                       }
                     }
                     napi_status s = tsfn.NonBlockingCall(r, [](Napi::Env env, Napi::Function cb, RestoreImageResult* res) {
                       if (env != nullptr && !cb.IsEmpty()) {
                         Napi::HandleScope scope(env);
                         if (res->hasError) {
                           Napi::Object err = Napi::Object::New(env);
                           err.Set("domain", res->domain);
                           err.Set("code", res->code);
                           err.Set("message", res->message);
                           if (!res->reason.empty()) err.Set("reason", res->reason);
                           cb.Call({err, env.Null()});
                         } else {
                           Napi::Object o = Napi::Object::New(env);
                           o.Set("buildVersion", res->buildVersion);
                           o.Set("osVersion", res->osVersion);
                           if (res->supported) {
                             Napi::Object sup = Napi::Object::New(env);
                             sup.Set("hardwareModel", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(res->hardwareModel.data()), res->hardwareModel.size()));
                             sup.Set("minCpus", res->minCpus);
                             sup.Set("minMemoryBytes", res->minMemory);
                             o.Set("supported", sup);
                           }
                           cb.Call({env.Null(), o});
                         }
                       }
                       delete res;
                     });
                     if (s != napi_ok) delete r;
                     tsfn.Release();
                   }];
  } @catch (NSException* ex) {
    tsfn.Release();
    Napi::Error::New(env, std::string("loadRestoreImage: ") + (ex.reason.UTF8String ?: "exception")).ThrowAsJavaScriptException();
  }
  return env.Undefined();
#else
  return NotOnIntel(env, "loadRestoreImage");
#endif
}

}  // namespace

void InitMacOSInstall(Napi::Env env, Napi::Object exports) {
  exports.Set("newMachineIdentifier", Napi::Function::New(env, NewMachineIdentifier, "newMachineIdentifier"));
  exports.Set("hardwareModelSupported", Napi::Function::New(env, HardwareModelSupported, "hardwareModelSupported"));
  exports.Set("createAuxiliaryStorage", Napi::Function::New(env, CreateAuxiliaryStorage, "createAuxiliaryStorage"));
  exports.Set("loadRestoreImage", Napi::Function::New(env, LoadRestoreImage, "loadRestoreImage"));
}

}  // namespace nvz
