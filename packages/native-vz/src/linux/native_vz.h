// @fleet/native-vz, Linux half: shared declarations.
#pragma once
#include <napi.h>
#include <string>

namespace nvz {

// An Error with .code ("EPERM"), .errno and .syscall set, message "<what>: <strerror>[: hint]".
Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what, const std::string& hint = "");
const char* ErrnoName(int err);

void InitFdUtil(Napi::Env env, Napi::Object exports);
void InitFramePort(Napi::Env env, Napi::Object exports);
// Unix stream rendezvous, peer credentials, fd passing (src/posix/unix_socket.cc).
void InitUnixSocket(Napi::Env env, Napi::Object exports);
// copyFileFromFd: clone / copy_file_range / sparse copy from an open fd (src/posix/copy_file.cc).
void InitCopyFile(Napi::Env env, Napi::Object exports);
void InitProcessGuard(Napi::Env env, Napi::Object exports);
// The veth uplink: AF_PACKET sockets opened inside a network namespace, veth offloads (packet_socket.cc).
void InitPacketSocket(Napi::Env env, Napi::Object exports);

}  // namespace nvz
