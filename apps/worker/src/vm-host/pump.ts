// The frame pump: VM (socketpair) → filter.fromVm → TAP and TAP → filter.fromHost → VM, in
// batches (FramePort: recvmmsg on the socketpair, a read loop on the TAP), zero-copy: the
// survivors of a batch are forwarded with one sendBatch over the receive area. Frames the
// other side cannot take right now (EAGAIN/ENOBUFS) are dropped and counted, like a NIC.
import { FramePort, type FrameBatch, type FramePortStats } from '@fleet/native-vz';
import { Verdict, type PacketFilter } from '@fleet/netfilter';

export interface PumpStats {
  vm: FramePortStats;
  tap: FramePortStats;
  /** Frames the filter passed/dropped per direction. */
  vmToHost: { passed: number; dropped: number };
  hostToVm: { passed: number; dropped: number };
}

export class FramePump {
  private readonly vm: FramePort;
  private readonly tap: FramePort;
  private readonly vmToHost = { passed: 0, dropped: 0 };
  private readonly hostToVm = { passed: 0, dropped: 0 };

  constructor(vmFd: number, tapFd: number, private readonly filter: PacketFilter, batch = 64) {
    // Ethernet frames from virtio-net/TAP are ≤ 1514 bytes (no offloads): 2 KiB slots suffice,
    // larger datagrams are counted as rxTruncated.
    this.vm = new FramePort(vmFd, { batch, frameSize: 2048 });
    this.tap = new FramePort(tapFd, { batch, frameSize: 2048 });
  }

  start(): void {
    const fwd = (dir: 'vm' | 'host'): ((b: FrameBatch) => void) => {
      const offs = new Uint32Array(this.vm.batchSize);
      const lens = new Uint32Array(this.vm.batchSize);
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
