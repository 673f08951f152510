// @fleet/native-vz, Linux: process attributes Node core cannot set (prctl). Used by the VM host
// process after it started as an unprivileged VM user (apps/worker/src/vm-host): its QEMU runs
// as the same uid, so the host makes itself non-dumpable — then a same-uid process (an escaped
// QEMU) can neither ptrace it nor open its /proc/<pid>/{mem,fd} (ptrace_may_access refuses a
// non-dumpable target without CAP_SYS_PTRACE), and cannot reach the TAP fd or the filter's memory.
#include <errno.h>
#include <string.h>
#include <sys/prctl.h>

#include "native_vz.h"

namespace nvz {

namespace {

Napi::Value Fail(Napi::Env env, const char* what) {
  int err = errno;
  Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

// setNonDumpable(): prctl(PR_SET_DUMPABLE, 0) — process-wide (per mm), survives until execve.
Napi::Value SetNonDumpable(const Napi::CallbackInfo& info) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return Fail(info.Env(), "prctl(PR_SET_DUMPABLE)");
  return info.Env().Undefined();
}

// setNoNewPrivs(): prctl(PR_SET_NO_NEW_PRIVS, 1) for the calling thread and what it execs.
Napi::Value SetNoNewPrivs(const Napi::CallbackInfo& info) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Fail(info.Env(), "prctl(PR_SET_NO_NEW_PRIVS)");
  return info.Env().Undefined();
}

// processGuard(): { dumpable, noNewPrivs } of the calling thread, for status and tests.
Napi::Value ProcessGuard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  if (dumpable < 0) return Fail(env, "prctl(PR_GET_DUMPABLE)");
  int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
  if (nnp < 0) return Fail(env, "prctl(PR_GET_NO_NEW_PRIVS)");
  Napi::Object o = Napi::Object::New(env);
  o.Set("dumpable", Napi::Boolean::New(env, dumpable != 0));
  o.Set("noNewPrivs", Napi::Boolean::New(env, nnp != 0));
  return o;
}

}  // namespace

void InitProcessGuard(Napi::Env env, Napi::Object exports) {
  exports.Set("setNonDumpable", Napi::Function::New(env, SetNonDumpable, "setNonDumpable"));
  exports.Set("setNoNewPrivs", Napi::Function::New(env, SetNoNewPrivs, "setNoNewPrivs"));
  exports.Set("processGuard", Napi::Function::New(env, ProcessGuard, "processGuard"));
}

}  // namespace nvz
