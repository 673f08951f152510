// Route schemas compiled at a route's first use instead of when the route is registered (issue 20:
// controller memory). fastify compiles, for every route and its HEAD twin, a fast-json-stringify
// serializer per response status and content type and an Ajv validator per request part, all at
// start-up, and keeps each one (its generated source, bytecode and closures) for the life of the
// process: 4.9 MiB of live heap at idle, most of it for routes a controller never or rarely
// serves (BENCHMARKS.md, "Memory (issue 20)", morning pass). Here each is compiled by the same
// compiler, with the same inputs, when it is first called.
//
// What changes: a schema that fails to compile fails its route's first request or response (a 500
// through the error handler) instead of the start; the route tests compile every schema they reach.
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler';

type SerializerFactory = ReturnType<typeof SerializerSelector>;
type SerializerCompiler = ReturnType<SerializerFactory>;
type Serializer = ReturnType<SerializerCompiler>;

/**
 * fastify's default serializer factory (@fastify/fast-json-stringify-compiler), each serializer
 * compiled at its first call. For `schemaController.compilersFactory.buildSerializer`.
 *
 * The default compiler removes a route's own `$id` from the shared schemas it resolves `$ref`s
 * against, and that removal carries over to every route compiled after it. So that each
 * serializer is compiled against the same shared schemas as at start-up, whatever the order of
 * first responses, the removal is done here in registration order, and each route keeps the set
 * of its moment.
 */
export function lazySerializerFactory(): SerializerFactory {
  const build = SerializerSelector();
  return (externalSchemas, options) => {
    let shared = externalSchemas as Record<string, unknown> | undefined;
    return (route) => {
      const id = (route.schema as { $id?: unknown } | undefined)?.$id;
      if (shared && typeof id === 'string' && shared[id]) {
        shared = { ...shared };
        delete shared[id];
      }
      const mine = shared;
      let serialize: Serializer | undefined;
      return (doc) => {
        serialize ??= build(mine, options)(route);
        return serialize(doc);
      };
    };
  };
}

/** An Ajv-style validator: returns false and sets `errors` on a failure. */
export type Validator = ((data: unknown) => unknown) & { errors?: unknown };

/** A validator compiler whose validators are compiled at their first call; `errors` is passed on. */
export function lazyValidatorCompiler<R, V extends Validator>(compile: (route: R) => V): (route: R) => V {
  return (route) => {
    let validate: V | undefined;
    const lazy: Validator = (data) => {
      validate ??= compile(route);
      const result = validate(data);
      lazy.errors = validate.errors;
      return result;
    };
    return lazy as V;
  };
}
