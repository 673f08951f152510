// Ids of rows created on the per-VM hot path (VMs, allocations): UUIDv7 (RFC 9562), time-ordered.
//
// Why not random (v4) ids: every index keyed by a VM id (the VM's primary key, its access row,
// its allocations and events) then took each new row at a random place, so a commit wrote a
// different B-tree page for nearly every VM it held, and on SQLite each of those pages goes to the
// WAL and is fsynced (issue 20: COMMIT was the largest SQLite cost per VM). Time-ordered ids land
// next to each other. They still carry 74 random bits (unguessable as before) and say when the
// row was made, which the API shows anyway (createdAt).
import { v7 as uuidv7 } from 'uuid';

export function newRowId(): string {
  return uuidv7();
}
