/** Reported in Hello.worker_version. */
export const WORKER_VERSION = '0.1.0';
