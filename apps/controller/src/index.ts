export { startController, type ControllerHandle } from './controller.ts';
export { defaultOptions, type ControllerOptions } from './config.ts';
