// @fleet/native-vz, macOS half: conversions between Foundation and N-API values.
#import <Foundation/Foundation.h>

#include "vz_darwin.h"

namespace nvz {

Napi::Object NSErrorToObject(Napi::Env env, NSError* error) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("domain", Napi::String::New(env, error.domain.UTF8String ?: "unknown"));
  o.Set("code", Napi::Number::New(env, static_cast<double>(error.code)));
  o.Set("message", Napi::String::New(env, error.localizedDescription.UTF8String ?: "unknown error"));
  NSString* reason = error.localizedFailureReason;
  if (reason != nil) o.Set("reason", Napi::String::New(env, reason.UTF8String ?: ""));
  return o;
}

Napi::Error NSErrorToJs(Napi::Env env, NSError* error, const std::string& context) {
  std::string msg = context + ": " + (error.localizedDescription.UTF8String ?: "unknown error");
  NSString* reason = error.localizedFailureReason;
  if (reason != nil) msg += std::string(" (") + (reason.UTF8String ?: "") + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("nsDomain", Napi::String::New(env, error.domain.UTF8String ?: "unknown"));
  e.Set("nsCode", Napi::Number::New(env, static_cast<double>(error.code)));
  return e;
}

NSString* ToNSString(const Napi::Value& v) {
  if (!v.IsString()) return nil;
  std::string s = v.As<Napi::String>().Utf8Value();
  return [[NSString alloc] initWithBytes:s.data() length:s.size() encoding:NSUTF8StringEncoding];
}

NSData* ToNSData(const Napi::Value& v) {
  if (!v.IsTypedArray()) return nil;
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) return nil;
  Napi::Uint8Array u8 = v.As<Napi::Uint8Array>();
  return [NSData dataWithBytes:u8.Data() length:u8.ByteLength()];
}

Napi::Buffer<uint8_t> FromNSData(Napi::Env env, NSData* data) {
  return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(data.bytes), data.length);
}

}  // namespace nvz
