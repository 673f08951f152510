// macOS has no recvmmsg/sendmmsg. The FramePort (src/linux/frame_port.cc) is written against them;
// on darwin it is compiled with these loop-based stand-ins (one recvmsg/sendmsg per datagram), same
// semantics: return the number of messages handled, or -1 with errno if the first one failed.
#pragma once
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#ifndef MSG_NOSIGNAL
// Node ignores SIGPIPE process-wide; sockets from this addon also get SO_NOSIGPIPE.
#define MSG_NOSIGNAL 0
#endif

struct mmsghdr {
  struct msghdr msg_hdr;
  unsigned int msg_len;
};

static inline int recvmmsg(int fd, struct mmsghdr* v, unsigned int n, int flags, struct timespec* timeout) {
  (void)timeout;
  unsigned int i = 0;
  while (i < n) {
    ssize_t r = recvmsg(fd, &v[i].msg_hdr, flags);
    if (r < 0) {
      if (errno == EINTR) continue;  // retry the same message
      return i == 0 ? -1 : static_cast<int>(i);
    }
    v[i].msg_len = static_cast<unsigned int>(r);
    i++;
  }
  return static_cast<int>(i);
}

static inline int sendmmsg(int fd, struct mmsghdr* v, unsigned int n, int flags) {
  unsigned int i = 0;
  while (i < n) {
    ssize_t r = sendmsg(fd, &v[i].msg_hdr, flags);
    if (r < 0) {
      if (errno == EINTR) continue;  // retry the same message
      return i == 0 ? -1 : static_cast<int>(i);
    }
    v[i].msg_len = static_cast<unsigned int>(r);
    i++;
  }
  return static_cast<int>(i);
}

// macOS has no AF_PACKET (the veth uplink is Linux's). These stand-ins only let the shared
// FramePort compile: no socket on macOS has this domain, so the packet-socket paths never run.
#ifndef AF_PACKET
#include <stdint.h>
#define AF_PACKET (-1)
#define SOL_PACKET 263
#define PACKET_AUXDATA 8
#define PACKET_STATISTICS 6
#define TP_STATUS_CSUMNOTREADY (1 << 3)
#define TP_STATUS_VLAN_VALID (1 << 4)
struct tpacket_auxdata {
  uint32_t tp_status;
  uint32_t tp_len;
  uint32_t tp_snaplen;
  uint16_t tp_mac;
  uint16_t tp_net;
  uint16_t tp_vlan_tci;
  uint16_t tp_vlan_tpid;
};
struct tpacket_stats {
  unsigned int tp_packets;
  unsigned int tp_drops;
};
#endif
