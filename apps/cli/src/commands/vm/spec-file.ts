// `fleet vm create -f spec.yaml|spec.json|-`: a VmCreate body (the API's field names) from a
// file or stdin, checked with the same rules as the flags; every error names the file and field.
import { readFile } from 'node:fs/promises';
import type { YAMLParseError } from 'yaml';
import type { VmCreate } from '@fleet/api';
import { macProblem, NETWORK_MODES, networkModeProblem, normalizeMac } from '@fleet/api/syntax';
import { UsageError } from '../../errors.ts';
import type { Runtime } from '../../runtime.ts';
import { parseChoice, parseInteger, parseLabels, validateName, validateUsername } from '../../validate.ts';
import { validatePassword } from '../vm-password.ts';
import { DRIVERS } from './shared.ts';

const MAX_BYTES = 1024 * 1024;

/** The VmCreate fields, in the order the API documents them. */
export const SPEC_FIELDS = [
  'name',
  'image',
  'os',
  'driver',
  'cpus',
  'memoryMib',
  'diskGib',
  'username',
  'password',
  'labels',
  'selector',
  'priority',
  'restartPolicy',
  'disconnectPolicy',
  'powerState',
  'network',
  'mac',
] as const;
const NETWORK_FIELDS = ['mode', 'allow', 'block', 'blockLocal'] as const;

/** A custom MAC checked with the API's own rule (unicast, not all zero, ":"-separated), lower case. */
export function parseMac(value: string, where: string): string {
  const problem = macProblem(value);
  if (problem) throw new UsageError(`invalid ${where}: ${problem}`);
  return normalizeMac(value);
}

/** Mode "none" has no NIC: rules or a MAC with it are refused here as the controller would. */
export function checkModeAndRules(network: VmCreate['network'], mac: string | undefined, where: string): void {
  const problem = networkModeProblem(network?.mode ?? 'nat', network ?? {}, mac);
  if (problem) throw new UsageError(`invalid ${where}: ${problem}`);
}
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const NETWORK_RULE = /^(@host|\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?)$/;

