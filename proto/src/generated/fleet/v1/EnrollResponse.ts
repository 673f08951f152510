// Original file: fleet/v1/worker.proto


export interface EnrollResponse {
  'workerId'?: (string);
  'workerName'?: (string);
  'clientCertificatePem'?: (string);
  'caCertificatePem'?: (string);
  'controllerAddresses'?: (string)[];
}

export interface EnrollResponse__Output {
  'workerId': (string);
  'workerName': (string);
  'clientCertificatePem': (string);
  'caCertificatePem': (string);
  'controllerAddresses': (string)[];
}
