// In-process notifications between the controller's parts: VM changes (for
// watch streams and the dashboard), workers whose desired state changed (for the
// gRPC push), and "something to schedule".
import { EventEmitter } from 'node:events';
import type { Vm } from '@fleet/db';

export type VmChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';
export interface VmChange {
  type: VmChangeType;
  vm: Vm;
}

export class FleetBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  vmChanged(change: VmChange): void {
    this.emitter.emit('vm', change);
  }
  onVmChange(listener: (c: VmChange) => void): () => void {
    this.emitter.on('vm', listener);
    return () => this.emitter.off('vm', listener);
  }
  get vmWatchers(): number {
    return this.emitter.listenerCount('vm');
  }

  desiredStateChanged(workerId: string): void {
    this.emitter.emit('desired', workerId);
  }
  onDesiredStateChange(listener: (workerId: string) => void): () => void {
    this.emitter.on('desired', listener);
    return () => this.emitter.off('desired', listener);
  }

  scheduleRequested(): void {
    this.emitter.emit('schedule');
  }
  onScheduleRequest(listener: () => void): () => void {
    this.emitter.on('schedule', listener);
    return () => this.emitter.off('schedule', listener);
  }
}
