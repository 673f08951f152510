// Original file: fleet/v1/worker.proto


export interface RegistryAccess {
  'insecure'?: (boolean);
  'caPem'?: (string);
  'username'?: (string);
  'password'?: (string);
}

export interface RegistryAccess__Output {
  'insecure': (boolean);
  'caPem': (string);
  'username': (string);
  'password': (string);
}
