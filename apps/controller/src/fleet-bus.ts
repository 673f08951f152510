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

/**
 * What a schedule request is about. `created`: only these VMs were added, pending (committed
 * creates): the scheduler may add them to its in-memory queue instead of reloading everything.
 * No hint: anything may have changed (capacity freed, a worker came back, a restart is due).
 */
export interface ScheduleHint {
  created?: readonly Vm[];
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

  scheduleRequested(hint?: ScheduleHint): void {
    this.emitter.emit('schedule', hint);
  }
  onScheduleRequest(listener: (hint?: ScheduleHint) => void): () => void {
    this.emitter.on('schedule', listener);
    return () => this.emitter.off('schedule', listener);
  }
}
