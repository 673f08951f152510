// Original file: fleet/v1/worker.proto


export interface EnrollRequest {
  'protocolVersion'?: (number);
  'bootstrapToken'?: (string);
  'name'?: (string);
  'machineId'?: (string);
  'csrPem'?: (string);
}

export interface EnrollRequest__Output {
  'protocolVersion': (number);
  'bootstrapToken': (string);
  'name': (string);
  'machineId': (string);
  'csrPem': (string);
}
