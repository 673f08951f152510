// `fleet-worker doctor`: the worker's lease from the controller (client-side fencing, issue 12).
// An expired lease is why "reschedule" VMs are stopped on a worker that cannot reach its controller.
import { ok, skip, warn, fail, type Finding } from './check.ts';
import { leaseFilePath, parseLeaseFile, readLeaseFileContent } from '../fencing/lease-file.ts';

export function checkLease(dataDir: string, now = Date.now()): Finding {
  const file = leaseFilePath(dataDir);
  const content = readLeaseFileContent(file);
  if (content === undefined) return skip(`no ${file} yet: the worker has not been welcomed by a controller`);
  const lease = parseLeaseFile(content);
  if (!lease) return fail(`${file} is not a valid lease file: reschedule VMs will not start until the worker reaches its controller`, 'start the worker (fleet-worker run): it rewrites the file on its first lease renewal');
  if (lease.validUntilUnixMs === null) return ok('no fencing (the controller asked for none)');
  const left = lease.validUntilUnixMs - now;
  if (left > 0) return ok(`valid for ${Math.ceil(left / 1000)} s more (renewed ${Math.max(0, Math.round((now - lease.renewedAtUnixMs) / 1000))} s ago; fence after ${lease.fenceAfterMs / 1000} s)`);
  return warn(
    `expired ${Math.round(-left / 1000)} s ago: VMs with disconnect policy reschedule are stopped on this host until the worker reaches its controller again (wait VMs keep running)`,
    'check that fleet-worker runs and reaches the controller (see the controller check above)',
  );
}
