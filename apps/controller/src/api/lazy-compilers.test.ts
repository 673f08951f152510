import { describe, expect, it } from 'vitest';
import Ajv from 'ajv';
import Fastify from 'fastify';
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler';
import { lazySerializerFactory, lazyValidatorCompiler, type Validator } from './lazy-compilers.ts';

const route = (schema: unknown) => ({ schema, method: 'GET', url: '/x', httpStatus: '200' });

describe('lazySerializerFactory', () => {
  const shared = { Item: { $id: 'Item', type: 'object', properties: { n: { type: 'integer' } } } };
  const schema = { type: 'object', properties: { a: { type: 'string' }, items: { type: 'array', items: { $ref: 'Item#' } } } };
  const doc = { a: 'x', b: 'not in the schema', items: [{ n: 1, m: 2 }] };

  it('writes what the default compiler writes', () => {
    const eager = SerializerSelector()(shared, {})(route(schema));
    const lazy = lazySerializerFactory()(shared, {})(route(schema));
    expect(lazy(doc)).toBe(eager(doc));
    expect(lazy(doc)).toBe('{"a":"x","items":[{"n":1}]}');
  });

  it('compiles at the first call, not before', () => {
    const compile = lazySerializerFactory()(shared, {});
    const broken = compile(route({ type: 'object', properties: { a: { $ref: 'Missing#' } } }));
    expect(() => broken({ a: 1 })).toThrow();
  });

  it('resolves shared schemas as they were when the route was registered', () => {
    // The default compiler drops a route's own $id from the shared schemas for the routes after it:
    // a route registered before that one still resolves it, even when it first answers later.
    const compile = lazySerializerFactory()(shared, {});
    const before = compile(route(schema));
    const itself = compile(route(shared.Item));
    expect(itself({ n: 3 })).toBe('{"n":3}');
    expect(before(doc)).toBe('{"a":"x","items":[{"n":1}]}');
  });

  it('serves a fastify route', async () => {
    const app = Fastify({ schemaController: { compilersFactory: { buildSerializer: lazySerializerFactory() } } });
    app.addSchema(shared.Item);
    app.get('/x', { schema: { response: { 200: schema } } }, async () => doc);
    const res = await app.inject({ method: 'GET', url: '/x' });
    expect(res.body).toBe('{"a":"x","items":[{"n":1}]}');
    const head = await app.inject({ method: 'HEAD', url: '/x' });
    expect(head.statusCode).toBe(200);
    await app.close();
  });
});

describe('lazyValidatorCompiler', () => {
  it('compiles once, at the first call, and passes the errors on', () => {
    const ajv = new Ajv();
    let compiled = 0;
    const compile = lazyValidatorCompiler(({ schema }: { schema: object }): Validator => {
      compiled++;
      return ajv.compile(schema);
    });
    const validate = compile({ schema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } });
    expect(compiled).toBe(0);
    expect(validate({ n: 1 })).toBe(true);
    expect(validate.errors).toBeNull();
    expect(validate({})).toBe(false);
    expect(validate.errors).toMatchObject([{ keyword: 'required' }]);
    expect(validate({ n: 2 })).toBe(true);
    expect(validate.errors).toBeNull();
    expect(compiled).toBe(1);
  });
});
