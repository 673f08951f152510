// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface TransferProgress {
  'bytesDone'?: (number | string | Long);
  'bytesTotal'?: (number | string | Long);
}

export interface TransferProgress__Output {
  'bytesDone': (string);
  'bytesTotal': (string);
}
