// `fleet-worker doctor`: composes the checks for one data dir and driver and runs them.
import { resolveDataDir } from '../config/paths.ts';
import { DEFAULT_DRIVER } from '../drivers/registry.ts';
import { runChecks, skip, type Check, type DoctorReport } from './check.ts';
import { checkControllers } from './controller.ts';
import { driverChecks } from './driver.ts';
import { checkCertificateValidity, checkCredentials, checkDataDir, loadEnrollment, type LoadedEnrollment } from './enrollment.ts';
import { checkLease } from './lease.ts';
import { checkNativeAddon } from './native-addon.ts';
import { checkNodeVersion } from './node-version.ts';

export interface DoctorOptions {
  dataDir?: string;
  driver?: string;
  /** vz driver: the VM users to check for a GUI login session (names or uids): `--vm-user` of `fleet-worker run`. */
  vmUsers?: readonly string[];
  /** Per-step timeout of the controller check (default 3 s). */
  controllerStepTimeoutMs?: number;
}

export function doctorChecks(options: DoctorOptions = {}): Check[] {
  const dataDir = resolveDataDir(options.dataDir);
  let enrollment: Promise<LoadedEnrollment> | undefined;
  const loaded = (): Promise<LoadedEnrollment> => (enrollment ??= loadEnrollment(dataDir));
  return [
    { name: 'node', run: async () => checkNodeVersion() },
    { name: 'data dir', run: () => checkDataDir(dataDir) },
    { name: 'enrollment', run: async () => checkCredentials(dataDir, await loaded()) },
    { name: 'certificate', run: async () => checkCertificateValidity(dataDir, await loaded()) },
    {
      name: 'controller',
      timeoutMs: 4 * (options.controllerStepTimeoutMs ?? 3_000) + 1_000,
      run: async () => {
        const l = await loaded();
        if (!l.ok) return skip('no readable enrollment, so no controller address');
        const { identity, caPem, keyPem, certPem } = l.credentials;
        return checkControllers({
          addresses: identity.controllers,
          caPem,
          keyPem,
          certPem,
          ...(options.controllerStepTimeoutMs !== undefined ? { stepTimeoutMs: options.controllerStepTimeoutMs } : {}),
        });
      },
    },
    { name: 'controller lease', run: async () => checkLease(dataDir) },
    { name: 'native addon', run: () => checkNativeAddon() },
    ...driverChecks({ driver: options.driver ?? DEFAULT_DRIVER, dataDir, ...(options.vmUsers ? { vmUsers: options.vmUsers } : {}) }),
  ];
}

export function runDoctor(options: DoctorOptions = {}): Promise<DoctorReport> {
  return runChecks(doctorChecks(options));
}
