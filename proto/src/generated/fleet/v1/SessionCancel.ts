// Original file: fleet/v1/worker.proto


export interface SessionCancel {
  'sessionId'?: (string);
  'reason'?: (string);
}

export interface SessionCancel__Output {
  'sessionId': (string);
  'reason': (string);
}
