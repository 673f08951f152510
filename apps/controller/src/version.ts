/** Reported in Welcome, /v1/info and the worker list. */
export const CONTROLLER_VERSION = '0.1.0';
