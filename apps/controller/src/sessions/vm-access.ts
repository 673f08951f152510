// How the fleet logs in to its VMs: one ed25519 key pair per VM (generated here, the
// public half injected into the guest through the assignment, the private half sealed at
// rest (secrets/vm-secrets.ts) and handed to the VM's worker inside each SessionOpen), and
// the guest's host key recorded on first use for each boot.
import { createHash } from 'node:crypto';
import { directSql, directWrite, insertRows, VM_ACCESS_COLUMNS, type FleetDb, type VmAccess } from '@fleet/db';
import { rowsByKey } from '../storage/rows-by-key.ts';
import { isUniqueViolation } from '../errors.ts';
import { generateEd25519KeyPair } from './ssh-key-pair.ts';
import type { VmSecrets } from '../secrets/vm-secrets.ts';

export const DEFAULT_GUEST_USER = 'fleet';

// Synchronous on purpose: generating on libuv's thread pool (ssh2's async generateKeyPair) took it
// off the main thread but gave the same creates/s and a 100–200 ms later `running` (p50) in
// interleaved runs (BENCHMARKS.md, control plane, issue 20). ssh-key-pair.ts makes it 3× cheaper.
export function generateVmKeyPair(vmName: string): { publicKey: string; privateKey: string } {
  return generateEd25519KeyPair(`fleet-vm-${vmName}`);
}

type AccessVm = { id: string; name: string; username?: string };

/**
 * The VM access rows for these VMs, creating the missing ones (new key pairs).
 *
 * Race-free: concurrent callers (two desired-state pushes, a push and a session) for the
 * same new VM all end with the one row that was inserted first. (Prisma's `upsert` with an
 * empty `update` is not a database upsert: it reads, then inserts, and the loser of the
 * race failed with a unique-constraint error on PostgreSQL.) The missing rows are inserted
 * in one statement; if another caller inserted one of them meanwhile, each is then created
 * on its own, and a unique violation means "someone else's row won": read it.
 */
export async function ensureVmAccess(db: FleetDb, secrets: VmSecrets, vms: ReadonlyArray<AccessVm>): Promise<Map<string, VmAccess>> {
  const out = new Map<string, VmAccess>();
  if (vms.length === 0) return out;
  const rows = await db.vmAccess.findMany({ where: { vmId: { in: vms.map((v) => v.id) } } });
  for (const r of rows) out.set(r.vmId, r);
  const missing = [...new Map(vms.filter((vm) => !out.has(vm.id)).map((vm) => [vm.id, vm])).values()];
  if (missing.length === 0) return out;
  const { fresh, inserted } = await insertFreshAccessRows(db, secrets, missing);
  if (inserted) {
    for (const row of await db.vmAccess.findMany({ where: { vmId: { in: fresh.map((f) => f.vmId) } } })) out.set(row.vmId, row);
    return out;
  }
  for (const data of fresh) out.set(data.vmId, await createVmAccessIfAbsent(db, data));
  return out;
}

/**
 * The session public key of each VM (what a desired-state push needs), creating the missing
 * access rows. Reads only the public keys: the rest of a row (sealed private key, password, host
 * key) is not needed there and would be mapped for every VM of the worker at every push.
 */
export async function vmPublicKeys(db: FleetDb, secrets: VmSecrets, vms: ReadonlyArray<AccessVm>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (vms.length === 0) return out;
  // Plain SQL (storage/rows-by-key.ts): every push reads the keys of all its worker's VMs (issue 20).
  for (const r of await rowsByKey(directSql(db), 'VmAccess', VM_ACCESS_COLUMNS, 'vmId', vms.map((v) => v.id), ['vmId', 'publicKey'])) out.set(r.vmId, r.publicKey);
  const missing = [...new Map(vms.filter((vm) => !out.has(vm.id)).map((vm) => [vm.id, vm])).values()];
  if (missing.length === 0) return out;
  // Just read as absent: insert their rows at once and take the public keys from what was
  // inserted (ensureVmAccess would read them again, twice, through Prisma: at every push with new
  // VMs, issue 20). If another caller inserted one meanwhile, the insert fails as a whole and
  // ensureVmAccess settles each VM on the row that won.
  const { fresh, inserted } = await insertFreshAccessRows(db, secrets, missing);
  if (inserted) {
    for (const f of fresh) out.set(f.vmId, f.publicKey);
    return out;
  }
  for (const [vmId, row] of await ensureVmAccess(db, secrets, missing)) out.set(vmId, row.publicKey);
  return out;
}

type FreshAccessRow = { vmId: string; username: string; publicKey: string; privateKey: string; privateKeySealed: string };

