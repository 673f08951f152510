import pino, { type Logger } from 'pino';

export type { Logger };

/** Structured JSON logs on stderr; `silent` for tests and benchmarks. */
export function createLogger(level: string = process.env.FLEET_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { component: 'controller' } }, pino.destination(2));
}
