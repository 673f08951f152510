// @fleet/worker — the agent on each host: enrollment, the controller link, the reconcile
// loop and the VM runtimes (drivers).
export { startWorker, type StartWorkerOptions, type WorkerHandle, type WorkerExit } from './worker.ts';
export { enrollWorker, EnrollmentError, type EnrollWorkerOptions, type EnrollWorkerResult, type EnrollmentErrorCode } from './enrollment/enroll.ts';
export {
  DriverError,
  instanceKey,
  type Driver,
  type DriverCapabilities,
  type CreateInstanceRequest,
  type UpdateInstanceRequest,
  type InstanceRef,
  type InstanceSpec,
  type InstanceState,
  type InstanceStatus,
  type InstanceStatusListener,
} from './drivers/driver.ts';
export { SyntheticDriver, SYNTHETIC_DRIVER_NAME, SYNTHETIC_DELAYS_MS, parseSyntheticImage, type SyntheticDriverOptions } from './drivers/synthetic.ts';
export { openDriver, AVAILABLE_DRIVERS, DEFAULT_NAT_NAME, DEFAULT_NAT_SUBNET, type QemuRuntimeOptions } from './drivers/registry.ts';
export { Reconciler, type ReconcilerOptions } from './reconcile/reconciler.ts';
export { ControllerLink, controllerChannelOptions, CONTROLLER_TLS_NAME, type ControllerLinkOptions, type LinkExit, type LinkHandlers } from './link/link.ts';
export { Backoff, type BackoffOptions } from './link/backoff.ts';
export { CredentialStore, CredentialError, NotEnrolledError, type WorkerIdentity, type StoredCredentials } from './config/credentials.ts';
export { detectCapacity, type CapacityConfig } from './config/capacity.ts';
export { resolveDataDir, dataDirLayout, DATA_DIR_ENV } from './config/paths.ts';
export { parseLabels } from './config/labels.ts';
export { createLogger, silentLogger, type Logger } from './logger.ts';
export { WORKER_VERSION } from './version.ts';
