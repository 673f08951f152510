// Original file: fleet/v1/worker.proto


export interface VmNetworkPolicy {
  'allow'?: (string)[];
  'block'?: (string)[];
  'blockLocal'?: (boolean);
  'mode'?: (string);
}

export interface VmNetworkPolicy__Output {
  'allow': (string)[];
  'block': (string)[];
  'blockLocal': (boolean);
  'mode': (string);
}
