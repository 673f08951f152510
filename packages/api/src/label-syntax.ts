// Label and selector syntax: Kubernetes' label rules and limits, so keys and values
// that work with kubectl work here and nothing else does (no spaces, quotes, markup,
// 500 000-character keys or nested objects).
//   key   = [prefix "/"] name
//   prefix = a DNS subdomain: lower-case labels of [a-z0-9-] joined by ".", at most 253 characters
//   name  = 1-63 of [A-Za-z0-9-_.], starting and ending with a letter or digit
//   value = "" or 0-63 of the name charset, starting and ending with a letter or digit
// At most 64 labels per object.

const DNS_LABEL = '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?';
const NAME = '[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?';

export const LABEL_KEY_PATTERN = `^((?=[^/]{1,253}/)${DNS_LABEL}(\\.${DNS_LABEL})*/)?${NAME}$`;
export const LABEL_VALUE_PATTERN = `^(${NAME})?$`;
export const LABEL_KEY_MAX_LENGTH = 253 + 1 + 63;
export const LABEL_VALUE_MAX_LENGTH = 63;
export const MAX_LABELS = 64;

const KEY = new RegExp(LABEL_KEY_PATTERN);
const VALUE = new RegExp(LABEL_VALUE_PATTERN);

/** Why a label key is invalid, or null when it is valid. */
export function labelKeyProblem(key: string): string | null {
  if (key.length === 0) return 'a label key must not be empty';
  if (key.length > LABEL_KEY_MAX_LENGTH || !KEY.test(key)) {
    return `label key ${JSON.stringify(key.slice(0, 80))}${key.length > 80 ? '…' : ''} must be an optional DNS-subdomain prefix (at most 253 characters) and "/", then a name of at most 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit`;
  }
  return null;
}

/** Why a label value is invalid, or null when it is valid. */
export function labelValueProblem(value: unknown): string | null {
  if (typeof value !== 'string') return 'a label value must be a string';
  if (value.length > LABEL_VALUE_MAX_LENGTH || !VALUE.test(value)) {
    return `label value ${JSON.stringify(value.slice(0, 80))}${value.length > 80 ? '…' : ''} must be empty or at most 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit`;
  }
  return null;
}
