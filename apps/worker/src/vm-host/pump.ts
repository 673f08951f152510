// The frame pump: VM (socketpair) → filter.fromVm → uplink and uplink → filter.fromHost → VM, in
// batches (FramePort: recvmmsg/sendmmsg on the socketpair and on the veth uplink's AF_PACKET
// socket — issue 20 —, or read/write loops on a TAP), zero-copy: the
// survivors of a batch are forwarded with one sendBatch over the receive area. Frames the
// other side cannot take right now (EAGAIN/ENOBUFS) are dropped and counted, like a NIC.
//
// The uplink side is a seam: on Linux an AF_PACKET socket or a TAP fd (wrapped in a FramePort here), on macOS a vmnet
// interface (VmnetPort from @fleet/native-vz/vz) — anything with the FramePort batch contract.
import { FramePort, type FrameBatch, type FramePortStats } from '@fleet/native-vz';
import { Verdict, type PacketFilter } from '@fleet/netfilter';

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
  /** Frames the filter passed/dropped per direction. */
  vmToHost: { passed: number; dropped: number };
  hostToVm: { passed: number; dropped: number };
}

export class FramePump {
  private readonly vm: FramePort;
  private readonly tap: FrameLink;
  private readonly vmToHost = { passed: 0, dropped: 0 };
  private readonly hostToVm = { passed: 0, dropped: 0 };

  /** `uplink`: an AF_PACKET socket or TAP fd (Linux) or an already-open FrameLink such as a VmnetPort (macOS); the pump owns and closes it. */
  constructor(vmFd: number, uplink: number | FrameLink, private readonly filter: PacketFilter, batch = 64) {
    // Ethernet frames from virtio-net/the uplink are ≤ 1514 bytes (offloads off on the veth ends):
    // 2 KiB slots suffice, larger datagrams are counted as rxTruncated.
    this.vm = new FramePort(vmFd, { batch, frameSize: 2048 });
    this.tap = typeof uplink === 'number' ? new FramePort(uplink, { batch, frameSize: 2048 }) : uplink;
  }

  start(): void {
    const fwd = (dir: 'vm' | 'host'): ((b: FrameBatch) => void) => {
      const size = Math.max(this.vm.batchSize, this.tap.batchSize);
      const offs = new Uint32Array(size);
      const lens = new Uint32Array(size);
      const judge = dir === 'vm' ? this.filter.fromVm.bind(this.filter) : this.filter.fromHost.bind(this.filter);
      const out = dir === 'vm' ? this.tap : this.vm;
      const tally = dir === 'vm' ? this.vmToHost : this.hostToVm;
      return (b) => {
        const now = Date.now();
        let k = 0;
        for (let i = 0; i < b.count; i++) {
          const o = b.offsets[i]!;
          const l = b.lengths[i]!;
          if (judge(b.buffer.subarray(o, o + l), now) === Verdict.PASS) {
            offs[k] = o;
            lens[k++] = l;
          }
        }
        tally.passed += k;
        tally.dropped += b.count - k;
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
