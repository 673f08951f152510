// @fleet/native-vz, Linux: an AF_PACKET socket's receive ring (PACKET_RX_RING, TPACKET_V2) for
// FramePort (issue 20).
//
// Why: with recvmmsg the pump's thread pays, per frame, the dequeue of an skb, its copy to user
// memory and its release (memcg accounting included): the larger part of host → VM cost on the
// veth uplink. With a ring the kernel copies each frame into memory shared with this process
// where it receives it (the sender's softirq) and frees the skb there; the pump's thread only
// walks the ring: no system call per batch, one memcpy per frame into the port's receive area
// (so JS keeps the FrameBatch contract), and the slot goes back to the kernel at once.
//
// What recvmmsg + PACKET_AUXDATA reported, the ring's per-frame status reports too: a pending
// checksum (TP_STATUS_CSUMNOTREADY), a VLAN tag moved into metadata (TP_STATUS_VLAN_VALID), a
// frame cut at the slot (tp_snaplen < tp_len). Drops when the ring is full stay in
// PACKET_STATISTICS. Not for PACKET_VNET_HDR sockets (their frames reach 64 KiB: slots that large
// would cost megabytes per port).
#pragma once
#ifdef __linux__

#include <errno.h>
#include <linux/if_packet.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace nvz {

class PacketRing {
 public:
  enum class Verdict { kFrame, kCsumPartial, kVlanStripped, kTruncated };

  PacketRing() = default;
  PacketRing(const PacketRing&) = delete;
  PacketRing& operator=(const PacketRing&) = delete;
  ~PacketRing() { Unmap(); }

  // Sets up a ring of about `frames` slots, each able to hold a frame of `max_frame` bytes, on a
  // bound AF_PACKET socket. Returns 0 or an errno (the socket is unchanged then, except perhaps
  // its TPACKET version, which only rings use).
  int Setup(int fd, size_t max_frame, size_t frames) {
    int v = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) != 0) return errno;
    // Where the kernel puts a frame in its slot: after the header and sockaddr_ll, aligned so the
    // network header is 16-byte aligned (tpacket_rcv's netoff); a slot holds that plus the frame.
    size_t mac_room = TPACKET_ALIGN(TPACKET2_HDRLEN + 16);
    slot_ = TPACKET_ALIGN(mac_room + max_frame);
    long page = sysconf(_SC_PAGESIZE);
    block_ = static_cast<size_t>(page > 0 ? page : 4096);
    while (block_ < 16 * slot_ && block_ < (1u << 22)) block_ <<= 1;  // ≥ 16 slots per block
    per_block_ = block_ / slot_;
    size_t blocks = (frames + per_block_ - 1) / per_block_;
    if (blocks == 0) blocks = 1;
    tpacket_req req;
    memset(&req, 0, sizeof req);
    req.tp_block_size = static_cast<unsigned>(block_);
    req.tp_block_nr = static_cast<unsigned>(blocks);
    req.tp_frame_size = static_cast<unsigned>(slot_);
    req.tp_frame_nr = static_cast<unsigned>(blocks * per_block_);
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) != 0) return errno;
    size_t len = block_ * blocks;
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      int e = errno;
      memset(&req, 0, sizeof req);  // tear the ring down again
      setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req);
      return e;
    }
    map_ = static_cast<uint8_t*>(m);
    map_len_ = len;
    frames_ = blocks * per_block_;
    pos_ = 0;
    return 0;
  }

  bool active() const { return map_ != nullptr; }
  size_t frames() const { return frames_; }
  size_t bytes() const { return map_len_; }

  // The next frame the kernel has handed over, or false. On kFrame, `data`/`len` describe it
  // (valid until Release()); every other verdict is a frame to drop (and count) — Release() it too.
  bool Next(Verdict& verdict, const uint8_t*& data, uint32_t& len) {
    tpacket2_hdr* h = Header(pos_);
    uint32_t status = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
    if ((status & TP_STATUS_USER) == 0) return false;
    data = reinterpret_cast<const uint8_t*>(h) + h->tp_mac;
    len = h->tp_snaplen;
    if (h->tp_mac + static_cast<size_t>(h->tp_snaplen) > slot_) verdict = Verdict::kTruncated;  // cannot happen; never read past the slot
    else if (h->tp_snaplen < h->tp_len) verdict = Verdict::kTruncated;
    else if (status & TP_STATUS_CSUMNOTREADY) verdict = Verdict::kCsumPartial;
    else if (status & TP_STATUS_VLAN_VALID) verdict = Verdict::kVlanStripped;
    else verdict = Verdict::kFrame;
    return true;
  }

  // Whether the kernel has handed over the next slot (one load; no system call).
  bool Ready() const { return (__atomic_load_n(&Header(pos_)->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) != 0; }

  // Gives the current slot back to the kernel and moves on.
  void Release() {
    __atomic_store_n(&Header(pos_)->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    pos_ = pos_ + 1 == frames_ ? 0 : pos_ + 1;
  }

  void Unmap() {
    if (map_ != nullptr) munmap(map_, map_len_);
    map_ = nullptr;
    map_len_ = 0;
  }

 private:
  tpacket2_hdr* Header(size_t i) const {
    return reinterpret_cast<tpacket2_hdr*>(map_ + (i / per_block_) * block_ + (i % per_block_) * slot_);
  }

  uint8_t* map_ = nullptr;
  size_t map_len_ = 0;
  size_t slot_ = 0, block_ = 0, per_block_ = 0, frames_ = 0, pos_ = 0;
};

}  // namespace nvz

#endif  // __linux__
