// `fleet login` and `fleet context list|use|delete|show`: saved controllers.
import type { Command } from 'commander';
import type { Config } from '../config/contexts.ts';
import { contextNameFor, contextUrls, maskToken, normalizeUrlList, validateContextName } from '../config/contexts.ts';
import { UnreachableError, UsageError } from '../errors.ts';
import { registerControllerUrls } from '../client/controller-endpoints.ts';
import { pinControllerCa } from '../client/controller-trust.ts';
import { establishTrust, terminalPrompt } from '../client/establish-trust.ts';
import type { Runtime } from '../runtime.ts';

interface TrustOptions {
  caFingerprint?: string;
  caFile?: string;
}

export function registerContextCommands(program: Command, rt: Runtime): void {
  program
    .command('login')
    .argument('<url>', 'controller URL, e.g. http://127.0.0.1:8080; several controllers: separated by commas')
    .usage('URL --token TOKEN [--context NAME] [--ca-fingerprint SHA256 | --ca-file PEM]')
    .option('--ca-fingerprint <sha256>', "https: trust the controller's own CA if its SHA-256 fingerprint is this (from fleet-controller ca-fingerprint)")
    .option('--ca-file <pem>', 'https: trust this CA (PEM) for the controller, e.g. your company CA')
    .description('check a token against a controller (GET /v1/whoami) and save both as a context, made current')
    .addHelpText(
      'after',
      `
Uses the global --token (or FLEET_TOKEN) and names the context after --context,
or after the URL's host and port when --context is not given.

Example:
  fleet login http://127.0.0.1:8080 --token fleet_abc_s3cr3t --context local`,
    )
    .action(async (urlArg: string, opts: TrustOptions, cmd: Command) => {
      const g = rt.globals(cmd);
      const urls = normalizeUrlList(urlArg);
      const token = g.token ?? (rt.io.env.FLEET_TOKEN || undefined);
      if (!token) throw new UsageError('missing --token: run "fleet login URL --token T" (or set FLEET_TOKEN)');
      const name = g.context !== undefined ? validateContextName(g.context) : contextNameFor(urls[0]!);
      await saveCheckedContext(rt, cmd, name, urls, token, opts);
    });

  async function saveCheckedContext(rtx: Runtime, cmd: Command, name: string, urls: string[], token: string, opts: TrustOptions): Promise<void> {
    const caPem = await trustForAll(rtx, urls, opts);
    // One CA for the whole context: every controller of a fleet presents the fleet's CA.
    if (caPem) for (const u of urls) pinControllerCa(u, caPem, name);
    registerControllerUrls(urls);
    const client = rtx.clientFor(urls[0]!, token, cmd);
    const who = await client.whoami();
    const url = urls[0]!;
    const config: Config = rtx.loadConfig();
    config.contexts[name] = { url, ...(urls.length > 1 ? { urls } : {}), token, user: who.name, roles: who.roles, ...(caPem ? { caPem } : {}) };
    config.currentContext = name;
    rtx.saveConfig(config);
    if (rtx.isJson(cmd)) {
      rtx.json({ context: name, url, urls, name: who.name, roles: who.roles, caPinned: caPem !== null, configPath: rtx.configPath() });
      return;
    }
    rtx.out(`logged in to ${client.url} as "${who.name}" (roles: ${who.roles.join(', ') || 'none'})${caPem ? '; its CA is pinned in the context' : ''}`);
    if (urls.length > 1) rtx.out(`the context holds ${urls.length} controller URLs, tried in order: ${urls.join(', ')}`);
    rtx.out(`context "${name}" is now current (saved in ${rtx.configPath()})`);
  }

  /**
   * The CA to pin for the context's URLs: decided (establishTrust) with the first controller that
   * can be reached; an unreachable one is skipped, any other failure (a wrong fingerprint, a
   * refusal) ends the command. The pin then applies to every URL of the context.
   */
  async function trustForAll(rtx: Runtime, urls: string[], opts: TrustOptions): Promise<string | null> {
    const prompt = terminalPrompt(rtx.io.stdin, rtx.io.stderr);
    for (let i = 0; ; i++) {
      try {
        return await establishTrust(urls[i]!, { caFingerprint: opts.caFingerprint, caFile: opts.caFile }, prompt);
      } catch (err) {
        if (!(err instanceof UnreachableError) || i === urls.length - 1) throw err;
        rtx.warn(`${err.message}; trying ${urls[i + 1]}`);
      }
    }
  }

  program
    .command('whoami')
    .description('show which token the CLI uses and its roles (GET /v1/whoami)')
    .action(async (_opts: unknown, cmd: Command) => {
      const client = rt.client(cmd);
      const who = await client.whoami();
      if (rt.isJson(cmd)) return rt.json(who);
      rt.out(`${who.name} (roles: ${who.roles.join(', ') || 'none'}) at ${client.url}`);
    });

  const context = program.command('context').description('list, switch, delete and show saved controller contexts');

  context
    .command('list')
    .alias('ls')
    .description('list saved contexts (* marks the current one)')
    .action((_opts: unknown, cmd: Command) => {
      const config = rt.loadConfig();
      const entries = Object.entries(config.contexts);
      rt.render(cmd, {
        json: {
          currentContext: config.currentContext,
          contexts: entries.map(([name, c]) => ({ name, url: c.url, urls: contextUrls(c), user: c.user ?? null, roles: c.roles ?? [], current: name === config.currentContext })),
        },
        items: entries,
        name: ([name]) => name,
        empty: 'No contexts saved; run "fleet login URL --token T".',
        human: () =>
          rt.table(
            ['CURRENT', 'NAME', 'URL', 'USER', 'ROLES'],
            entries.map(([name, c]) => [name === config.currentContext ? '*' : '', name, contextUrls(c).join(','), c.user ?? '-', (c.roles ?? []).join(',') || '-']),
          ),
      });
    });

  context
    .command('add')
    .argument('<name>', 'context name')
    .usage('NAME --url URL [--url URL...] --token TOKEN [--ca-fingerprint SHA256 | --ca-file PEM]')
    .description('check a controller URL and token (GET /v1/whoami), pin an https controller\'s CA, and save them as a context, made current')
    .option('--ca-fingerprint <sha256>', "https: trust the controller's own CA if its SHA-256 fingerprint is this (from fleet-controller ca-fingerprint)")
    .option('--ca-file <pem>', 'https: trust this CA (PEM) for the controller, e.g. your company CA')
    .addHelpText(
      'after',
      `
Uses the global --url and --token (or FLEET_URL / FLEET_TOKEN). Several controllers of one
fleet: repeat --url (or separate the URLs with commas); commands try them in order when one
cannot be reached, and the CA pinned below applies to all of them. For an https://
controller with its own CA, pass the fingerprint it prints at start (or that
"fleet-controller ca-fingerprint --data-dir DIR" prints on its host): the CLI
checks the CA the controller presents against it and stores that CA in the
context. Without --ca-fingerprint, a terminal shows the fingerprint and asks;
without a terminal (CI) the command refuses. A certificate the system already
trusts needs neither.

Example:
  fleet context add prod --url https://fleet.example.com:8080 --token fleet_abc_s3cr3t --ca-fingerprint 3f9a…
  fleet context add prod --url https://ctl-1.example.com:8080 --url https://ctl-2.example.com:8080 --token fleet_abc_s3cr3t --ca-fingerprint 3f9a…`,
    )
    .action(async (nameArg: string, opts: TrustOptions, cmd: Command) => {
      const g = rt.globals(cmd);
      const name = validateContextName(nameArg);
      const fromFlag = g.url !== undefined && g.url.length > 0;
      const rawUrl = fromFlag ? g.url : rt.io.env.FLEET_URL || undefined;
      if (!rawUrl) throw new UsageError('missing --url: run "fleet context add NAME --url URL --token T"');
      const urls = normalizeUrlList(rawUrl, fromFlag ? '--url' : 'FLEET_URL');
      const token = g.token ?? (rt.io.env.FLEET_TOKEN || undefined);
      if (!token) throw new UsageError('missing --token: run "fleet context add NAME --url URL --token T" (or set FLEET_TOKEN)');
      await saveCheckedContext(rt, cmd, name, urls, token, opts);
    });

  context
    .command('use')
    .argument('<name>', 'context name')
    .description('make a saved context the current one')
    .action((name: string, _opts: unknown, cmd: Command) => {
      const config = rt.loadConfig();
      const c = config.contexts[name];
      if (!c) throw new UsageError(`context "${name}" not found; see "fleet context list"`);
      config.currentContext = name;
      rt.saveConfig(config);
      if (rt.isJson(cmd)) rt.json({ currentContext: name, url: c.url, urls: contextUrls(c) });
      else rt.out(`switched to context "${name}" (${contextUrls(c).join(', ')})`);
    });

  context
    .command('delete')
    .alias('rm')
    .argument('<name>', 'context name')
    .description('forget a saved context (and its token)')
    .action((name: string, _opts: unknown, cmd: Command) => {
      const config = rt.loadConfig();
      if (!config.contexts[name]) throw new UsageError(`context "${name}" not found; see "fleet context list"`);
      delete config.contexts[name];
      const wasCurrent = config.currentContext === name;
      if (wasCurrent) config.currentContext = null;
      rt.saveConfig(config);
      if (rt.isJson(cmd)) rt.json({ deleted: name, currentContext: config.currentContext });
      else rt.out(`deleted context "${name}"${wasCurrent ? ' (it was current; run "fleet context use NAME" to pick another)' : ''}`);
    });

  context
    .command('show')
    .description('show which controller and token commands will use, and where each comes from (no request is sent)')
    .action((_opts: unknown, cmd: Command) => {
      const t = rt.target(cmd);
      const config = rt.loadConfig();
      const user = t.contextName ? config.contexts[t.contextName]?.user ?? null : null;
      if (rt.isJson(cmd)) {
        rt.json({
          context: t.contextName,
          url: t.url,
          urls: t.urls,
          urlSource: t.urlSource,
          token: t.token ? maskToken(t.token) : null,
          tokenSource: t.tokenSource,
          caPinned: t.caPem !== null,
          user,
          configPath: t.configPath,
        });
        return;
      }
      const src = (s: string) => (s === 'flag' ? 'from flag' : s === 'env' ? 'from environment' : s === 'context' ? 'from context' : '');
      rt.keyValues([
        ['Context', t.contextName ?? '(none)'],
        [t.urls.length > 1 ? 'URLs' : 'URL', t.url ? `${t.urls.join(', ')} (${src(t.urlSource)}${t.urls.length > 1 ? ', tried in order' : ''})` : '(not set: run "fleet login URL --token T")'],
        ['Token', t.token ? `${maskToken(t.token)} (${src(t.tokenSource)})` : '(not set)'],
        ['TLS trust', t.url?.startsWith('https:') ? (t.caPem ? "the context's pinned CA" : "the system's CAs") : '-'],
        ['User', user ?? '-'],
        ['Config file', t.configPath],
      ]);
    });
}
