// @fleet/native-vz, macOS half: shared declarations (Objective-C++, ARC).
// NOT compiled or run on a Mac by the authors yet: see docs/macos.md.
#pragma once
#include <napi.h>
#include <string>

#ifdef __OBJC__
#import <Foundation/Foundation.h>
#endif

namespace nvz {

// fd utilities and FramePort, same JS contract as the Linux half (src/linux/native_vz.h).
Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what, const std::string& hint = "");
const char* ErrnoName(int err);
void InitFdUtil(Napi::Env env, Napi::Object exports);
void InitFramePort(Napi::Env env, Napi::Object exports);
// Unix stream rendezvous, peer credentials, fd passing (src/posix/unix_socket.cc).
void InitUnixSocket(Napi::Env env, Napi::Object exports);
// copyFileFromFd: fclonefileat / sparse copy from an open fd (src/posix/copy_file.cc).
void InitCopyFile(Napi::Env env, Napi::Object exports);

// Virtualization.framework: VirtualMachine class, capability queries, identifiers, restore images.
void InitVirtualMachine(Napi::Env env, Napi::Object exports);
void InitMacOSInstall(Napi::Env env, Napi::Object exports);
// vmnet.framework: VmnetInterface class.
void InitVmnet(Napi::Env env, Napi::Object exports);

#ifdef __OBJC__
// An NSError as a plain JS object { domain, code, message, reason? } (events) ...
Napi::Object NSErrorToObject(Napi::Env env, NSError* error);
// ... or as a thrown JS Error carrying .nsDomain / .nsCode (synchronous failures).
Napi::Error NSErrorToJs(Napi::Env env, NSError* error, const std::string& context);
NSString* ToNSString(const Napi::Value& v);
NSData* ToNSData(const Napi::Value& v);  // from a Buffer/Uint8Array; nil if not one
Napi::Buffer<uint8_t> FromNSData(Napi::Env env, NSData* data);
#endif

}  // namespace nvz
