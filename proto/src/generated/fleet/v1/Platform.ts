// Original file: fleet/v1/worker.proto


export interface Platform {
  'os'?: (string);
  'arch'?: (string);
}

export interface Platform__Output {
  'os': (string);
  'arch': (string);
}
