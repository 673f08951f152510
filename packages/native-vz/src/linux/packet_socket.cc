// @fleet/native-vz, Linux half: the veth uplink (issue 20). A VM's uplink is a veth pair whose
// bridge-side end is a port of the worker's NAT bridge and whose other end is the only interface
// of a per-VM network namespace. The worker (root) opens an AF_PACKET socket on that end and
// hands it to the unprivileged VM host process, which moves frames with recvmmsg/sendmmsg
// (FramePort) instead of one read()/write() per frame on a TAP.
//
// Namespaces are entered on a short-lived std::thread: setns(CLONE_NEWNET) changes only the
// calling thread's namespace, and a socket stays in the namespace it was created in for its whole
// life (bind() resolves ifindexes there), so the JS thread never leaves its own namespace.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "native_vz.h"

namespace nvz {
namespace {

struct Failure {
  int err = 0;
  std::string what;
};

// Runs fn() on a fresh thread that first enters the network namespace at nsPath (empty = the
// caller's namespace, no thread needed but one is used anyway for a single code path).
template <typename Fn>
Failure InNetns(const std::string& nsPath, Fn fn) {
  Failure f;
  std::thread t([&]() {
    if (!nsPath.empty()) {
      int nsfd = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0) {
        f = {errno, "open " + nsPath};
        return;
      }
      int r = setns(nsfd, CLONE_NEWNET);
      int e = errno;
      close(nsfd);
      if (r != 0) {
        f = {e, "setns " + nsPath};
        return;
      }
    }
    f = fn();
  });
  t.join();
  return f;
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, std::string* out, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) {
    Napi::TypeError::New(info.Env(), std::string(what) + " must be a string").ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

bool IfNameOk(Napi::Env env, const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos) {
    Napi::RangeError::New(env, "interface name must be 1.." + std::to_string(IFNAMSIZ - 1) + " bytes without '/'")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

int OptInt(const Napi::Object& o, const char* k, int dflt) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : dflt;
}
bool OptBool(const Napi::Object& o, const char* k, bool dflt) {
  Napi::Value v = o.Get(k);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : dflt;
}

// openPacketSocket(nsPath: string ('' = own netns), ifname, { rcvbuf, sndbuf, qdiscBypass,
//                  ignoreOutgoing, auxdata }) -> { fd, ifindex }
Napi::Value OpenPacketSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ns, ifname;
  if (!ArgString(info, 0, &ns, "netns path") || !ArgString(info, 1, &ifname, "ifname")) return env.Undefined();
  if (!IfNameOk(env, ifname)) return env.Undefined();
  Napi::Object o = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
  const int rcvbuf = OptInt(o, "rcvbuf", 0), sndbuf = OptInt(o, "sndbuf", 0);
  const bool bypass = OptBool(o, "qdiscBypass", false), ignoreOut = OptBool(o, "ignoreOutgoing", true);
  const bool auxdata = OptBool(o, "auxdata", true);
  const bool vnetHdr = OptBool(o, "vnetHdr", false);
  int fd = -1;
  unsigned ifindex = 0;
  Failure f = InNetns(ns, [&]() -> Failure {
    // Protocol 0: the socket receives nothing until bind() names ETH_P_ALL and the ifindex, so no
    // frame of another interface is ever queued on it.
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) return {errno, "socket(AF_PACKET)"};
    auto fail = [&](const char* what) -> Failure {
      Failure r{errno, what};
      close(s);
      return r;
    };
    ifindex = if_nametoindex(ifname.c_str());
    if (ifindex == 0) return fail(("if_nametoindex " + ifname).c_str());
    int one = 1;
    // Frames this socket sends are not looped back to it (PACKET_IGNORE_OUTGOING, Linux 4.20).
    if (ignoreOut && setsockopt(s, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0) return fail("PACKET_IGNORE_OUTGOING");
    if (bypass && setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) != 0) return fail("PACKET_QDISC_BYPASS");
    // Aux data tells a frame whose checksum is not filled in yet or whose VLAN tag the device
    // stripped; FramePort drops and counts those (QEMU without a vnet header cannot take them).
    if (auxdata && setsockopt(s, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) != 0) return fail("PACKET_AUXDATA");
    // Every frame read or written starts with a struct virtio_net_hdr (10 bytes): a GSO
    // super-frame (up to 64 KiB) or a frame whose checksum is still to be filled in travels as
    // one, with what the kernel needs to finish it (issue 20, the offload path).
    if (vnetHdr && setsockopt(s, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) != 0) return fail("PACKET_VNET_HDR");
    if (rcvbuf > 0 && setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0 &&
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0)
      return fail("SO_RCVBUF");
    if (sndbuf > 0 && setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0 &&
        setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) != 0)
      return fail("SO_SNDBUF");
    struct sockaddr_ll a;
    memset(&a, 0, sizeof a);
    a.sll_family = AF_PACKET;
    a.sll_protocol = htons(ETH_P_ALL);
    a.sll_ifindex = static_cast<int>(ifindex);
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return fail("bind(AF_PACKET)");
    fd = s;
    return {};
  });
  if (f.err != 0) {
    ErrnoError(env, f.err, f.what, f.err == EPERM ? "needs CAP_NET_RAW (root)" : "").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("fd", Napi::Number::New(env, fd));
  r.Set("ifindex", Napi::Number::New(env, ifindex));
  return r;
}

