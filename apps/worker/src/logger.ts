import pino, { type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * Structured JSON logs (pino) on stderr. One logger can be shared by many workers in one
 * process (each worker logs through a child carrying its name).
 */
export function createLogger(level: string = process.env.FLEET_LOG_LEVEL ?? 'info'): Logger {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new Error(`unknown log level ${JSON.stringify(level)} (use one of ${LOG_LEVELS.join(', ')})`);
  }
  return pino({ level, base: { component: 'worker' } }, pino.destination(2));
}

let silent: Logger | undefined;

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  silent ??= pino({ level: 'silent' });
  return silent;
}

let shared: Logger | undefined;

/** One process-wide stderr logger (level from $FLEET_LOG_LEVEL), so many workers share one destination. */
export function defaultLogger(): Logger {
  shared ??= createLogger();
  return shared;
}
