// @fleet/native-vz, macOS half: module entry point. Exports the same fd utilities and FramePort as
// the Linux half, plus Virtualization.framework (VirtualMachine, identities, restore images) and
// vmnet (VmnetInterface). The exact JS interface is src/vz-types.ts (VzAddon).
// NOT compiled or run on a Mac by the authors yet (docs/macos.md).
#include "vz_darwin.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  nvz::InitFdUtil(env, exports);
  nvz::InitFramePort(env, exports);
  nvz::InitUnixSocket(env, exports);
  nvz::InitCopyFile(env, exports);
  nvz::InitVirtualMachine(env, exports);
  nvz::InitMacOSInstall(env, exports);
  nvz::InitVmnet(env, exports);
  exports.Set("platform", Napi::String::New(env, "darwin"));
  return exports;
}

}  // namespace

NODE_API_MODULE(native_vz, Init)
