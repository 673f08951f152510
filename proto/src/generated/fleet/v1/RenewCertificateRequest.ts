// Original file: fleet/v1/worker.proto


export interface RenewCertificateRequest {
  'csrPem'?: (string);
}

export interface RenewCertificateRequest__Output {
  'csrPem': (string);
}
