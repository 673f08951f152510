// `fleet account create|list|passwd|disable|enable|delete`: dashboard accounts (username +
// password; logging in yields a 12-hour token with the account's roles).
// Passwords are read from stdin (--password-stdin) so they stay out of shell
// history and process listings.
import type { Command } from 'commander';
import type { AccountCreate, AccountObject } from '@fleet/api';
import { UsageError } from '../errors.ts';
import type { Io } from '../io.ts';
import { ageOf, relativeTime } from '../output/durations.ts';
import type { Runtime } from '../runtime.ts';
import { ROLES, collect, parseChoice, validateName } from '../validate.ts';

/** The first line of stdin, without its line ending. */
export async function readPasswordFromStdin(io: Io): Promise<string> {
  if (!io.stdin) throw new UsageError('--password-stdin: no stdin');
  let text = '';
  for await (const chunk of io.stdin) {
    text += typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
    if (text.includes('\n') || text.length > 4096) break;
  }
  const password = text.split(/\r?\n/)[0] ?? '';
  if (password.length < 8) throw new UsageError('the password (first line of stdin) must be at least 8 characters');
  return password;
}

export function registerAccountCommands(program: Command, rt: Runtime): void {
  const account = program.command('account').description('create, list and delete dashboard accounts (username + password)');

  account
    .command('create')
    .argument('<username>', 'lower-case letters, digits and dashes')
    .option('--role <role>', `role to grant (repeatable): ${ROLES.join(', ')}`, collect)
    .option('--password-stdin', 'read the password from the first line of stdin (required)')
    .description('create an account that can sign in to the dashboard')
    .addHelpText('after', '\nExample: printf %s "$PW" | fleet account create alice --role write --role connect --password-stdin')
    .action(async (username: string, o: { role?: string[]; passwordStdin?: boolean }, cmd: Command) => {
      validateName(username, 'account');
      if (username.length > 40) throw new UsageError('account names are at most 40 characters');
      if (!o.role || o.role.length === 0) throw new UsageError(`missing --role: give at least one of ${ROLES.join(', ')}`);
      if (!o.passwordStdin) throw new UsageError('give the password on stdin with --password-stdin');
      const roles = [...new Set(o.role.map((r) => parseChoice(r, '--role', ROLES)))];
      const body: AccountCreate = { username, password: await readPasswordFromStdin(rt.io), roles };
      const { data } = await rt.client(cmd).request<AccountObject>('POST', '/v1/accounts', { body });
      if (rt.isJson(cmd)) return rt.json(data);
      rt.out(`account "${username}" created (roles: ${roles.join(', ')})`);
    });

  account
    .command('list')
    .alias('ls')
    .description('list accounts')
    .action(async (_o: unknown, cmd: Command) => {
      const { data } = await rt.client(cmd).request<{ accounts: AccountObject[] }>('GET', '/v1/accounts');
      const accounts = data?.accounts ?? [];
      const now = rt.now();
      rt.render(cmd, {
        json: { accounts },
        items: accounts,
        name: (a) => a.username,
        empty: 'No accounts found.',
        human: () => rt.table(
        ['USERNAME', 'ROLES', 'STATUS', 'LAST LOGIN', 'CREATED BY', 'AGE'],
        accounts.map((a) => [a.username, a.roles.join(','), a.disabledAt ? rt.colors.red('disabled') : rt.colors.green('active'), relativeTime(a.lastLoginAt, now), a.createdBy, ageOf(a.createdAt, now)]),
          ),
      });
    });

  account
    .command('passwd')
    .argument('<username>', 'account name')
    .option('--password-stdin', 'read the new password from the first line of stdin (required)')
    .description("set an account's password")
    .action(async (username: string, o: { passwordStdin?: boolean }, cmd: Command) => {
      validateName(username, 'account');
      if (!o.passwordStdin) throw new UsageError('give the password on stdin with --password-stdin');
      await rt.client(cmd).request('PUT', `/v1/accounts/${encodeURIComponent(username)}/password`, { body: { password: await readPasswordFromStdin(rt.io) } });
      if (rt.isJson(cmd)) return rt.json({ updated: username });
      rt.out(`password of "${username}" changed`);
    });

  for (const [action, verb] of [['disable', 'disabled'], ['enable', 'enabled']] as const) {
    account
      .command(action)
      .argument('<username>', 'account name')
      .description(action === 'disable' ? 'disable an account: no more logins, open sessions revoked' : 'enable a disabled account')
      .action(async (username: string, _o: unknown, cmd: Command) => {
        validateName(username, 'account');
        const { data } = await rt.client(cmd).request<AccountObject>('POST', `/v1/accounts/${encodeURIComponent(username)}/${action}`, { idempotent: true });
        if (rt.isJson(cmd)) return rt.json(data);
        rt.out(`account "${username}" ${verb}`);
      });
  }

  account
    .command('delete')
    .argument('<username>', 'account name')
    .description('delete an account and revoke its open sessions')
    .action(async (username: string, _o: unknown, cmd: Command) => {
      validateName(username, 'account');
      await rt.client(cmd).request('DELETE', `/v1/accounts/${encodeURIComponent(username)}`);
      if (rt.isJson(cmd)) return rt.json({ deleted: username });
      rt.out(`account "${username}" deleted`);
    });
}
