// TypeBox's Value.Errors knows only TypeBox kinds; the API writes some schemas as plain JSON
// Schema through Type.Unsafe (labels and selectors: propertyNames + patternProperties). This
// teaches Value the JSON Schema keywords those use, so the create form checks them in the browser
// exactly as the API does (instead of throwing "Unknown type").
import { Kind, TypeRegistry } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

interface PlainSchema {
  type?: string;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  maxProperties?: number;
  propertyNames?: PlainSchema;
  patternProperties?: Record<string, PlainSchema>;
  additionalProperties?: boolean;
  [key: string]: unknown;
}

function checkString(schema: PlainSchema, value: unknown): boolean {
  if (typeof value !== 'string') return false;
  if (schema.minLength !== undefined && value.length < schema.minLength) return false;
  if (schema.maxLength !== undefined && value.length > schema.maxLength) return false;
  if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) return false;
  return true;
}

/** A nested TypeBox schema (with a Kind other than Unsafe) is checked by Value; plain JSON Schema here. */
function check(schema: PlainSchema, value: unknown): boolean {
  const kind = (schema as Record<symbol, unknown>)[Kind];
  if (typeof kind === 'string' && kind !== 'Unsafe') return Value.Check(schema as never, value);
  if (schema.type === 'string') return checkString(schema, value);
  if (schema.type === 'object') return checkObject(schema, value);
  return true;
}

function checkObject(schema: PlainSchema, value: unknown): boolean {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const entries = Object.entries(value as Record<string, unknown>);
  if (schema.maxProperties !== undefined && entries.length > schema.maxProperties) return false;
  const patterns = Object.entries(schema.patternProperties ?? {}).map(([p, s]) => [new RegExp(p, 'u'), s] as const);
  for (const [key, v] of entries) {
    if (schema.propertyNames && !checkString(schema.propertyNames, key)) return false;
    const matching = patterns.filter(([re]) => re.test(key));
    if (matching.length === 0 && schema.additionalProperties === false) return false;
    for (const [, s] of matching) if (!check(s, v)) return false;
  }
  return true;
}

if (!TypeRegistry.Has('Unsafe')) TypeRegistry.Set<PlainSchema>('Unsafe', (schema, value) => check(schema, value));
