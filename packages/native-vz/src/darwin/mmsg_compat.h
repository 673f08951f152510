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
