import type { CompiledQuery } from 'kysely';
import type { QueryCompiler } from '../db/database.ts';

/**
 * A route's prefetch, built and compiled once at registration instead of on every request
 * (Kysely's builder and compiler cost a few µs per read on the hot path).
 *
 * The builder runs once with opaque stand-ins for the tenant id and the path parameters.
 * Each stand-in can only be passed through as a query value: reading it as a string (say
 * `params.id.toLowerCase()`) throws, and so does touching the query string, so a builder
 * whose query depends on its input fails at startup instead of compiling the wrong shape.
 * Per request the stand-ins among the compiled parameters are swapped for the values.
 *
 * A builder could still branch on a stand-in's identity (`params.id === 'x'`); outside
 * production every request also compiles the builder for real and fails if the two differ.
 */
export type PrefetchInput = {
  readonly db: QueryCompiler;
  readonly tenantId: string;
  readonly params: Record<string, string>;
  readonly query: unknown;
};

class StandIn {
  readonly name: string;
  constructor(name: string) {
    this.name = name;
  }
  toString(): never {
    throw new PrefetchShapeError(`the prefetch read ${this.name} as text; pass request values through unchanged`);
  }
  [Symbol.toPrimitive](): never {
    return this.toString();
  }
}

export class PrefetchShapeError extends Error {}

export type PrefetchTemplate = (tenantId: string, params: Record<string, string>, query: unknown) => CompiledQuery;

export function compilePrefetch(
  where: string,
  build: (input: PrefetchInput) => { compile(): CompiledQuery },
  db: QueryCompiler,
  verify: boolean,
): PrefetchTemplate {
  const tenantStandIn = new StandIn('tenantId');
  const paramStandIns = new Map<string, StandIn>();
  const params = new Proxy({} as Record<string, string>, {
    get(_target, key) {
      if (typeof key !== 'string') return undefined;
      let standIn = paramStandIns.get(key);
      if (!standIn) paramStandIns.set(key, (standIn = new StandIn(`params.${key}`)));
      return standIn;
    },
  });
  const query = new Proxy(
    {},
    {
      get() {
        throw new PrefetchShapeError('the prefetch read the query string; only the tenant id and path parameters may shape it');
      },
    },
  );
  let template: CompiledQuery;
  try {
    template = build({ db, tenantId: tenantStandIn as unknown as string, params, query }).compile();
  } catch (error) {
    throw new Error(`route ${where}: its prefetch cannot be compiled once: ${(error as Error).message}`, { cause: error });
  }
  type Slot = { kind: 'tenant' } | { kind: 'param'; name: string } | { kind: 'constant'; value: unknown };
  const slots = template.parameters.map((value): Slot => {
    if (value === tenantStandIn) return { kind: 'tenant' };
    if (value instanceof StandIn) return { kind: 'param', name: value.name.slice('params.'.length) };
    return { kind: 'constant', value };
  });

  return (tenantId, requestParams, requestQuery) => {
    const parameters = slots.map((slot) => (slot.kind === 'tenant' ? tenantId : slot.kind === 'param' ? requestParams[slot.name] : slot.value));
    const compiled: CompiledQuery = { ...template, parameters };
    if (verify) {
      const fresh = build({ db, tenantId, params: requestParams, query: requestQuery }).compile();
      if (fresh.sql !== compiled.sql || fresh.parameters.length !== parameters.length || fresh.parameters.some((value, i) => value !== parameters[i])) {
        throw new Error(`route ${where}: its prefetch compiles differently for this request than once at startup`);
      }
    }
    return compiled;
  };
}
