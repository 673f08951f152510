// Client-side checks that mirror the API's schema, so that most mistakes are
// caught before a request is sent, with a message naming the flag.
import { labelKeyProblem, labelValueProblem, MAX_LABELS, NAME_PATTERN as API_NAME_PATTERN, VM_STATES as API_VM_STATES } from '@fleet/api/syntax';
import { UsageError } from './errors.ts';

// The same rules as the API's (@fleet/api), so a mistake is named before the request is sent.
export const NAME_PATTERN = new RegExp(API_NAME_PATTERN);
const USERNAME_PATTERN = /^[a-z_][a-z0-9_-]*$/;

export const VM_STATES = API_VM_STATES;
export const ROLES = ['read', 'write', 'connect', 'admin'] as const;

export function validateName(value: string, what: string): string {
  if (!NAME_PATTERN.test(value)) {
    throw new UsageError(
      `invalid ${what} name "${value}": use lower-case letters, digits and dashes, starting and ending with a letter or digit, at most 63 characters`,
    );
  }
  return value;
}

function checkLabelKey(key: string, item: string, flag: string): void {
  const problem = labelKeyProblem(key);
  if (problem) throw new UsageError(`invalid ${flag} "${item}": ${problem}`);
}

/** Repeated `k=v` flags → a record. */
export function parseLabels(items: string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq < 0) throw new UsageError(`invalid ${flag} "${item}": expected key=value`);
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    checkLabelKey(key, item, flag);
    const problem = labelValueProblem(value);
    if (problem) throw new UsageError(`invalid ${flag} "${item}": ${problem}`);
    out[key] = value;
  }
  if (Object.keys(out).length > MAX_LABELS) throw new UsageError(`too many ${flag} values: at most ${MAX_LABELS}`);
  return out;
}

/** `k=v` sets a label, `k-` removes it (as in `kubectl label`). */
export function parseLabelEdits(items: string[], flag: string): { set: Record<string, string>; remove: string[] } {
  const remove: string[] = [];
  const sets: string[] = [];
  for (const item of items) {
    if (!item.includes('=') && item.endsWith('-')) {
      const key = item.slice(0, -1);
      checkLabelKey(key, item, flag);
      remove.push(key);
    } else {
      if (!item.includes('=')) throw new UsageError(`invalid ${flag} "${item}": expected key=value, or key- to remove a label`);
      sets.push(item);
    }
  }
  return { set: parseLabels(sets, flag), remove };
}

export function applyLabelEdits(current: Record<string, string>, edits: { set: Record<string, string>; remove: string[] }): Record<string, string> {
  const next = { ...current };
  for (const key of edits.remove) delete next[key];
  Object.assign(next, edits.set);
  return next;
}

export function parseInteger(value: string, flag: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(value.trim())) throw new UsageError(`invalid ${flag} "${value}": expected a whole number`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`invalid ${flag} "${value}": must be between ${min} and ${max}`);
  return n;
}

export function parseChoice<T extends string>(value: string, flag: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`invalid ${flag} "${value}": expected one of ${choices.join(', ')}`);
  }
  return value as T;
}

export function validateUsername(value: string): string {
  if (value !== '' && (!USERNAME_PATTERN.test(value) || value.length > 64)) {
    throw new UsageError(`invalid --username "${value}": lower-case letters, digits, "_" and "-", starting with a letter or "_", at most 64 characters`);
  }
  return value;
}

/** Collects a repeatable commander option into an array. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
