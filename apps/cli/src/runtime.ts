// What every command needs: output (JSON or human, colours), the config file,
// the resolved controller target and an API client built from the global flags.
import type { Command } from 'commander';
import { ApiClient } from './client/api-client.ts';
import { registerControllerUrls } from './client/controller-endpoints.ts';
import { pinControllerCa } from './client/controller-trust.ts';
import { configPath, loadConfig, resolveTarget, saveConfig, type Config, type Target } from './config/contexts.ts';
import { UsageError } from './errors.ts';
import { colorEnabled, type Io } from './io.ts';
import { makeColors, type Colors } from './output/color.ts';
import { parseDuration } from './output/durations.ts';
import { formatKeyValues, formatTable } from './output/table.ts';

/** `-o`: the default table, JSON (the API objects), wide (more columns), or one name per line. */
export const OUTPUT_FORMATS = ['json', 'wide', 'name'] as const;
export type OutputFormat = 'table' | (typeof OUTPUT_FORMATS)[number];

/** What a list or get command can show: `rt.render` picks by -o (or --json / --wide). */
export interface Rendering<T> {
  /** The API objects (`-o json` / `--json`). */
  json: unknown;
  items: T[];
  /** `-o name`: one line per item. */
  name: (item: T) => string;
  /** The human view; `wide` with `-o wide` or the command's own --wide. */
  human: (wide: boolean) => void;
  /** Said on stderr instead of an empty table. */
  empty?: string;
}

export interface GlobalOptions {
  json?: boolean;
  output?: string;
  context?: string;
  /** --url, repeatable (each value may also be a comma-separated list). */
  url?: string[];
  token?: string;
  requestTimeout?: string;
}

export class Runtime {
  readonly colors: Colors;

  constructor(readonly io: Io) {
    this.colors = makeColors(colorEnabled(io));
  }

  now(): number {
    return this.io.now ? this.io.now() : Date.now();
  }

  get signal(): AbortSignal | undefined {
    return this.io.signal;
  }

  out(text: string): void {
    this.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** Progress and notes for people: stderr, so stdout stays clean for pipes. */
  note(text: string): void {
    this.io.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** A warning or a per-item error that does not stop the command. */
  warn(text: string): void {
    this.io.stderr.write(`fleet: ${text}\n`);
  }

  /** --json output: one JSON document. */
  json(value: unknown): void {
    this.io.stdout.write(JSON.stringify(value, null, 2) + '\n');
  }

  /** --json output of streams (watch, logs --follow): one compact JSON document per line. */
  jsonLine(value: unknown): void {
    this.io.stdout.write(JSON.stringify(value) + '\n');
  }

  table(headers: string[], rows: string[][]): void {
    this.io.stdout.write(formatTable(headers, rows));
  }

  keyValues(pairs: [string, string][]): void {
    this.io.stdout.write(formatKeyValues(pairs));
  }

  globals(cmd: Command): GlobalOptions {
    return cmd.optsWithGlobals<GlobalOptions>();
  }

  /** -o json|wide|name (--json is -o json); 'table' when neither is given. */
  output(cmd: Command): OutputFormat {
    const g = this.globals(cmd);
    const o = g.output;
    if (o === undefined) return g.json === true ? 'json' : 'table';
    if (!(OUTPUT_FORMATS as readonly string[]).includes(o)) {
      throw new UsageError(`invalid --output "${o}": expected one of ${OUTPUT_FORMATS.join(', ')}`);
    }
    if (g.json === true && o !== 'json') throw new UsageError(`--json and -o ${o} cannot be used together (--json is -o json)`);
    return o as OutputFormat;
  }

  isJson(cmd: Command): boolean {
    return this.output(cmd) === 'json';
  }

  /** -o wide, or the command's own --wide. */
  isWide(cmd: Command): boolean {
    return this.output(cmd) === 'wide' || (cmd.opts() as { wide?: boolean }).wide === true;
  }

  /** The one place list and get commands choose their output: JSON, names, or a (wide) table. */
  render<T>(cmd: Command, r: Rendering<T>): void {
    const format = this.output(cmd);
    if (format === 'json') return this.json(r.json);
    if (format === 'name') {
      for (const item of r.items) this.out(r.name(item));
      return;
    }
    if (r.items.length === 0 && r.empty !== undefined) return this.note(r.empty);
    r.human(this.isWide(cmd));
  }

  configPath(): string {
    return configPath(this.io.env, this.io.homedir);
  }

  loadConfig(): Config {
    return loadConfig(this.configPath());
  }

  saveConfig(config: Config): void {
    saveConfig(this.configPath(), config);
  }

  target(cmd: Command): Target {
    const g = this.globals(cmd);
    const target = resolveTarget({
      flags: { url: g.url, token: g.token, context: g.context },
      env: this.io.env,
      config: this.loadConfig(),
      configPath: this.configPath(),
    });
    // Every request and session to these URLs trusts only the context's pinned CA, and a
    // connection that cannot be made to one moves on to the next.
    if (target.caPem) for (const url of target.urls) pinControllerCa(url, target.caPem, target.contextName);
    if (target.urls.length > 0) registerControllerUrls(target.urls);
    return target;
  }

  timeoutMs(cmd: Command): number {
    const raw = this.globals(cmd).requestTimeout;
    if (raw === undefined) return 30_000;
    const ms = parseDuration(raw, '--request-timeout');
    if (ms <= 0) throw new UsageError(`invalid --request-timeout "${raw}": must be more than 0`);
    return ms;
  }

  clientFor(url: string, token: string | null, cmd: Command): ApiClient {
    return new ApiClient({ url, token, timeoutMs: this.timeoutMs(cmd), signal: this.signal, onRetry: (message) => this.warn(message) });
  }

  /** A client for the controller the flags, environment or context point at. */
  client(cmd: Command): ApiClient {
    const t = this.target(cmd);
    if (!t.url) {
      throw new UsageError('no controller configured: run "fleet login URL --token T", or pass --url / set FLEET_URL');
    }
    return this.clientFor(t.url, t.token, cmd);
  }
}
