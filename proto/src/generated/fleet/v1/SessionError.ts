// Original file: fleet/v1/worker.proto


export interface SessionError {
  'code'?: (string);
  'message'?: (string);
  'stage'?: (string);
}

export interface SessionError__Output {
  'code': (string);
  'message': (string);
  'stage': (string);
}
