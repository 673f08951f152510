// Images in workers' caches and image operations (issue 15): list what each worker holds,
// prefetch an image onto a pool, delete one from a worker, push a stopped VM's disk to a registry,
// and follow those operations.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ImagesApi } from '../context.ts';
import {
  ImageOperationIdParam,
  ImageOperationList,
  ImageOperationObject,
  ImageOperationQuery,
  ImagePrefetchRequest,
  ImagePrefetchResult,
  ImageSummaryList,
  NameParam,
  VmPushRequest,
  WorkerImageList,
  WorkerImageParams,
} from '../schemas.ts';
import { actorOf } from '../auth-hook.ts';
import { errorResponse } from './route-errors.ts';

export function imageRoutes(images: ImagesApi): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get('/v1/images', {
      config: { role: 'read' },
      schema: { tags: ['images'], summary: "Every worker's cached images, grouped by digest", response: { 200: ImageSummaryList } },
    }, async () => ({ items: await images.inventory.listAll() }));

    app.get('/v1/workers/:name/images', {
      config: { role: 'read' },
      schema: {
        tags: ['images'],
        summary: "A worker's image cache, as it last reported it",
        params: NameParam,
        response: { 200: WorkerImageList, 404: errorResponse('`not_found`: no such worker') },
      },
    }, async (req) => images.inventory.listForWorker(req.params.name));

    app.delete('/v1/workers/:name/images/:digest', {
      config: { role: 'write' },
      schema: {
        tags: ['images'],
        summary: "Delete an image from a worker's cache",
        description: 'Answers 202 with the delete operation the worker carries out (GET /v1/image-operations/{id} follows it). A delete of the same image still under way is returned again.',
        params: WorkerImageParams,
        response: {
          202: ImageOperationObject,
          404: errorResponse('`not_found`: no such worker, or the worker holds no such image'),
          409: errorResponse('`conflict`: a VM on the worker uses the image (delete those VMs first)'),
        },
      },
    }, async (req, reply) => reply.code(202).send(await images.operations.deleteImage(req.params.name, req.params.digest, actorOf(req))));

    app.post('/v1/images/prefetch', {
      config: { role: 'write', idempotency: {} },
      schema: {
        tags: ['images'],
        summary: 'Pull an image into the caches of a pool of workers ahead of use',
        description:
          'Resolves the reference to its digest, then asks every online, not drained worker that can run the image (tart: the vz driver; fleet-qemu: the qemu driver) and carries every selector label to pull it. ' +
          'Answers 202 with one operation per worker.',
        body: ImagePrefetchRequest,
        response: {
          202: ImagePrefetchResult,
          400: errorResponse('`bad_request`: not a registry reference'),
          422: errorResponse('`image_unresolvable` (the registry does not have it, refused access, or answered with something unusable), `image_unsupported` (not a Fleet or Tart VM image) or `no_eligible_worker` (the message lists why each worker was left out); with Idempotency-Key also `idempotency_key_reused`'),
          409: errorResponse('`idempotency_key_in_flight`: the first request with this Idempotency-Key is still running (Retry-After: 1)'),
          502: errorResponse('`registry_unreachable`: the registry could not be reached'),
        },
      },
    }, async (req, reply) => reply.code(202).send(await images.operations.prefetch(req.body.reference, req.body.selector ?? {}, actorOf(req))));

    app.post('/v1/vms/:name/push', {
      config: { role: 'write', idempotency: {} },
      schema: {
        tags: ['images'],
        summary: "Push a stopped VM's disk to a registry as an image",
        description:
          'The VM must be placed on a worker and stopped (fleet vm stop NAME --wait) and stay stopped until the push finishes. Answers 202 with the push operation; its digest is set once pushed.',
        params: NameParam,
        body: VmPushRequest,
        response: {
          202: ImageOperationObject,
          400: errorResponse('`bad_request`: not a registry reference with a tag'),
          404: errorResponse('`not_found`: no such VM'),
          409: errorResponse('`conflict`: the VM is not stopped, has no disk on a worker yet, or is already being pushed; with Idempotency-Key also `idempotency_key_in_flight`'),
          422: errorResponse('`idempotency_key_reused`: this Idempotency-Key was used with a different request'),
        },
      },
    }, async (req, reply) => reply.code(202).send(await images.operations.push(req.params.name, req.body.reference, actorOf(req))));

    app.get('/v1/image-operations', {
      config: { role: 'read' },
      schema: {
        tags: ['images'],
        summary: 'Image operations (prefetch, delete, push), newest first (finished ones are kept 7 days)',
        querystring: ImageOperationQuery,
        response: { 200: ImageOperationList, 404: errorResponse('`not_found`: no such worker') },
      },
    }, async (req) => ({ items: await images.operations.list({ ...(req.query.worker ? { worker: req.query.worker } : {}), ...(req.query.state ? { state: req.query.state } : {}) }) }));

    app.get('/v1/image-operations/:id', {
      config: { role: 'read' },
      schema: { tags: ['images'], summary: 'One image operation', params: ImageOperationIdParam, response: { 200: ImageOperationObject, 404: errorResponse('`not_found`: no such operation (finished ones are purged after 7 days)') } },
    }, async (req) => images.operations.get(req.params.id));
  };
}
