// The API's plain syntax rules, without TypeBox: cheap to import where start-up time matters
// (the CLI checks flags with them before a request is sent).
export * from './label-syntax.ts';

/** Names of VMs, workers, tokens and accounts (a DNS label). */
export const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';

/** Every state a VM can be in (docs/architecture.md, State model). */
export const VM_STATES = ['pending', 'scheduled', 'starting', 'running', 'stopping', 'stopped', 'unknown', 'failed', 'deleting'] as const;
export type VmState = (typeof VM_STATES)[number];
export * from './network-syntax.ts';
