// The frame pump: VM (socketpair) → filter.fromVm → uplink and uplink → filter.fromHost → VM, in
// batches (FramePort: recvmmsg/sendmmsg on the socketpair and on the veth uplink's AF_PACKET
// socket — issue 20 —, or read/write loops on a TAP). The survivors of a batch are forwarded
// with one sendBatch: on the veth uplink into the port's send queue, which its sender thread
// writes, and it reads through a receive ring (UPLINK_SEND_QUEUE_BYTES, RX_RING_FRAMES below);
// elsewhere straight to the fd. Frames the other side (or a full queue) cannot take are dropped
// and counted, like a NIC.
//
// The uplink side is a seam: on Linux an AF_PACKET socket or a TAP fd (wrapped in a FramePort here), on macOS a vmnet
// interface (VmnetPort from @fleet/native-vz/vz) — anything with the FramePort batch contract.
import { FramePort, VNET_MAX_FRAME, fdInfo, type FrameBatch, type FramePortStats } from '@fleet/native-vz';
import { Verdict, type PacketFilter } from '@fleet/netfilter';
import { VNET_HDR_LEN, completeUdpChecksum, pendingDhcpChecksum } from './vnet-header.ts';

/** Counters of an uplink; FramePortStats and VmnetPortStats both fit. */
export type FrameLinkStats = { [k: string]: number | string | null };

/** The uplink contract the pump needs: zero-copy batches in, prefix-accepting batch sends out. */
export interface FrameLink {
  readonly batchSize: number;
  readonly closed: boolean;
  onBatch(cb: (batch: FrameBatch) => void): unknown;
  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  stats(): FrameLinkStats | FramePortStats;
  close(): void;
}

export interface PumpStats {
  vm: FramePortStats;
  /** The uplink's counters (AF_PACKET or TAP FramePort on Linux, vmnet on macOS); the key keeps its historical name. */
  tap: FrameLinkStats | FramePortStats;
  /** Frames the filter passed/dropped per direction; on the offload path also the passed frames that were GSO super-frames. */
  vmToHost: DirectionStats;
  hostToVm: DirectionStats;
}

export interface DirectionStats {
  /** Frames the filter passed. */
  passed: number;
  /** Frames the filter dropped (its own counters say why). */
  dropped: number;
  /** Offload path only: passed frames whose virtio-net header made them GSO super-frames (segmented by the kernel after the pump). */
  superFrames?: number;
  /**
   * Offload path, VM → host only: DHCP client messages whose header asked for a checksum at
   * offsets outside the frame, so it could not be completed before the filter may edit the
   * message; dropped before the filter (the kernel builds these headers: not expected in practice).
   */
  badChecksumHeader?: number;
}

/**
 * The veth uplink's send queue (FramePort `sendQueueBytes`, issue 20, sixth pass): the pump copies
 * the frames the filter passed into it and the port's sender thread writes them, so the kernel's
 * share of a sendmmsg into the veth (the delivery to the peer runs on the sending CPU) runs beside
 * the pump instead of after it. 1 MiB holds ~690 full-size frames (about 8 ms at 1 Gbit/s).
 * Frames a full queue cannot take are dropped and counted (txDrops, txQueueFull), as before when
 * the socket itself was full; its memory is touched only as far as traffic fills it.
 * Only there: `bench/frame-pump.ts` measured a sender thread on a TAP (a write per frame), on the
 * offload path's packet socket and on the VM's socketpair as no gain or a loss on two cores, where
 * the thread competes with the VM's own for the CPU.
 */
export const UPLINK_SEND_QUEUE_BYTES = 1 << 20;

/**
 * Receive-ring slots of an AF_PACKET port without the virtio-net header (the veth uplink;
 * FramePort `rxRingFrames`, issue 20): the kernel copies frames into memory shared with the pump
 * instead of the pump receiving them with recvmmsg. 1,024 slots of ~2 KiB: 2.1 MiB per port, about
 * the receive buffer the socket had.
 */
export const RX_RING_FRAMES = 1024;

/**
 * Frames per receive batch of plain frames (no virtio-net header), on both ports (issue 20,
 * eleventh pass). A batch is only as full as the queue behind it, so a quiet VM sees no
 * difference; under load one callback, one filter pass and one send carry up to 256 frames. On
 * the TAP uplink that is one io_uring call per round of reads and per 256 writes, and on the VM's
 * stream socket one sendmsg, so one wake-up of QEMU, per 256 frames instead of 64: host → VM TAP →
 * stream 7–70 % more frames/s than 64 in 10 of 11 back-to-back pairs (BENCHMARKS.md, frame pump,
 * eleventh pass), QEMU's side ("sink") up to a third less CPU per frame; the veth uplink the same
 * or better, the datagram framing the same within the noise. Cost: 512 KiB of receive area per
 * port (2 KiB slots) instead of 128, touched only as far as batches fill (the VM host process's RSS
 * after transfers with real guests: 50.0 MiB against 49.6).
 */
export const PLAIN_FRAME_BATCH = 256;

