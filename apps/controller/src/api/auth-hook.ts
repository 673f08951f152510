// Bearer-token authentication and role checks for the REST API. Each route
// declares the role it needs in `config.role`; routes without one are public.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TokenRejected, type Principal, type TokenService } from '../auth/token-service.ts';
import { hasRole, type Role } from '../auth/roles.ts';
import { forbidden, unauthorized } from '../errors.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    role?: Role | 'any';
  }
  interface FastifyRequest {
    principal: Principal | null;
  }
}

export function registerAuth(app: FastifyInstance, tokens: TokenService): void {
  app.decorateRequest('principal', null);
  app.addHook('onRequest', async (req: FastifyRequest) => {
    const role = req.routeOptions.config.role;
    if (!role) return;
    const header = req.headers.authorization;
    if (!header) throw unauthorized('missing Authorization header: send "Authorization: Bearer <token>"');
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) throw unauthorized('Authorization header must be "Bearer <token>"');
    try {
      req.principal = await tokens.authenticate(match[1]!);
    } catch (err) {
      if (err instanceof TokenRejected) throw unauthorized(err.message);
      throw err;
    }
    if (role !== 'any' && !hasRole(req.principal.roles, role)) {
      throw forbidden(`token "${req.principal.name}" lacks the "${role}" role (has: ${req.principal.roles.join(', ') || 'none'})`);
    }
  });
}

export function actorOf(req: FastifyRequest): string {
  return req.principal ? `token:${req.principal.name}` : 'anonymous';
}