// openVnetTap(nsPath ('' = own netns), name, offloads: number (TUN_F_* bits), up: boolean)
//   -> { fd, name, ifindex }
// A TAP with IFF_VNET_HDR: every read()/write() carries a struct virtio_net_hdr (10 bytes) before
// the frame, so GSO super-frames and frames with a pending checksum cross it whole. `offloads`
// (TUNSETOFFLOAD) says what the kernel may hand to the reader that way; 0 = plain frames only.
// Created (or, if it exists and the caller may, attached) inside the namespace at nsPath, on a
// short-lived thread like openPacketSocket; `up` brings the link up there (SIOCSIFFLAGS). Close-on-
// exec, non-blocking. A TAP that did not exist is not persistent: it goes with the last fd.
Napi::Value OpenVnetTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ns, ifname;
  if (!ArgString(info, 0, &ns, "netns path") || !ArgString(info, 1, &ifname, "ifname")) return env.Undefined();
  if (!IfNameOk(env, ifname)) return env.Undefined();
  if (info.Length() < 4 || !info[2].IsNumber() || !info[3].IsBoolean()) {
    Napi::TypeError::New(env, "openVnetTap(nsPath, ifname, offloads, up)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const unsigned offloads = info[2].As<Napi::Number>().Uint32Value();
  const unsigned known = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
  if ((offloads & ~known) != 0 || ((offloads & (TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)) != 0 && (offloads & TUN_F_CSUM) == 0)) {
    Napi::RangeError::New(env, "openVnetTap: offloads must be TUN_F_CSUM|TSO4|TSO6|TSO_ECN bits, segmentation only with TUN_F_CSUM")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const bool up = info[3].As<Napi::Boolean>().Value();
  int fd = -1;
  unsigned ifindex = 0;
  Failure f = InNetns(ns, [&]() -> Failure {
    int t = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (t < 0) return {errno, "open /dev/net/tun"};
    auto fail = [&](const std::string& what) -> Failure {
      Failure r{errno, what};
      close(t);
      return r;
    };
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    memcpy(ifr.ifr_name, ifname.data(), ifname.size());
    if (ioctl(t, TUNSETIFF, &ifr) != 0) return fail("ioctl TUNSETIFF " + ifname);
    // The header is struct virtio_net_hdr (10 bytes), the size AF_PACKET's PACKET_VNET_HDR uses.
    int hdr = 10;
    if (ioctl(t, TUNSETVNETHDRSZ, &hdr) != 0) return fail("ioctl TUNSETVNETHDRSZ");
    if (ioctl(t, TUNSETOFFLOAD, static_cast<unsigned long>(offloads)) != 0) return fail("ioctl TUNSETOFFLOAD");
    ifindex = if_nametoindex(ifname.c_str());
    if (ifindex == 0) return fail("if_nametoindex " + ifname);
    if (up) {
      int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (s < 0) return fail("socket(AF_INET)");
      struct ifreq fr;
      memset(&fr, 0, sizeof fr);
      memcpy(fr.ifr_name, ifname.data(), ifname.size());
      int r = ioctl(s, SIOCGIFFLAGS, &fr);
      if (r == 0) {
        fr.ifr_flags |= IFF_UP;
        r = ioctl(s, SIOCSIFFLAGS, &fr);
      }
      int e = errno;
      close(s);
      if (r != 0) {
        errno = e;
        return fail("SIOCSIFFLAGS up " + ifname);
      }
    }
    fd = t;
    return {};
  });
  if (f.err != 0) {
    ErrnoError(env, f.err, f.what, f.err == EPERM ? "needs CAP_NET_ADMIN, or a TAP owned by this user" : "").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("fd", Napi::Number::New(env, fd));
  r.Set("name", Napi::String::New(env, ifname));
  r.Set("ifindex", Napi::Number::New(env, ifindex));
  return r;
}

// linkStats(nsPath ('' = own netns), ifname) -> { rxPackets, rxBytes, rxDropped, txPackets,
// txBytes, txDropped } — the kernel's counters of an interface (IFLA_STATS64), read over a
// NETLINK_ROUTE socket opened inside the namespace on a short-lived thread (sysfs shows only the
// namespace it was mounted in). Lets the worker report what a VM's TAP dropped in the kernel.
Napi::Value LinkStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ns, ifname;
  if (!ArgString(info, 0, &ns, "netns path") || !ArgString(info, 1, &ifname, "ifname")) return env.Undefined();
  if (!IfNameOk(env, ifname)) return env.Undefined();
  rtnl_link_stats64 st;
  memset(&st, 0, sizeof st);
  Failure f = InNetns(ns, [&]() -> Failure {
    unsigned ifindex = if_nametoindex(ifname.c_str());
    if (ifindex == 0) return {errno, "if_nametoindex " + ifname};
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0) return {errno, "socket(AF_NETLINK)"};
    struct {
      nlmsghdr nh;
      ifinfomsg ifi;
    } req;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg));
    req.nh.nlmsg_type = RTM_GETLINK;
    req.nh.nlmsg_flags = NLM_F_REQUEST;
    req.nh.nlmsg_seq = 1;
    req.ifi.ifi_family = AF_UNSPEC;
    req.ifi.ifi_index = static_cast<int>(ifindex);
    if (send(s, &req, req.nh.nlmsg_len, 0) < 0) {
      Failure r{errno, "send RTM_GETLINK"};
      close(s);
      return r;
    }
    alignas(nlmsghdr) char buf[16384];
    ssize_t n = recv(s, buf, sizeof buf, 0);
    int e = errno;
    close(s);
    if (n < 0) return {e, "recv RTM_GETLINK"};
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_ERROR) {
        const nlmsgerr* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        return {err->error < 0 ? -err->error : EPROTO, "RTM_GETLINK " + ifname};
      }
      if (h->nlmsg_type != RTM_NEWLINK) continue;
      ifinfomsg* ifi = static_cast<ifinfomsg*>(NLMSG_DATA(h));
      int len = static_cast<int>(IFLA_PAYLOAD(h));
      for (rtattr* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == IFLA_STATS64 && RTA_PAYLOAD(a) >= sizeof st) {
          memcpy(&st, RTA_DATA(a), sizeof st);
          return {};
        }
      }
    }
    return {EPROTO, "RTM_GETLINK " + ifname + ": no IFLA_STATS64"};
  });
  if (f.err != 0) {
    ErrnoError(env, f.err, f.what).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("rxPackets", Napi::Number::New(env, static_cast<double>(st.rx_packets)));
  r.Set("rxBytes", Napi::Number::New(env, static_cast<double>(st.rx_bytes)));
  r.Set("rxDropped", Napi::Number::New(env, static_cast<double>(st.rx_dropped)));
  r.Set("txPackets", Napi::Number::New(env, static_cast<double>(st.tx_packets)));
  r.Set("txBytes", Napi::Number::New(env, static_cast<double>(st.tx_bytes)));
  r.Set("txDropped", Napi::Number::New(env, static_cast<double>(st.tx_dropped)));
  return r;
}

