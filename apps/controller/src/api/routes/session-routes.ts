// GET /v1/vms/:name/session, upgraded to a WebSocket: exec / ssh / port-forward
// sessions (protocol: docs/api.md "Sessions"). Authentication happens before the
// upgrade so that refusals are ordinary HTTP errors (401/403/404/409): the bearer token
// comes from the Authorization header, or for browsers (which cannot set headers on a
// WebSocket) from the subprotocol list ["fleet.v1", "fleet.bearer.<token>"].
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import type { ApiContext } from '../context.ts';
import type { SessionBroker } from '../../sessions/session-broker.ts';
import { BadRequest, parseOpening } from '../../sessions/client-messages.ts';
import { TokenRejected } from '../../auth/token-service.ts';
import { hasRole } from '../../auth/roles.ts';
import { conflict, forbidden, notFound, unauthorized, badRequest } from '../../errors.ts';
import { actorOf } from '../auth-hook.ts';
import { checkWebSocketOrigin } from '../browser-security.ts';
import { HostKeyObject, NameParam, SshAccessObject } from '../schemas.ts';
import { hostKeyFingerprint } from '../../sessions/vm-access.ts';
import { RELAYED_HEADER, relaySession, type RelayTarget } from '../../sessions/session-relay.ts';
import type { Logger } from 'pino';

