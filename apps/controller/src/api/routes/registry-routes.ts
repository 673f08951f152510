// Registries (issue 15): credentials, the insecure flag and an extra CA per registry host. Admin
// writes them (the password is write-only), anyone with read sees which are configured.
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ImagesApi } from '../context.ts';
import { RegistryHostParam, RegistryList, RegistryObject, RegistryPut } from '../schemas.ts';
import { actorOf } from '../auth-hook.ts';
import { errorResponse } from './route-errors.ts';

export function registryRoutes(images: ImagesApi): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get('/v1/registries', {
      config: { role: 'read' },
      schema: { tags: ['registries'], summary: 'List the registries with stored settings (never their passwords)', response: { 200: RegistryList } },
    }, async () => ({ items: await images.registries.list() }));

    app.get('/v1/registries/:host', {
      config: { role: 'read' },
      schema: {
        tags: ['registries'],
        summary: "One registry's settings (never its password)",
        params: RegistryHostParam,
        response: { 200: RegistryObject, 400: errorResponse('`bad_request`: not a host[:port]'), 404: errorResponse('`not_found`: no settings stored for this registry (pulls from it are anonymous)') },
      },
    }, async (req) => images.registries.get(req.params.host));

    app.put('/v1/registries/:host', {
      config: { role: 'admin', upsert: true },
      schema: {
        tags: ['registries'],
        summary: 'Store credentials / settings for a registry (fleet registry login)',
        description:
          'Creates or changes the settings of the registry host[:port] (in the path; URL-encode ":" and brackets if your client needs to). Omitted fields keep their stored values. ' +
          'The password is sealed at rest and never returned; workers get it only inside the desired state of a pull or push that needs it. ' +
          'With verify (the default) the registry is asked first (GET /v2/ with the credentials); nothing is stored if that fails.',
        params: RegistryHostParam,
        body: RegistryPut,
        response: {
          200: RegistryObject,
          400: errorResponse('`bad_request`: not a host[:port], a caPem that is not X.509 PEM, or a password without a username'),
          422: errorResponse('`registry_login_failed`: the registry refused the credentials, or its TLS certificate / plain HTTP did not match the settings (details.cause names the reason)'),
          502: errorResponse('`registry_unreachable`: the registry could not be reached to verify the settings (store them anyway with verify=false)'),
        },
      },
    }, async (req) => images.registries.put(req.params.host, req.body, actorOf(req)));

    app.delete('/v1/registries/:host', {
      config: { role: 'admin' },
      schema: {
        tags: ['registries'],
        summary: "Remove a registry's settings (pulls from it become anonymous)",
        params: RegistryHostParam,
        response: { 204: Type.Null(), 400: errorResponse('`bad_request`: not a host[:port]'), 404: errorResponse('`not_found`: no settings stored for this registry') },
      },
    }, async (req, reply) => {
      await images.registries.remove(req.params.host, actorOf(req));
      return reply.code(204).send(null);
    });
  };
}
