/** A user's own sessions: see where they are signed in, and sign any of them out. */
import { sql } from 'kysely';
import Type from 'typebox';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { userRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { Timestamp, Uuid } from '../../kernel/http/schemas.ts';
import { recordAuthEvent } from './auth-events.ts';
import { assertAccountSession } from './step-up.ts';

const SessionInfo = Type.Object({
  id: Uuid,
  createdAt: Timestamp,
  lastSeenAt: Timestamp,
  expiresAt: Timestamp,
  ip: Type.Union([Type.String(), Type.Null()]),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  current: Type.Boolean(),
});
const SessionParams = Type.Object({ id: Uuid }, { additionalProperties: false });

export function sessionRoutes(config: { sessionIdleMinutes: number }): RouteDefinition[] {
  return [
    userRoute({
      method: 'GET',
      url: '/api/v1/auth/sessions',
      schema: { summary: 'Your live sessions (device, address, created, last seen)', tags: ['identity'], response: { 200: Type.Object({ items: Type.Array(SessionInfo), nextCursor: Type.Null() }) } },
      async handler({ db, principal }) {
        assertAccountSession(principal);
        const rows = await db.withGlobal((tx) =>
          tx
            .selectFrom('sessions')
            .select(['id', 'created_at', 'last_seen_at', 'expires_at', 'ip', 'user_agent'])
            .where('user_id', '=', principal.userId)
            .where('revoked_at', 'is', null)
            .where('expires_at', '>', sql<Date>`now()`)
            .where('last_seen_at', '>=', sql<Date>`now() - make_interval(mins => ${config.sessionIdleMinutes})`)
            .orderBy('created_at', 'desc')
            .limit(100)
            .execute(),
        );
        return {
          items: rows.map((row) => ({
            id: row.id,
            createdAt: row.created_at.toISOString(),
            lastSeenAt: row.last_seen_at.toISOString(),
            expiresAt: row.expires_at.toISOString(),
            ip: row.ip,
            userAgent: row.user_agent,
            current: row.id === principal.sessionId,
          })),
          nextCursor: null,
        };
      },
    }),
    userRoute({
      method: 'DELETE',
      url: '/api/v1/auth/sessions/:id',
      status: 204,
      schema: { summary: 'Sign out one of your sessions', tags: ['identity'], params: SessionParams, response: { 204: Type.Null() } },
      async handler({ db, principal, params, meta }) {
        assertAccountSession(principal);
        await db.systemDb({ reason: 'revoke a session and record it in every tenant of the user' }).transaction(async (tx) => {
          // Only the caller's own sessions: anyone else's id is the same 404 as a missing one.
          const row = await tx
            .updateTable('sessions')
            .set({ revoked_at: sql`now()` })
            .where('id', '=', params.id)
            .where('user_id', '=', principal.userId)
            .where('revoked_at', 'is', null)
            .returning('id')
            .executeTakeFirst();
          if (!row) throw new AppError('not_found');
          await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.session.revoked', target: { type: 'session', id: params.id } });
        });
      },
    }),
  ];
}
