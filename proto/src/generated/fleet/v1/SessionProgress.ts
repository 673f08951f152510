// Original file: fleet/v1/worker.proto


export interface SessionProgress {
  'stage'?: (string);
  'message'?: (string);
}

export interface SessionProgress__Output {
  'stage': (string);
  'message': (string);
}
