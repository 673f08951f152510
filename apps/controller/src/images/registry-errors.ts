// How registry failures (OciError from @fleet/oci) reach an API caller: one FleetError with a
// stable code and the client's own message (written for operators, never carrying credentials),
// plus the fix where there is one.
import { OciError } from '@fleet/oci';
import { FleetError } from '../errors.ts';

/** The registry could not be reached at all (connection refused, DNS, timeout): 502. */
export const REGISTRY_UNREACHABLE = 'registry_unreachable';
/** The reference names nothing usable in the registry (not found, no access, bad manifest): 422. */
export const IMAGE_UNRESOLVABLE = 'image_unresolvable';
/** `fleet registry login` could not verify the credentials (refused, TLS): 422. */
export const REGISTRY_LOGIN_FAILED = 'registry_login_failed';

const UNREACHABLE: ReadonlySet<string> = new Set(['network', 'aborted']);

function loginHint(registry: string, code: string, message: string): string {
  if (message.includes('fleet registry login')) return '';
  if (code === 'unauthorized' || code === 'denied') return ` (store credentials for it: fleet registry login ${registry})`;
  if (code === 'tls') return ` (if the registry uses a private CA, give Fleet its CA certificate: fleet registry login ${registry})`;
  if (code === 'insecure-refused') return ` (if the registry is meant to be used over plain HTTP, mark it insecure: fleet registry login ${registry})`;
  return '';
}

/** The error of a failed resolve of `reference` (a registry reference) against `registry`. */
export function resolveError(err: unknown, reference: string, registry: string): FleetError {
  if (err instanceof FleetError) return err;
  if (!(err instanceof OciError)) return new FleetError(502, REGISTRY_UNREACHABLE, `cannot resolve ${reference}: ${err instanceof Error ? err.message : String(err)}`, { reference, registry });
  const details = { reference, registry, cause: err.code, ...(err.status !== undefined ? { status: err.status } : {}) };
  if (err.code === 'bad-reference') return new FleetError(400, 'bad_request', err.message, details);
  if (UNREACHABLE.has(err.code)) return new FleetError(502, REGISTRY_UNREACHABLE, `cannot resolve ${reference}: registry ${registry} is unreachable: ${err.message}`, details);
  return new FleetError(422, IMAGE_UNRESOLVABLE, `cannot resolve ${reference}: ${err.message}${loginHint(registry, err.code, err.message)}`, details);
}

/** The error of a failed credential check (`fleet registry login`) against `registry`. */
export function loginError(err: unknown, registry: string): FleetError {
  if (err instanceof FleetError) return err;
  if (!(err instanceof OciError)) return new FleetError(502, REGISTRY_UNREACHABLE, `cannot verify registry ${registry}: ${err instanceof Error ? err.message : String(err)}`, { registry });
  const details = { registry, cause: err.code, ...(err.status !== undefined ? { status: err.status } : {}) };
  if (UNREACHABLE.has(err.code)) {
    return new FleetError(502, REGISTRY_UNREACHABLE, `cannot verify registry ${registry}: it is unreachable: ${err.message} (to store the settings anyway, log in with verify=false / --no-verify)`, details);
  }
  const what = err.code === 'unauthorized' || err.code === 'denied' ? 'refused the credentials' : 'could not be verified';
  return new FleetError(422, REGISTRY_LOGIN_FAILED, `registry ${registry} ${what} (${err.code}): ${err.message}; nothing was stored`, details);
}