/**
 * New key pairs for these VMs (the private half sealed, bound to the row's vmId), inserted in one
 * statement; `inserted` is false, and nothing was inserted, if a row for one of them exists already.
 * A raw multi-row INSERT: createManyAndReturn would run Prisma's query compiler at every call. On
 * SQLite it shares a COMMIT with the other plain-SQL writes of the moment (issue 20: at every push
 * with new VMs it was an fsync of its own).
 */
async function insertFreshAccessRows(db: FleetDb, secrets: VmSecrets, vms: ReadonlyArray<AccessVm>): Promise<{ fresh: FreshAccessRow[]; inserted: boolean }> {
  const fresh = await Promise.all(
    vms.map(async (vm): Promise<FreshAccessRow> => {
      const pair = generateVmKeyPair(vm.name);
      return { vmId: vm.id, username: vm.username || DEFAULT_GUEST_USER, publicKey: pair.publicKey, ...(await secrets.sealNew(vm.id, pair.privateKey)) };
    }),
  );
  try {
    const createdAt = new Date();
    await directWrite(db, (sql) => insertRows(sql.raw, sql.provider, 'VmAccess', fresh.map((f) => ({ ...f, createdAt }))));
    return { fresh, inserted: true };
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    return { fresh, inserted: false };
  }
}

async function createVmAccessIfAbsent(db: FleetDb, data: FreshAccessRow): Promise<VmAccess> {
  try {
    return await db.vmAccess.create({ data });
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    // Inserted by a concurrent caller between our read and our insert: theirs is the VM's key pair.
    const row = await db.vmAccess.findUnique({ where: { vmId: data.vmId } });
    if (!row) throw err; // and removed again since (the VM was deleted): let the caller retry
    return row;
  }
}

/** "SHA256:<base64>" of an OpenSSH public key line ("ssh-ed25519 AAAA... comment"), as ssh-keygen -l prints it. */
export function hostKeyFingerprint(line: string): string {
  const blob = line.trim().split(/\s+/)[1] ?? '';
  return 'SHA256:' + createHash('sha256').update(Buffer.from(blob, 'base64')).digest('base64').replace(/=+$/, '');
}

/**
 * A valid single-line OpenSSH public key ("<type> <base64>"), normalised without its comment; else null.
 * ssh2 is imported here, at the first host key, not when the controller starts: nothing else in the
 * controller uses it, and loading it cost ~1.4 MiB of heap for the process's life (issue 20).
 */
export async function normaliseHostKey(line: string): Promise<string | null> {
  if (line.length > 4096) return null;
  const parts = line.trim().split(/\s+/);
  if (parts.length < 2) return null;
  const { default: ssh2 } = await import('ssh2');
  const parsed = ssh2.utils.parseKey(`${parts[0]} ${parts[1]}`);
  if (parsed instanceof Error) return null;
  return `${parts[0]} ${parts[1]}`;
}

/**
 * The host key recorded for this attempt of the VM, or null (= first use). The guest
 * generates its host key at boot, so a new attempt is a new first use, and the session
 * broker forgets the key whenever it sees the VM stop (a power cycle is a new boot).
 */
export function recordedHostKey(access: VmAccess, attempt: number): string | null {
  if (!access.hostKey || access.hostKeyAttempt !== attempt) return null;
  return access.hostKey;
}

/**
 * Records a host key seen on first use. Returns recorded=false (and records nothing)
 * when a different key is already recorded for the same boot: that is a mismatch.
 */
export async function recordHostKey(db: FleetDb, vmId: string, attempt: number, hostKey: string): Promise<{ recorded: boolean; previous: string | null }> {
  const access = await db.vmAccess.findUnique({ where: { vmId } });
  if (!access) return { recorded: false, previous: null };
  const current = recordedHostKey(access, attempt);
  if (current && current !== hostKey) return { recorded: false, previous: current };
  if (current === hostKey) return { recorded: true, previous: current };
  const now = new Date();
  await db.vmAccess.update({ where: { vmId }, data: { hostKey, hostKeyAttempt: attempt, hostKeyBootAt: now, hostKeySeenAt: now } });
  return { recorded: true, previous: access.hostKey };
}

/**
 * The VM stopped: its next boot has a new host key, so the next contact is a first use again.
 * `recordedBefore`: forget only a key recorded before then (a delayed retry must not forget
 * the key of a boot that came after the stop).
 */
export async function forgetHostKey(db: FleetDb, vmId: string, recordedBefore?: Date): Promise<void> {
  await db.vmAccess.updateMany({
    where: { vmId, hostKey: { not: null }, ...(recordedBefore ? { hostKeySeenAt: { lte: recordedBefore } } : {}) },
    data: { hostKey: null, hostKeyAttempt: null, hostKeyBootAt: null },
  });
}
