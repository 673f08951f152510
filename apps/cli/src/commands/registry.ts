// `fleet registry login|logout|list`: the OCI registries the fleet pulls from and pushes to.
// Credentials are stored in the controller, sealed, write-only like VM passwords, and handed to
// a worker only for a pull or push that needs them.
import type { Command } from 'commander';
import type { RegistryPut } from '../client/image-types.ts';
import { UsageError } from '../errors.ts';
import { relativeTime } from '../output/durations.ts';
import { dash } from '../output/table.ts';
import type { Runtime } from '../runtime.ts';
import { addCredentialOptions, readCaFile, readRegistryCredentials, validateRegistryHost, type CredentialOptions } from './registry-credentials.ts';

interface LoginOptions extends CredentialOptions {
  anonymous?: boolean;
  insecure?: boolean;
  caFile?: string;
  verify?: boolean;
}

export function transportOf(r: { insecure: boolean; caSet: boolean }): string {
  if (r.insecure) return 'http allowed (insecure)';
  return r.caSet ? 'https, extra CA' : 'https';
}

export function registerRegistryCommands(program: Command, rt: Runtime): void {
  const registry = program.command('registry').description('OCI registries: credentials and TLS settings the workers use to pull and push images');

  const login = registry
    .command('login')
    .argument('<host>', 'registry host as image references spell it: ghcr.io, 127.0.0.1:5000')
    .description('store (or replace) how to reach a registry and, optionally, its credentials, in the controller');
  addCredentialOptions(login, 'the registry');
  login
    .option('--insecure', 'allow plain HTTP to this registry (only on networks you trust)')
    .option('--ca-file <file>', 'PEM file with the CA that signs the registry certificate (besides the system CAs)')
    .option('--anonymous', 'remove stored credentials: pulls from this registry are anonymous')
    .option('--no-verify', 'store without the controller first trying the credentials against the registry')
    .addHelpText(
      'after',
      `
The password (or token) is read from stdin with --password-stdin, or asked for when stdin is a
terminal; never from an argument. The controller keeps it sealed and never returns it.
Without --username the stored credentials are kept (--anonymous removes them), and so is a
stored CA without --ca-file; --insecure is set or cleared by every login.
Examples:
  printf %s "$GHCR_TOKEN" | fleet registry login ghcr.io --username ci --password-stdin
  fleet registry login 127.0.0.1:5000 --insecure
  fleet registry login registry.lan:5000 --ca-file lan-ca.pem --username fleet`,
    )
    .action(async (hostArg: string, o: LoginOptions, cmd: Command) => {
      const host = validateRegistryHost(hostArg);
      const caPem = o.caFile !== undefined ? await readCaFile(o.caFile) : undefined;
      if (o.insecure && caPem !== undefined) rt.warn('--insecure with --ca-file: plain HTTP is allowed; the CA is used when the registry speaks HTTPS');
      if (o.anonymous && (o.username !== undefined || o.passwordStdin)) throw new UsageError('--anonymous removes the credentials; it cannot be combined with --username or --password-stdin');
      const creds = await readRegistryCredentials(rt.io, o, host);
      const body: RegistryPut = { insecure: o.insecure === true, verify: o.verify !== false };
      if (creds) Object.assign(body, creds);
      if (o.anonymous) Object.assign(body, { username: '', password: null });
      if (caPem !== undefined) body.caPem = caPem;
      const saved = await rt.client(cmd).putRegistry(host, body);
      if (rt.isJson(cmd)) return rt.json(saved);
      const who = saved.username ? `user ${saved.username}${saved.passwordSet ? ' (password stored, write-only)' : ''}` : 'anonymous';
      rt.out(`registry ${saved.host} saved: ${who}; ${transportOf(saved)}${body.verify ? '' : ' (not verified)'}`);
    });

  registry
    .command('logout')
    .alias('rm')
    .argument('<host>', 'registry host')
    .description('forget a registry and delete its stored credentials')
    .action(async (hostArg: string, _o: unknown, cmd: Command) => {
      const host = validateRegistryHost(hostArg);
      await rt.client(cmd).deleteRegistry(host);
      if (rt.isJson(cmd)) return rt.json({ deleted: host });
      rt.out(`registry ${host} removed: its credentials are deleted from the controller`);
    });

  registry
    .command('list')
    .alias('ls')
    .description('registries the controller knows (passwords are never shown, only whether one is set)')
    .action(async (_o: unknown, cmd: Command) => {
      const { items } = await rt.client(cmd).listRegistries();
      const now = rt.now();
      rt.render(cmd, {
        json: { items },
        items,
        name: (r) => r.host,
        empty: 'No registries configured: pulls are anonymous over HTTPS with the system CAs ("fleet registry login HOST" adds one).',
        human: () => rt.table(
        ['HOST', 'USERNAME', 'PASSWORD', 'TRANSPORT', 'UPDATED', 'BY'],
        items.map((r) => [r.host, dash(r.username), r.passwordSet ? 'set' : '-', transportOf(r), relativeTime(r.updatedAt, now), dash(r.createdBy)]),
          ),
      });
    });
}
