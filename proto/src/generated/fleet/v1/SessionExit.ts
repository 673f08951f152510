// Original file: fleet/v1/worker.proto


export interface SessionExit {
  'code'?: (number);
  'signal'?: (string);
}

export interface SessionExit__Output {
  'code': (number);
  'signal': (string);
}
