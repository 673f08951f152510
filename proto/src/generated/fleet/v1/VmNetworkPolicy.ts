// Original file: fleet/v1/worker.proto


export interface VmNetworkPolicy {
  'allow'?: (string)[];
  'block'?: (string)[];
  'blockLocal'?: (boolean);
}

export interface VmNetworkPolicy__Output {
  'allow': (string)[];
  'block': (string)[];
  'blockLocal': (boolean);
}