// The legacy per-feature ethtool commands: simple, and enough for what we turn off.
struct Feature {
  const char* name;
  uint32_t get, set;
};
constexpr Feature kFeatures[] = {
    {"txChecksum", ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM}, {"sg", ETHTOOL_GSG, ETHTOOL_SSG},
    {"tso", ETHTOOL_GTSO, ETHTOOL_STSO},              {"gso", ETHTOOL_GGSO, ETHTOOL_SGSO},
    {"gro", ETHTOOL_GGRO, ETHTOOL_SGRO},
};

Failure Ethtool(int s, const std::string& ifname, uint32_t cmd, uint32_t* data) {
  struct ethtool_value ev;
  ev.cmd = cmd;
  ev.data = *data;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, ifname.c_str(), ifname.size());
  ifr.ifr_data = reinterpret_cast<char*>(&ev);
  if (ioctl(s, SIOCETHTOOL, &ifr) != 0) return {errno, "SIOCETHTOOL " + ifname};
  *data = ev.data;
  return {};
}

// linkOffloads(nsPath, ifname, disable: boolean) -> { txChecksum, sg, tso, gso, gro } (as read
// back after the change). disable=true turns all five off: a frame from the host stack must reach
// the VM as a plain ≤ MTU frame with its checksum filled in (no GSO super-frames, no
// CHECKSUM_PARTIAL), because QEMU's `-netdev dgram` carries no virtio-net header.
Napi::Value LinkOffloads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ns, ifname;
  if (!ArgString(info, 0, &ns, "netns path") || !ArgString(info, 1, &ifname, "ifname")) return env.Undefined();
  if (!IfNameOk(env, ifname)) return env.Undefined();
  const bool disable = info.Length() > 2 && info[2].ToBoolean().Value();
  uint32_t values[sizeof kFeatures / sizeof kFeatures[0]] = {};
  Failure f = InNetns(ns, [&]() -> Failure {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return {errno, "socket(AF_INET)"};
    Failure r;
    if (disable) {
      // TSO/GSO/GRO first, then checksum and SG (which the segmentation offloads depend on).
      for (int i : {2, 3, 4, 1, 0}) {
        uint32_t zero = 0;
        r = Ethtool(s, ifname, kFeatures[i].set, &zero);
        // EOPNOTSUPP: the driver has no such switch (then the feature cannot be on either).
        if (r.err == EOPNOTSUPP) r = {};
        if (r.err != 0) break;
      }
    }
    for (size_t i = 0; r.err == 0 && i < sizeof kFeatures / sizeof kFeatures[0]; i++) {
      r = Ethtool(s, ifname, kFeatures[i].get, &values[i]);
      if (r.err == EOPNOTSUPP) r = {};
    }
    close(s);
    return r;
  });
  if (f.err != 0) {
    ErrnoError(env, f.err, f.what).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object r = Napi::Object::New(env);
  for (size_t i = 0; i < sizeof kFeatures / sizeof kFeatures[0]; i++) r.Set(kFeatures[i].name, Napi::Boolean::New(env, values[i] != 0));
  return r;
}

// packetRebind(fd, ifindex): bind() an existing packet socket to another ifindex — what a
// compromised VM host process could try. Exposed for the isolation test; returns errno (0 = ok).
Napi::Value PacketRebind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "packetRebind(fd, ifindex)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct sockaddr_ll a;
  memset(&a, 0, sizeof a);
  a.sll_family = AF_PACKET;
  a.sll_protocol = htons(ETH_P_ALL);
  a.sll_ifindex = info[1].As<Napi::Number>().Int32Value();
  int r = bind(info[0].As<Napi::Number>().Int32Value(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  return Napi::Number::New(env, r == 0 ? 0 : errno);
}

}  // namespace

void InitPacketSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("openPacketSocket", Napi::Function::New(env, OpenPacketSocket));
  exports.Set("linkOffloads", Napi::Function::New(env, LinkOffloads));
  exports.Set("openVnetTap", Napi::Function::New(env, OpenVnetTap));
  exports.Set("linkStats", Napi::Function::New(env, LinkStats));
  exports.Set("packetRebind", Napi::Function::New(env, PacketRebind));
}

}  // namespace nvz
