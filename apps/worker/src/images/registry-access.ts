// The RegistryAccess of a DesiredState as the registry client's options: proto3 fills absent
// fields with "" / false, and an empty username must mean anonymous, not a login as "".
import type { RegistryAccess } from '@fleet/oci';

export interface AccessFields {
  insecure?: boolean | null;
  caPem?: string | null;
  username?: string | null;
  password?: string | null;
}

export function clientAccess(a: AccessFields | null | undefined): RegistryAccess {
  return {
    insecure: a?.insecure === true,
    ...(a?.caPem ? { caPem: a.caPem } : {}),
    ...(a?.username ? { username: a.username, password: a.password ?? '' } : {}),
  };
}
