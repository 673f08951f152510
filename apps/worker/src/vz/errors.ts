// Virtualization.framework failures → operator messages. The framework's own message is always
// kept (it is often the only precise detail); a kind and a remedy are added where we know one.
import { VZ_ERROR_DOMAIN, VZErrorCode, VzError } from '@fleet/native-vz/vz';

export type VzFailureKind =
  | 'limit-exceeded'
  | 'entitlement-missing'
  | 'invalid-configuration'
  | 'invalid-state'
  | 'disk'
  | 'out-of-disk-space'
  | 'not-supported'
  | 'network'
  | 'cancelled'
  | 'save-restore'
  | 'install'
  | 'internal'
  | 'other';

export interface VzFailure {
  kind: VzFailureKind;
  /** Shown to operators (InstanceStatus.message / DriverError). */
  message: string;
  /** The framework's domain/code, for logs. */
  domain: string;
  code: number;
}

export const MACOS_LIMIT_MESSAGE =
  'this host is already running the maximum number of macOS VMs Virtualization.framework allows (2, Apple licence); ' +
  'no macOS VM is placed here until one stops';

const ENTITLEMENT_RE = /com\.apple\.security\.virtualization|entitlement/i;

/** Maps any error from the vz layer (VzError, or a plain Error) to a failure with a clear message. */
export function mapVzError(err: unknown, operation: string): VzFailure {
  if (!(err instanceof VzError)) {
    const message = err instanceof Error ? err.message : String(err);
    return { kind: 'other', message: `${operation}: ${message}`, domain: 'unknown', code: 0 };
  }
  const fw = err.message; // already "<op>: <framework message> (<reason>)"
  const base = { domain: err.domain, code: err.code };
  if (ENTITLEMENT_RE.test(fw)) {
    return {
      ...base,
      kind: 'entitlement-missing',
      message: `${fw} — the VM host process runs on a node binary without the com.apple.security.virtualization entitlement; run \`fleet-worker install\` (or restart the worker) so it re-creates its signed node copy`,
    };
  }
  if (err.domain !== VZ_ERROR_DOMAIN) return { ...base, kind: 'other', message: fw };
  switch (err.code) {
    case VZErrorCode.VirtualMachineLimitExceeded:
      return { ...base, kind: 'limit-exceeded', message: `${operation}: ${MACOS_LIMIT_MESSAGE} (framework: ${fw})` };
    case VZErrorCode.InvalidVirtualMachineConfiguration:
      return { ...base, kind: 'invalid-configuration', message: `${operation}: the VM configuration is invalid: ${fw}` };
    case VZErrorCode.InvalidVirtualMachineState:
    case VZErrorCode.InvalidVirtualMachineStateTransition:
      return { ...base, kind: 'invalid-state', message: fw };
    case VZErrorCode.InvalidDiskImage:
      return { ...base, kind: 'disk', message: `${operation}: the disk image is not usable: ${fw}` };
    case VZErrorCode.OutOfDiskSpace:
      return { ...base, kind: 'out-of-disk-space', message: `${operation}: the host is out of disk space: ${fw}` };
    case VZErrorCode.NotSupported:
      return { ...base, kind: 'not-supported', message: `${operation}: not supported on this host or macOS version: ${fw}` };
    case VZErrorCode.NetworkError:
      return { ...base, kind: 'network', message: fw };
    case VZErrorCode.OperationCancelled:
      return { ...base, kind: 'cancelled', message: `${operation}: cancelled` };
    case VZErrorCode.Save:
    case VZErrorCode.Restore:
      return { ...base, kind: 'save-restore', message: fw };
    case VZErrorCode.RestoreImageCatalogLoadFailed:
    case VZErrorCode.InvalidRestoreImageCatalog:
    case VZErrorCode.NoSupportedRestoreImagesInCatalog:
    case VZErrorCode.RestoreImageLoadFailed:
    case VZErrorCode.InvalidRestoreImage:
    case VZErrorCode.InstallationFailed:
      return { ...base, kind: 'install', message: `${operation}: macOS installation failed: ${fw}` };
    case VZErrorCode.InstallationRequiresUpdate:
      return { ...base, kind: 'install', message: `${operation}: this IPSW needs a newer host: update macOS on the host (${fw})` };
    case VZErrorCode.Internal:
      // VZErrorDomain code 1 at start is what a macOS 15.2+ guest answers when its VM runs outside
      // a GUI login session (no unlocked keychain): the one cause of it we know and can name (issue 17).
      if (operation === 'start') {
        return {
          ...base,
          kind: 'internal',
          message:
            `${operation}: Virtualization.framework internal error (VZErrorDomain code 1): ${fw.replace(/\.$/, '')}. ` +
            "If this is a macOS guest: macOS 15.2 and later guests need the VM user's GUI login session — turn on automatic login for the worker's --vm-user " +
            '(System Settings → Users & Groups → Automatically log in as), log in once, and check with `fleet-worker doctor --driver vz --vm-user NAME` (docs/macos.md)',
        };
      }
      return { ...base, kind: 'internal', message: `${operation}: Virtualization.framework internal error: ${fw}` };
    default:
      return { ...base, kind: 'other', message: fw };
  }
}
