// Running system tools (codesign, launchctl, ifconfig, defaults) through one injectable function,
// so that what we run is tested as exact argv lists without a Mac.
import { execFile } from 'node:child_process';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export type RunCommand = (cmd: string, args: readonly string[]) => Promise<CommandResult>;

export const runCommand: RunCommand = (cmd, args) =>
  new Promise((resolve) => {
    execFile(cmd, [...args], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      // execFile's error: `code` is the exit status, or a string such as 'ENOENT' when the tool is missing.
      const c = (err as { code?: unknown } | null)?.code;
      const code = err ? (typeof c === 'number' ? c : 127) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr || (err && code === 127 ? err.message : '')) });
    });
  });
