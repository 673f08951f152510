// The DHCP lease time of macOS Internet Sharing (bootpd serves vmnet shared mode). The default is
// 86,400 s: with a fresh MAC per VM instance the /24 runs out after ~253 VMs a day. Softnet and
// Tart's docs set 600 s; `-dict-add` merges into the existing bootpd dictionary instead of
// replacing it. Needs root; bootpd reads it when Internet Sharing (re)starts.
import { runCommand, type RunCommand } from './run-command.ts';

export const INTERNET_SHARING_PLIST = '/Library/Preferences/SystemConfiguration/com.apple.InternetSharing.default.plist';
export const DEFAULT_DHCP_LEASE_SECONDS = 600;

export function leaseTimeWriteArgs(seconds: number): string[] {
  if (!Number.isInteger(seconds) || seconds < 60 || seconds > 86_400) throw new RangeError(`DHCP lease time must be 60..86400 s, not ${seconds}`);
  return ['write', INTERNET_SHARING_PLIST, 'bootpd', '-dict-add', 'DHCPLeaseTimeSecs', '-int', String(seconds)];
}

export function leaseTimeReadArgs(): string[] {
  return ['read', INTERNET_SHARING_PLIST, 'bootpd'];
}

/** Reads the configured lease time from `defaults read … bootpd` output, or undefined (= bootpd default). */
export function parseLeaseTime(defaultsOutput: string): number | undefined {
  const m = /DHCPLeaseTimeSecs\s*=\s*(\d+)\s*;/.exec(defaultsOutput);
  return m ? Number(m[1]) : undefined;
}

/** Sets the lease time unless it already has that value. Returns true when it wrote. */
export async function ensureLeaseTime(seconds = DEFAULT_DHCP_LEASE_SECONDS, run: RunCommand = runCommand): Promise<boolean> {
  const cur = await run('/usr/bin/defaults', leaseTimeReadArgs());
  if (cur.code === 0 && parseLeaseTime(cur.stdout) === seconds) return false;
  const w = await run('/usr/bin/defaults', leaseTimeWriteArgs(seconds));
  if (w.code !== 0) throw new Error(`setting the DHCP lease time failed (needs root): defaults ${leaseTimeWriteArgs(seconds).join(' ')}: ${w.stderr.trim() || `exit ${w.code}`}`);
  return true;
}