export interface FramePumpOptions {
  /** Frames per receive batch (default PLAIN_FRAME_BATCH; 32 with vnetHdr, whose slots are 64 KiB). */
  batch?: number;
  /**
   * The offload path (issue 20, `--vm-framing vnet`): both fds carry a virtio-net header before
   * every frame (an AF_PACKET socket with PACKET_VNET_HDR on QEMU's TAP, the uplink TAP opened
   * with IFF_VNET_HDR), so a frame may be a GSO super-frame of up to 64 KiB or have its checksum
   * pending. The filter judges the frame behind the header; the header travels on unchanged
   * (the kernel validates it on the way out), except that a DHCP client message's pending
   * checksum is completed first, since the filter may edit that message.
   */
  vnetHdr?: boolean;
  /** The uplink's send queue in bytes (default UPLINK_SEND_QUEUE_BYTES on the veth uplink, else 0); 0 sends on the pump's thread (benchmarks compare both). */
  sendQueueBytes?: number;
  /** Receive-ring slots of the veth uplink (default RX_RING_FRAMES); 0 receives with recvmmsg. */
  rxRingFrames?: number;
}

export class FramePump {
  private readonly vm: FramePort;
  private readonly tap: FrameLink;
  private readonly vmToHost: DirectionStats;
  private readonly hostToVm: DirectionStats;
  private readonly hdr: number;

  /** `uplink`: an AF_PACKET socket or TAP fd (Linux) or an already-open FrameLink such as a VmnetPort (macOS); the pump owns and closes it. */
  constructor(vmFd: number, uplink: number | FrameLink, private readonly filter: PacketFilter, opts: FramePumpOptions = {}) {
    const vnet = opts.vnetHdr ?? false;
    if (vnet && typeof uplink !== 'number') throw new Error('FramePump: the virtio-net header path needs a Linux uplink fd');
    this.hdr = vnet ? VNET_HDR_LEN : 0;
    this.vmToHost = vnet ? { passed: 0, dropped: 0, superFrames: 0, badChecksumHeader: 0 } : { passed: 0, dropped: 0 };
    this.hostToVm = vnet ? { passed: 0, dropped: 0, superFrames: 0 } : { passed: 0, dropped: 0 };
    const batch = opts.batch ?? (vnet ? 32 : PLAIN_FRAME_BATCH);
    // Plain Ethernet frames from virtio-net/the uplink are ≤ 1514 bytes (offloads off on the veth
    // ends): 2 KiB slots suffice, larger datagrams are counted as rxTruncated. With the header, a
    // slot holds the largest super-frame it can describe.
    const frameSize = vnet ? VNET_HDR_LEN + VNET_MAX_FRAME : 2048;
    // The veth uplink is an AF_PACKET socket; a TAP is a character device.
    const vethUplink = typeof uplink === 'number' && !vnet && fdInfo(uplink).kind !== 'char';
    const ring = opts.rxRingFrames ?? RX_RING_FRAMES;
    this.vm = new FramePort(vmFd, { batch, frameSize });
    this.tap =
      typeof uplink === 'number'
        ? new FramePort(uplink, { batch, frameSize, sendQueueBytes: opts.sendQueueBytes ?? (vethUplink ? UPLINK_SEND_QUEUE_BYTES : 0), rxRingFrames: vethUplink ? ring : 0 })
        : uplink;
  }

  start(): void {
    const fwd = (dir: 'vm' | 'host'): ((b: FrameBatch) => void) => {
      const size = Math.max(this.vm.batchSize, this.tap.batchSize);
      const offs = new Uint32Array(size);
      const lens = new Uint32Array(size);
      const judge = dir === 'vm' ? this.filter.fromVm.bind(this.filter) : this.filter.fromHost.bind(this.filter);
      const out = dir === 'vm' ? this.tap : this.vm;
      const tally = dir === 'vm' ? this.vmToHost : this.hostToVm;
      const hdr = this.hdr;
      return (b) => {
        const now = Date.now();
        let k = 0;
        let unjudged = 0;
        for (let i = 0; i < b.count; i++) {
          const o = b.offsets[i]!;
          const l = b.lengths[i]!;
          // A frame shorter than its header is judged as an empty (malformed) frame.
          if (hdr !== 0 && dir === 'vm' && pendingDhcpChecksum(b.buffer, o, l) && !completeUdpChecksum(b.buffer, o, l)) {
            unjudged++;
            continue;
          }
          if (judge(b.buffer.subarray(o + hdr, Math.max(o + hdr, o + l)), now) === Verdict.PASS) {
            offs[k] = o;
            lens[k++] = l;
            // virtio_net_hdr.gso_type (byte 1): anything but VIRTIO_NET_HDR_GSO_NONE.
            if (hdr !== 0 && b.buffer[o + 1] !== 0) tally.superFrames!++;
          }
        }
        tally.passed += k;
        tally.dropped += b.count - k - unjudged;
        if (unjudged !== 0) tally.badChecksumHeader! += unjudged;
        if (k > 0 && !out.closed) out.sendBatch(b.buffer, offs, lens, k);
      };
    };
    this.vm.onBatch(fwd('vm'));
    this.tap.onBatch(fwd('host'));
  }

  stats(): PumpStats {
    return { vm: this.vm.stats(), tap: this.tap.stats(), vmToHost: { ...this.vmToHost }, hostToVm: { ...this.hostToVm } };
  }

  close(): void {
    this.vm.close();
    this.tap.close();
  }
}
