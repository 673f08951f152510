// @fleet/native-vz, Linux half: module entry point. Context-aware (no global state), so it can be
// loaded in worker threads too.
#include "native_vz.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  nvz::InitFdUtil(env, exports);
  nvz::InitFramePort(env, exports);
  nvz::InitUnixSocket(env, exports);
  nvz::InitCopyFile(env, exports);
  nvz::InitProcessGuard(env, exports);
  nvz::InitPacketSocket(env, exports);
  exports.Set("platform", Napi::String::New(env, "linux"));
#ifdef FLEET_HAVE_LIBURING
  exports.Set("tapIoUringBuilt", Napi::Boolean::New(env, true));  // TAP ports batch through io_uring (tap_uring.h)
#else
  exports.Set("tapIoUringBuilt", Napi::Boolean::New(env, false));
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(native_vz, Init)
