// Original file: fleet/v1/worker.proto


export interface Welcome {
  'protocolVersion'?: (number);
  'workerId'?: (string);
  'workerName'?: (string);
  'controllerVersion'?: (string);
  'heartbeatIntervalMs'?: (number);
  'fenceAfterMs'?: (number);
  'controllerAddresses'?: (string)[];
}

export interface Welcome__Output {
  'protocolVersion': (number);
  'workerId': (string);
  'workerName': (string);
  'controllerVersion': (string);
  'heartbeatIntervalMs': (number);
  'fenceAfterMs': (number);
  'controllerAddresses': (string)[];
}
