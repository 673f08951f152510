// @fleet/native-vz, macOS half: the FramePort is the Linux one (src/linux/frame_port.cc: libuv
// readiness, fixed receive area, prefix-accepting sends) compiled against loop-based
// recvmmsg/sendmmsg stand-ins. On macOS a full datagram socket answers ENOBUFS, which the port
// already counts and never throws for.
#include "mmsg_compat.h"
#include "../linux/frame_port.cc"
