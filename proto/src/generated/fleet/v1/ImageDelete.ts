// Original file: fleet/v1/worker.proto


export interface ImageDelete {
  'digest'?: (string);
}

export interface ImageDelete__Output {
  'digest': (string);
}