export const SESSION_SUBPROTOCOL = 'fleet.v1';
const BEARER_SUBPROTOCOL = 'fleet.bearer.';
/** Largest frame a client may send; bigger ones close the socket with 1009. */
export const MAX_CLIENT_FRAME = 1024 * 1024;
const START_TIMEOUT_MS = 10_000;
/** How often an open session's token is checked again: revoking it ends the session. */
const TOKEN_RECHECK_MS = 10_000;
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function bearerOf(req: FastifyRequest): string | null {
  const header = req.headers.authorization;
  if (header) {
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw unauthorized('Authorization header must be "Bearer <token>"');
    return m[1]!;
  }
  const protocols = String(req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((p) => p.trim());
  const p = protocols.find((x) => x.startsWith(BEARER_SUBPROTOCOL));
  return p ? p.slice(BEARER_SUBPROTOCOL.length) : null;
}

/** Picks "fleet.v1" when offered (browsers must get one of their subprotocols back). */
export function selectSubprotocol(protocols: Set<string>): string | false {
  return protocols.has(SESSION_SUBPROTOCOL) ? SESSION_SUBPROTOCOL : false;
}

export function sessionRoutes(ctx: ApiContext, broker: SessionBroker, opts: { tokenRecheckMs?: number } = {}) {
  return async (app: FastifyInstance): Promise<void> => {
    /** Upgrades to relay to the controller holding the worker's stream (decided before the upgrade). */
    const relayTargets = new WeakMap<FastifyRequest, RelayTarget>();
    const vmByName = async (name: string) => {
      const vm = NAME.test(name) ? await ctx.vms.findByName(name) : null;
      if (!vm) throw notFound('vm', name.slice(0, 63));
      return vm;
    };

    // The host key the fleet recorded on first contact with this boot of the VM (TOFU).
    app.get<{ Params: { name: string } }>('/v1/vms/:name/host-key', { config: { role: 'read' }, schema: { tags: ['sessions'], summary: "The VM's SSH host key as recorded on first use (null before the first session of this boot)", params: NameParam, response: { 200: HostKeyObject } } }, async (req) => {
      const vm = await vmByName(req.params.name);
      const { key, seenAt } = await broker.recordedHostKeyOf(vm);
      return { vm: vm.name, hostKey: key, fingerprint: key ? hostKeyFingerprint(key) : null, seenAt: seenAt ? seenAt.toISOString() : null, attempt: vm.attempt };
    });

    // What OpenSSH needs to log in through `fleet ssh --stdio` (fleet ssh-config). The
    // connect role already allows running anything as this user, so handing out the
    // VM's key adds no power; it is audited all the same.
    app.get<{ Params: { name: string } }>('/v1/vms/:name/ssh-access', { config: { role: 'connect' }, schema: { tags: ['sessions'], summary: "The VM's login (user, private key) and recorded host key, for OpenSSH via ProxyCommand", params: NameParam, response: { 200: SshAccessObject } } }, async (req) => {
      const vm = await vmByName(req.params.name);
      const access = await broker.sshAccessOf(vm);
      const key = access.hostKey;
      await ctx.events.append([{ kind: 'vm.ssh-key-read', message: `${actorOf(req)} fetched the SSH key of ${vm.name}`, vmId: vm.id, vmName: vm.name, actor: actorOf(req) }]);
      return { vm: vm.name, username: access.username, privateKey: access.privateKey, hostKey: key, fingerprint: key ? hostKeyFingerprint(key) : null };
    });

    app.get<{ Params: { name: string } }>(
      '/v1/vms/:name/session',
      {
        websocket: true,
        schema: { hide: true },
        preValidation: async (req) => {
          if (req.headers.upgrade?.toLowerCase() !== 'websocket') throw badRequest('this endpoint speaks WebSocket only (GET with "Upgrade: websocket")');
          checkWebSocketOrigin(req); // before the token: another site's page gets nothing
          const token = bearerOf(req);
          if (!token) throw unauthorized('missing token: send "Authorization: Bearer <token>" or the subprotocol "fleet.bearer.<token>"');
          try {
            req.principal = await ctx.tokens.authenticate(token);
          } catch (err) {
            if (err instanceof TokenRejected) throw unauthorized(err.message);
            throw err;
          }
          if (!hasRole(req.principal.roles, 'connect')) {
            throw forbidden(`token "${req.principal.name}" lacks the "connect" role needed for exec / ssh / port-forward / vnc (has: ${req.principal.roles.join(', ') || 'none'})`);
          }
          const name = req.params.name;
          if (!NAME.test(name)) throw notFound('vm', name.slice(0, 63));
          const vm = await ctx.vms.findByName(name);
          if (!vm) throw notFound('vm', name);
          if (vm.state === 'deleting' || vm.state === 'failed' || vm.desiredPower === 'stopped' || vm.state === 'stopped') {
            throw conflict(`vm "${name}" is ${vm.state}${vm.desiredPower === 'stopped' ? ' (desired power: stopped)' : ''}; start it first`, { state: vm.state });
          }
          // Another controller holds the worker's stream: the session runs there (never relayed twice).
          if (!req.headers[RELAYED_HEADER] && ctx.cluster?.sessionTarget) {
            const target = await ctx.cluster.sessionTarget(vm.workerId);
            if (target) relayTargets.set(req, target);
          }
        },
      },
      (socket: WebSocket, req) => {
        const relayTo = relayTargets.get(req);
        if (relayTo && ctx.cluster?.relayTrust) {
          relayTargets.delete(req);
          socket.on('error', () => undefined);
          ctx.metrics.forwardedSessions.inc();
          relaySession(socket, {
            target: relayTo,
            path: `/v1/vms/${encodeURIComponent(req.params.name)}/session`,
            token: bearerOf(req)!,
            caPem: ctx.cluster.relayTrust.caPem,
            serverName: ctx.cluster.relayTrust.serverName,
            fromController: ctx.cluster.id,
            maxPayload: MAX_CLIENT_FRAME,
            log: req.log as unknown as Logger,
            onError: (s, code, message) => sendError(s, code, message),
          });
          return;
        }
        const actor = `token:${req.principal!.name}`;
        const vmName = req.params.name;
        socket.on('error', () => undefined); // protocol errors (1009 oversize, bad frames) close the socket; nothing to crash
        // The token was checked once at the upgrade; a shell can stay open for days, so a
        // revoked or expired token must end it (as it ends GET /v1/live).
        const token = bearerOf(req)!;
        const recheck = setInterval(() => {
          ctx.tokens.authenticate(token).catch((err: unknown) => {
            if (!(err instanceof TokenRejected)) return; // a database hiccup is not a revocation
            clearInterval(recheck);
            const reason = `${err.message}; the session was ended`;
            if (broker.endSessionsOf(actor, reason) === 0) {
              sendError(socket, 'unauthorized', reason);
              socket.close(1008, 'token rejected');
            }
          });
        }, opts.tokenRecheckMs ?? TOKEN_RECHECK_MS);
        recheck.unref();
        socket.once('close', () => clearInterval(recheck));
        const timer = setTimeout(() => {
          sendError(socket, 'bad-request', `send the start frame within ${START_TIMEOUT_MS / 1000} s`);
          socket.close(1008, 'no start frame');
        }, START_TIMEOUT_MS);
        const onClose = () => clearTimeout(timer);
        socket.once('close', onClose);
        socket.once('message', (data: Buffer, isBinary: boolean) => {
          clearTimeout(timer);
          socket.off('close', onClose);
          // Frames sent right behind the start request (stdin of a pipe) are kept until the broker takes over.
          const early: Array<[Buffer, boolean]> = [];
          let earlyBytes = 0;
          const collect = (d: Buffer, b: boolean) => {
            early.push([d, b]);
            earlyBytes += d.length;
            if (earlyBytes > MAX_CLIENT_FRAME) socket.pause();
          };
          socket.on('message', collect);
          const takeEarly = () => {
            socket.off('message', collect);
            if (earlyBytes > MAX_CLIENT_FRAME) socket.resume();
            return early.splice(0);
          };
          try {
            if (isBinary) throw new BadRequest('the first frame must be the JSON start request (a text frame)');
            const opening = parseOpening(data.toString('utf8'));
            if (opening.type === 'attach') broker.attach(socket, vmName, opening, actor, takeEarly);
            else
              void broker.start(socket, vmName, opening, actor, takeEarly).catch((err) => {
                req.log.error({ err }, 'session start failed');
                sendError(socket, 'internal', 'internal error; see the controller log');
                socket.close(1011, 'internal error');
              });
          } catch (err) {
            takeEarly();
            if (!(err instanceof BadRequest)) throw err;
            sendError(socket, 'bad-request', err.message);
            socket.close(1008, 'bad request');
          }
        });
      },
    );
  };
}

function sendError(socket: WebSocket, code: string, message: string): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify({ type: 'error', code, message }));
}
