// The pool against an in-process ssh2 server standing in for a VM's sshd.
import net from 'node:net';
import ssh2 from 'ssh2';
import type { Connection, ServerChannel } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostKeyMismatch, SshAuthFailed, VmSshPool, type SshTarget } from './vm-ssh-pool.ts';
import { testKeyPair } from './test-keys.ts';

const { Server, utils } = ssh2;
const hostKey = testKeyPair();
const clientKey = testKeyPair();
const otherKey = testKeyPair();
const allowed = utils.parseKey(clientKey.public);

let server: InstanceType<typeof Server>;
let port = 0;
let connections = 0;
/** Authentication methods clients tried, in order (`none` first, as every SSH client does). */
const authAttempts: string[] = [];
const GUEST_PASSWORD = 'admin pass: wörd';
/** Most exec channels one connection carried at once. */
let maxConcurrentPerConnection = 0;

beforeAll(async () => {
  server = new Server({ hostKeys: [hostKey.private] }, (client: Connection) => {
    connections++;
    let active = 0;
    client.on('authentication', (ctx) => {
      authAttempts.push(ctx.method);
      if (ctx.method === 'password') return ctx.password === GUEST_PASSWORD ? ctx.accept() : ctx.reject(['publickey', 'password']);
      if (ctx.method !== 'publickey' || allowed instanceof Error) return ctx.reject(['publickey', 'password']);
      const ok = ctx.key.algo === allowed.type && Buffer.compare(ctx.key.data, allowed.getPublicSSH() as Buffer) === 0;
      if (ok) ctx.accept();
      else ctx.reject(['publickey']);
    });
    client.on('ready', () => {
      client.on('session', (accept) => {
        const session = accept();
        session.on('exec', (acc, _rej, info) => {
          const ch: ServerChannel = acc();
          active++;
          maxConcurrentPerConnection = Math.max(maxConcurrentPerConnection, active);
          ch.once('close', () => active--);
          const m = /^sleep-then-exit (\d+) (\d+)$/.exec(info.command);
          const delay = m ? Number(m[1]) : 0;
          setTimeout(() => {
            ch.write(`ran: ${info.command}\n`);
            ch.exit(m ? Number(m[2]) : 0);
            ch.end();
          }, delay);
        });
      });
    });
    client.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as net.AddressInfo).port;
});

afterAll(() => server.close());

const target = (over: Partial<SshTarget> = {}): SshTarget => ({ vmId: 'vm-1', attempt: 1, host: '127.0.0.1', port, username: 'fleet', privateKey: clientKey.private, expectedHostKey: '', ...over });

async function run(pool: VmSshPool, t: SshTarget, command: string) {
  const opened = await pool.channel(t, command, null);
  let out = '';
  opened.channel.on('data', (d: Buffer) => (out += d.toString()));
  const exit = await opened.closed;
  return { out, exit, hostKey: opened.hostKey };
}

describe('VmSshPool', () => {
  it('reuses one connection for sequential sessions and reports the host key seen', async () => {
    const pool = new VmSshPool();
    const before = connections;
    for (let i = 0; i < 3; i++) {
      const r = await run(pool, target(), `sleep-then-exit 0 ${i}`);
      expect(r.exit).toEqual({ code: i, signal: '' });
      expect(r.out).toBe(`ran: sleep-then-exit 0 ${i}\n`);
      expect(r.hostKey).toBe(hostKey.public.split(' ').slice(0, 2).join(' '));
    }
    expect(pool.opened).toBe(1);
    expect(connections - before).toBe(1);
    pool.close();
  });

  it('forgetVm drops the connections of a VM that stopped, and only those', async () => {
    const pool = new VmSshPool();
    await run(pool, target(), 'sleep-then-exit 0 0');
    await run(pool, target({ vmId: 'vm-2' }), 'sleep-then-exit 0 0');
    expect(pool.size).toBe(2);
    pool.forgetVm('vm-1');
    for (let i = 0; i < 100 && pool.size !== 1; i++) await new Promise((r) => setTimeout(r, 20));
    expect(pool.size).toBe(1);
    // The next session to vm-1 opens a fresh connection.
    const opened = pool.opened;
    await run(pool, target(), 'sleep-then-exit 0 0');
    expect(pool.opened).toBe(opened + 1);
    pool.close();
  });

  it('captures the exit status of a command that finishes at once (no lost exit)', async () => {
    const pool = new VmSshPool();
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => run(pool, target(), `sleep-then-exit 0 ${i + 1}`)));
    expect(results.map((r) => r.exit?.code)).toEqual([1, 2, 3, 4, 5]);
    pool.close();
  });

  it('opens another connection beside a full one (sshd channel limits), one handshake at a time', async () => {
    const pool = new VmSshPool({ maxChannels: 2 });
    maxConcurrentPerConnection = 0;
    const results = await Promise.all(Array.from({ length: 6 }, () => run(pool, target(), 'sleep-then-exit 300 0')));
    expect(results.every((r) => r.exit?.code === 0)).toBe(true);
    expect(pool.opened).toBeGreaterThanOrEqual(2);
    expect(maxConcurrentPerConnection).toBeLessThanOrEqual(2);
    pool.close();
  });

  it('refuses a host that presents another key than the recorded one', async () => {
    const pool = new VmSshPool();
    const wrong = otherKey.public.split(' ').slice(0, 2).join(' ');
    await expect(pool.channel(target({ expectedHostKey: wrong }), 'x', null)).rejects.toBeInstanceOf(HostKeyMismatch);
    // The right recorded key works.
    const right = hostKey.public.split(' ').slice(0, 2).join(' ');
    expect((await run(pool, target({ expectedHostKey: right }), 'sleep-then-exit 0 0')).exit?.code).toBe(0);
    pool.close();
  });

  it('logs in with the password when the VM does not take the fleet key, trying the key first', async () => {
    const pool = new VmSshPool();
    authAttempts.length = 0;
    const r = await run(pool, target({ vmId: 'mac-1', privateKey: otherKey.private, password: GUEST_PASSWORD }), 'sw_vers');
    expect(r.out).toBe('ran: sw_vers\n');
    expect(authAttempts.filter((m) => m !== 'none')).toEqual(['publickey', 'password']);
    pool.close();
  });

  it('never sends the password when the key is accepted', async () => {
    const pool = new VmSshPool();
    authAttempts.length = 0;
    await run(pool, target({ vmId: 'vm-key', password: GUEST_PASSWORD }), 'true');
    expect(authAttempts).not.toContain('password');
    pool.close();
  });

  it('says the password was rejected when both fail', async () => {
    const pool = new VmSshPool();
    const err = await pool.channel(target({ vmId: 'mac-2', privateKey: otherKey.private, password: 'wrong' }), 'x', null).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SshAuthFailed);
    expect((err as Error).message).toMatch(/refused.*password was rejected/);
    pool.close();
  });

  it('reports a refused login clearly', async () => {
    const pool = new VmSshPool();
    await expect(pool.channel(target({ privateKey: otherKey.private }), 'x', null)).rejects.toBeInstanceOf(SshAuthFailed);
    pool.close();
  });
});
