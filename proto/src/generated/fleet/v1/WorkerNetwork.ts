// Original file: fleet/v1/worker.proto


export interface WorkerNetwork {
  'mode'?: (string);
  'subnet'?: (string);
  'gateway'?: (string);
  'addresses'?: (number);
  'interface'?: (string);
}

export interface WorkerNetwork__Output {
  'mode': (string);
  'subnet': (string);
  'gateway': (string);
  'addresses': (number);
  'interface': (string);
}
