// Roles of API tokens (service accounts). `admin` implies every role, `write`
// implies `read`. `connect` (exec / ssh / port-forward) is separate on purpose: a
// CI job can reach its VMs without being able to create or delete any.
export const ROLES = ['read', 'write', 'connect', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(value: string): value is Role {
  return (ROLES as readonly string[]).includes(value);
}

export function hasRole(granted: readonly Role[], required: Role): boolean {
  if (granted.includes('admin')) return true;
  if (required === 'read') return granted.includes('read') || granted.includes('write');
  return granted.includes(required);
}

export function parseRoles(csv: string): Role[] {
  return csv.split(',').map((r) => r.trim()).filter(isRole);
}
