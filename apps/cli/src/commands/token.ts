// `fleet token create|list|revoke`: API tokens (service accounts) with roles.
import type { Command } from 'commander';
import type { TokenCreate } from '@fleet/api';
import { UsageError } from '../errors.ts';
import { ageOf, parseHours, relativeTime } from '../output/durations.ts';
import type { Runtime } from '../runtime.ts';
import { ROLES, collect, parseChoice, validateName } from '../validate.ts';

/** active, expired or revoked. */
export function tokenStatus(t: { revokedAt: string | null; expiresAt: string | null }, now: number): 'active' | 'expired' | 'revoked' {
  if (t.revokedAt) return 'revoked';
  if (t.expiresAt && Date.parse(t.expiresAt) <= now) return 'expired';
  return 'active';
}

export function colorStatus(rt: Runtime, s: string): string {
  return s === 'active' ? rt.colors.green(s) : s === 'revoked' ? rt.colors.red(s) : rt.colors.yellow(s);
}

export function registerTokenCommands(program: Command, rt: Runtime): void {
  const token = program.command('token').description('create, list and revoke API tokens (service accounts)');

  token
    .command('create')
    .argument('<name>', 'token name')
    .option('--role <role>', `role to grant (repeatable): ${ROLES.join(', ')}`, collect)
    .option('--expires <duration>', 'expire after this long, in whole hours: 24h, 7d, 720h (default: never)')
    .description('create an API token; the secret is printed once')
    .addHelpText('after', '\nThe token goes to stdout (the notice to stderr), so T=$(fleet token create ci --role write) works.')
    .action(async (name: string, o: { role?: string[]; expires?: string }, cmd: Command) => {
      validateName(name, 'token');
      if (!o.role || o.role.length === 0) throw new UsageError(`missing --role: give at least one of ${ROLES.join(', ')}`);
      const roles = [...new Set(o.role.map((r) => parseChoice(r, '--role', ROLES)))];
      const body: TokenCreate = { name, roles };
      if (o.expires !== undefined) body.expiresInHours = parseHours(o.expires, '--expires');
      const created = await rt.client(cmd).createToken(body);
      if (rt.isJson(cmd)) return rt.json(created);
      const expiry = created.info.expiresAt ? `expires ${relativeTime(created.info.expiresAt, rt.now())}` : 'does not expire';
      rt.note(`token "${created.info.name}" created (roles: ${created.info.roles.join(', ')}; ${expiry}).`);
      rt.note('Store it now: it is not shown again.');
      rt.out(created.token);
    });

  token
    .command('list')
    .alias('ls')
    .description('list API tokens (never their secrets)')
    .action(async (_o: unknown, cmd: Command) => {
      const { tokens } = await rt.client(cmd).listTokens();
      const now = rt.now();
      rt.render(cmd, {
        json: { tokens },
        items: tokens,
        name: (t) => t.name,
        empty: 'No tokens found.',
        human: () => rt.table(
        ['NAME', 'ROLES', 'STATUS', 'EXPIRES', 'LAST USED', 'CREATED BY', 'AGE'],
        tokens.map((t) => [
          t.name,
          t.roles.join(','),
          colorStatus(rt, tokenStatus(t, now)),
          relativeTime(t.expiresAt, now),
          relativeTime(t.lastUsedAt, now),
          t.createdBy,
          ageOf(t.createdAt, now),
        ]),
          ),
      });
    });

  token
    .command('revoke')
    .argument('<name>', 'token name')
    .description('revoke an API token (requests with it get 401 from now on)')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      validateName(name, 'token');
      await rt.client(cmd).revokeToken(name);
      if (rt.isJson(cmd)) return rt.json({ revoked: name });
      rt.out(`token "${name}" revoked`);
    });
}
