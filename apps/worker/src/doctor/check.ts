// What one doctor check reports, and how a list of them is run: each check has its own
// timeout so that nothing (a DNS lookup, a KVM probe) can hang the whole report.
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  name: string;
  status: CheckStatus;
  /** What was found. */
  detail: string;
  /** The exact thing to do about it (for anything not ok). */
  fix?: string;
}

/** A check's answer without its name (the runner adds it). */
export type Finding = Omit<CheckResult, 'name'>;

export interface Check {
  name: string;
  /** Longest the check may take (default 5 s); past it the check fails with "timed out". */
  timeoutMs?: number;
  run(): Promise<Finding>;
}

export const DEFAULT_CHECK_TIMEOUT_MS = 5_000;

export const ok = (detail: string): Finding => ({ status: 'ok', detail });
export const warn = (detail: string, fix: string): Finding => ({ status: 'warn', detail, fix });
export const fail = (detail: string, fix: string): Finding => ({ status: 'fail', detail, fix });
export const skip = (detail: string): Finding => ({ status: 'skip', detail });

/** Runs one check under its timeout; a throw or a timeout becomes a failed result that says so. */
export async function runCheck(check: Check): Promise<CheckResult> {
  const timeoutMs = check.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<Finding>((resolve) => {
    timer = setTimeout(
      () => resolve(fail(`did not finish within ${timeoutMs} ms`, 'run the check again; if it keeps timing out, see the worker log')),
      timeoutMs,
    );
  });
  try {
    const finding = await Promise.race([check.run(), timedOut]);
    return { name: check.name, ...finding };
  } catch (error) {
    return { name: check.name, ...fail(`the check could not run: ${(error as Error).message}`, 'see the message above') };
  } finally {
    clearTimeout(timer);
  }
}

export interface DoctorReport {
  ok: boolean;
  checks: CheckResult[];
}

/** Runs the checks one after another (they are cheap; order keeps the output readable). */
export async function runChecks(checks: Check[]): Promise<DoctorReport> {
  const results: CheckResult[] = [];
  for (const check of checks) results.push(await runCheck(check));
  return { ok: results.every((r) => r.status !== 'fail'), checks: results };
}

const MARK: Record<CheckStatus, string> = { ok: '✓', warn: '!', fail: '✗', skip: '-' };

/** One line per check, plus an indented "fix:" line for anything not ok. */
export function formatReport(report: DoctorReport): string[] {
  const width = Math.max(...report.checks.map((c) => c.name.length), 0);
  const lines: string[] = [];
  for (const c of report.checks) {
    lines.push(`${MARK[c.status]} ${c.name.padEnd(width)}  ${c.detail}`);
    if (c.fix !== undefined && c.status !== 'ok') lines.push(`  ${' '.repeat(width)}  fix: ${c.fix}`);
  }
  const failed = report.checks.filter((c) => c.status === 'fail').length;
  const warned = report.checks.filter((c) => c.status === 'warn').length;
  lines.push(failed > 0 ? `${failed} check(s) failed, ${warned} warning(s).` : `All checks passed${warned > 0 ? ` (${warned} warning(s))` : ''}.`);
  return lines;
}
