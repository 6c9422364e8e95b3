import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { buildServer } from './server.ts';
import { publicRoute, type RouteDefinition } from './routes.ts';

// Threat: a new endpoint ships without an access check. The server must refuse to start instead.
const unusedDb = new Proxy({}, { get: () => { throw new Error('no database in this test'); } }) as Database;
const deps = {
  config: loadConfig({ NODE_ENV: 'test' }),
  db: unusedDb,
  authenticator: { resolveUser: async () => null, assertRecentAuthentication: async () => {} },
  authorizer: { can: () => false, isBreakGlassRole: () => false, rolesWith: () => [] },
};

describe('route registry', () => {
  it('refuses to start when a route declares no access', async () => {
    const bare = { method: 'GET', url: '/api/v1/naked', schema: { summary: 'x', response: {} }, handler: async () => ({}) } as unknown as RouteDefinition;
    await expect(buildServer({ ...deps, routes: [bare] })).rejects.toThrow(/no valid access declaration/);
  });

  it('refuses a public route without a reason and a tenant route without a permission', async () => {
    const noReason = publicRoute({ method: 'GET', url: '/x', reason: ' ', schema: { summary: 'x', response: {} }, handler: async () => ({}) });
    await expect(buildServer({ ...deps, routes: [noReason] })).rejects.toThrow(/no valid access declaration/);
    const noPermission = {
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/x',
      access: { kind: 'tenant', permission: '' },
      schema: { summary: 'x', response: {} },
      handler: async () => ({}),
    } as unknown as RouteDefinition;
    await expect(buildServer({ ...deps, routes: [noPermission] })).rejects.toThrow(/no valid access declaration/);
  });

  it('refuses a route a plugin registers directly on fastify without an access declaration', async () => {
    const app = await buildServer({ ...deps, routes: [] });
    expect(() => app.get('/sneaky', async () => 'hi')).toThrow(/no valid access declaration/);
    await app.close();
  });

  it('starts with declared routes and serves them', async () => {
    const ok = publicRoute({
      method: 'GET',
      url: '/ping',
      reason: 'test route',
      schema: { summary: 'ping', response: { 200: Type.Object({ pong: Type.Boolean() }) } },
      handler: async () => ({ pong: true, secret: 'filtered by the response schema' }),
    });
    const app = await buildServer({ ...deps, routes: [ok] });
    const response = await app.inject({ method: 'GET', url: '/ping' });
    expect(response.json()).toEqual({ pong: true });
    await app.close();
  });
});

