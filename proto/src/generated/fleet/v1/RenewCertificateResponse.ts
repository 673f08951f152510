// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface RenewCertificateResponse {
  'clientCertificatePem'?: (string);
  'notAfterUnixMs'?: (number | string | Long);
}

export interface RenewCertificateResponse__Output {
  'clientCertificatePem': (string);
  'notAfterUnixMs': (string);
}
