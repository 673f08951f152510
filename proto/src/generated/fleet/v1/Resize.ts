// Original file: fleet/v1/worker.proto


export interface Resize {
  'rows'?: (number);
  'cols'?: (number);
}

export interface Resize__Output {
  'rows': (number);
  'cols': (number);
}
