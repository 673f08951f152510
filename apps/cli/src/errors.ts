// Every way `fleet` can fail maps to one exit code scripts can rely on, and to
// one line on stderr (no stack traces unless FLEET_DEBUG=1).
import type { VmObject } from '@fleet/api';

export const ExitCode = {
  OK: 0,
  /** Anything unexpected, including controller 5xx. */
  ERROR: 1,
  /** Usage errors and invalid input: client-side validation and API 400. */
  USAGE: 2,
  /** API 404. */
  NOT_FOUND: 3,
  /** API 401/403: missing, invalid, expired or revoked token, or a missing role. */
  AUTH: 4,
  /** The controller could not be reached (refused, DNS, timeout, stalled stream). */
  UNREACHABLE: 5,
  /** API 409. */
  CONFLICT: 6,
  /** `--wait` ended without success: the VM failed, was deleted, or the wait timed out. */
  WAIT_FAILED: 7,
  /** Interrupted (Ctrl-C) while waiting. */
  INTERRUPTED: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The exit-code table, shown in `fleet --help` and mirrored in README.md. */
export const EXIT_CODES_HELP = `Exit codes:
  0    success
  1    unexpected error (including controller 5xx)
  2    usage error or invalid input (client-side validation or API 400)
  3    not found (API 404)
  4    authentication or authorisation failed (API 401/403)
  5    controller unreachable (connection refused, DNS, timeout)
  6    conflict (API 409, e.g. a name already taken)
  7    --wait ended without success (VM failed, was deleted, or timed out)
  130  interrupted (Ctrl-C) while waiting`;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}

/** Bad flags or arguments, caught before any request is sent. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, ExitCode.USAGE);
    this.name = 'UsageError';
  }
}

/** The controller answered with an error status. */
export class ApiError extends CliError {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly details?: unknown,
  ) {
    super(message, exitCodeForStatus(status));
    this.name = 'ApiError';
  }
}

export class UnreachableError extends CliError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, ExitCode.UNREACHABLE, options);
    this.name = 'UnreachableError';
  }
}

export class WaitFailedError extends CliError {
  constructor(
    message: string,
    /** The VM as last seen, for --json output. */
    readonly vm: VmObject | null = null,
  ) {
    super(message, ExitCode.WAIT_FAILED);
    this.name = 'WaitFailedError';
  }
}

/** The user interrupted the command (Ctrl-C); watch-like commands treat this as a normal end. */
export class InterruptedError extends CliError {
  constructor() {
    super('interrupted', ExitCode.INTERRUPTED);
    this.name = 'InterruptedError';
  }
}

/** The command already reported its errors on stderr; only the exit code is left. */
export class ReportedError extends CliError {
  constructor(exitCode: ExitCode) {
    super('', exitCode);
    this.name = 'ReportedError';
  }
}

export function exitCodeForStatus(status: number): ExitCode {
  if (status === 400 || status === 413 || status === 414 || status === 415 || status === 422) return ExitCode.USAGE;
  if (status === 401 || status === 403) return ExitCode.AUTH;
  if (status === 404) return ExitCode.NOT_FOUND;
  if (status === 409 || status === 412) return ExitCode.CONFLICT;
  return ExitCode.ERROR;
}

/** The exit code and the one-line message for any error a command throws. */
export function describeError(err: unknown): { exitCode: ExitCode; message: string } {
  if (err instanceof CliError) return { exitCode: err.exitCode, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { exitCode: ExitCode.ERROR, message: `unexpected error: ${message} (set FLEET_DEBUG=1 for details)` };
}