async function readStdin(rt: Runtime): Promise<string> {
  const stdin = rt.io.stdin;
  if (!stdin) throw new UsageError('-f -: no standard input to read');
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of stdin) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    bytes += b.length;
    if (bytes > MAX_BYTES) throw new UsageError('-f -: more than 1 MiB on stdin');
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads and parses the file (`-` = stdin): JSON or YAML (YAML is a superset of JSON). */
export async function readSpecFile(rt: Runtime, path: string): Promise<{ source: string; spec: Partial<VmCreate> }> {
  const source = path === '-' ? 'stdin' : path;
  let text: string;
  if (path === '-') text = await readStdin(rt);
  else {
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      throw new UsageError(`-f: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    if (Buffer.byteLength(text) > MAX_BYTES) throw new UsageError(`-f: ${path} is larger than 1 MiB`);
  }
  let doc: unknown;
  const json = /\.json$/i.test(path);
  // yaml is loaded only here, not at every start of the CLI (issue 16).
  const yaml = json ? undefined : await import('yaml');
  try {
    doc = yaml ? yaml.parse(text, { prettyErrors: true, uniqueKeys: true }) : JSON.parse(text);
  } catch (error) {
    const what = json ? 'JSON' : 'YAML';
    const message = error instanceof Error && error.name === 'YAMLParseError' ? (error as YAMLParseError).message.split('\n')[0] : (error as Error).message;
    throw new UsageError(`invalid ${source}: not valid ${what}: ${message}`);
  }
  return { source, spec: validateSpec(doc, source) };
}

/** Checks a parsed document as a VmCreate body (every field optional here: flags may add name and image). */
export function validateSpec(doc: unknown, source: string): Partial<VmCreate> {
  if (doc === null || doc === undefined) throw new UsageError(`invalid ${source}: the file is empty; expected a VM spec (name, image, cpus, …)`);
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new UsageError(`invalid ${source}: expected a mapping of VM spec fields (name, image, cpus, …), not ${Array.isArray(doc) ? 'a list' : `a ${typeof doc}`}`);
  const input = doc as Record<string, unknown>;
  const out: Partial<VmCreate> = {};
  const at = (field: string) => `${source}: ${field}`;
  const fail = (field: string, message: string): never => {
    throw new UsageError(`invalid ${source}: field "${field}" ${message}`);
  };
  const str = (field: string, v: unknown): string => (typeof v === 'string' ? v : fail(field, `must be a string, not ${describeType(v)}`));
  const int = (field: string, v: unknown, min: number, max: number): number => {
    if (typeof v !== 'number' && typeof v !== 'string') fail(field, `must be a whole number, not ${describeType(v)}`);
    return parseInteger(String(v), at(field), min, max);
  };
  const labels = (field: string, v: unknown): Record<string, string> => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return fail(field, `must be a mapping of key: value strings, not ${describeType(v)}`);
    const items = Object.entries(v as Record<string, unknown>).map(([k, val]) => {
      if (typeof val !== 'string') fail(`${field}.${k}`, `must be a string, not ${describeType(val)} (quote numbers and booleans: "1", "true")`);
      return `${k}=${val as string}`;
    });
    return parseLabels(items, at(field));
  };

  for (const key of Object.keys(input)) {
    if (!(SPEC_FIELDS as readonly string[]).includes(key)) {
      fail(key, `is not a VM spec field (expected one of ${SPEC_FIELDS.join(', ')})`);
    }
  }
  for (const key of SPEC_FIELDS) {
    const v = input[key];
    if (v === undefined) continue;
    switch (key) {
      case 'name':
        try {
          out.name = validateName(str(key, v), 'VM');
        } catch (err) {
          if (err instanceof UsageError && !err.message.startsWith(`invalid ${source}`)) fail(key, err.message.replace(/^invalid VM name/, 'is not a valid VM name'));
          throw err;
        }
        break;
      case 'image': {
        const image = str(key, v);
        if (!image.trim()) fail(key, 'must not be empty');
        if (image.length > 512) fail(key, 'is longer than 512 characters');
        if (CONTROL.test(image)) fail(key, 'contains a control character');
        out.image = image;
        break;
      }
      case 'os':
        out.os = parseChoice(str(key, v), at(key), ['linux', 'macos'] as const);
        break;
      case 'driver':
        out.driver = str(key, v) === '' ? '' : parseChoice(str(key, v), at(key), DRIVERS);
        break;
      case 'cpus':
        out.cpus = int(key, v, 1, 256);
        break;
      case 'memoryMib':
        out.memoryMib = int(key, v, 128, 4 * 1024 * 1024);
        break;
      case 'diskGib':
        out.diskGib = int(key, v, 1, 65536);
        break;
      case 'username':
        try {
          out.username = validateUsername(str(key, v));
        } catch (err) {
          if (err instanceof UsageError && err.message.startsWith('invalid --username')) fail(key, err.message.replace(/^invalid --username "[^"]*": /, 'must be '));
          throw err;
        }
        break;
      case 'password':
        out.password = validatePassword(str(key, v), at(key));
        break;
      case 'labels':
        out.labels = labels(key, v);
        break;
      case 'selector':
        out.selector = labels(key, v);
        break;
      case 'priority':
        out.priority = int(key, v, -1000, 1000);
        break;
      case 'restartPolicy':
        out.restartPolicy = parseChoice(str(key, v), at(key), ['never', 'on-failure'] as const);
        break;
      case 'disconnectPolicy':
        out.disconnectPolicy = parseChoice(str(key, v), at(key), ['reschedule', 'wait'] as const);
        break;
      case 'powerState':
        out.powerState = parseChoice(str(key, v), at(key), ['running', 'stopped'] as const);
        break;
      case 'network': {
        if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(key, `must be a mapping (mode, allow, block, blockLocal), not ${describeType(v)}`);
        const n = v as Record<string, unknown>;
        for (const k of Object.keys(n)) if (!(NETWORK_FIELDS as readonly string[]).includes(k)) fail(`network.${k}`, `is not a network field (expected one of ${NETWORK_FIELDS.join(', ')})`);
        const rules = (field: 'allow' | 'block'): string[] | undefined => {
          const list = n[field];
          if (list === undefined) return undefined;
          if (!Array.isArray(list)) return fail(`network.${field}`, `must be a list of IPv4 CIDRs, addresses or @host, not ${describeType(list)}`);
          if (list.length > 64) fail(`network.${field}`, 'has more than 64 entries');
          return list.map((r, i) => {
            if (typeof r !== 'string' || !NETWORK_RULE.test(r)) fail(`network.${field}[${i}]`, `must be an IPv4 CIDR (10.0.0.0/8), an address, or @host; got ${JSON.stringify(r)}`);
            return r as string;
          });
        };
        const network: NonNullable<VmCreate['network']> = {};
        if (n.mode !== undefined) network.mode = parseChoice(str('network.mode', n.mode), at('network.mode'), NETWORK_MODES);
        const allow = rules('allow');
        const block = rules('block');
        if (allow) network.allow = allow;
        if (block) network.block = block;
        if (n.blockLocal !== undefined) {
          if (typeof n.blockLocal !== 'boolean') fail('network.blockLocal', `must be true or false, not ${describeType(n.blockLocal)}`);
          network.blockLocal = n.blockLocal as boolean;
        }
        out.network = network;
        break;
      }
      case 'mac':
        out.mac = parseMac(str(key, v), at(key));
        break;
    }
  }
  checkModeAndRules(out.network, out.mac, source);
  return out;
}

function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v === 'number' ? 'the number' : typeof v === 'boolean' ? 'the boolean' : `a ${typeof v}`} ${JSON.stringify(v)}`;
}
