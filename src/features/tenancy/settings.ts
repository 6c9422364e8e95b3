/**
 * The tenant's security settings. Built so far: requireMfa, requireSso and
 * sessionIdleMinutes, all enforced by the guard (cn_enter_tenant), and auditRetentionDays,
 * which the retention purge reads (and the database itself bounds to at least 90 days). The rest of API.md's
 * settings arrive with the capabilities they govern (IP allow-list, guest sharing, AI).
 */
import { sql } from 'kysely';
import Type from 'typebox';
import type { Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { TenantParams } from '../../kernel/http/schemas.ts';
import { BREAK_GLASS_ROLES } from '../access/index.ts';

const Settings = Type.Object({ requireMfa: Type.Boolean(), requireSso: Type.Boolean(), sessionIdleMinutes: Type.Integer(), auditRetentionDays: Type.Integer() });
const SettingsPatch = Type.Object(
  {
    requireMfa: Type.Optional(Type.Boolean()),
    requireSso: Type.Optional(Type.Boolean()),
    sessionIdleMinutes: Type.Optional(Type.Integer({ minimum: 5, maximum: 1440 })),
    auditRetentionDays: Type.Optional(Type.Integer({ minimum: 90, maximum: 3650 })),
  },
  { additionalProperties: false, minProperties: 1 },
);

/** The schema's default too (tenant_settings.audit_retention_days). */
export const DEFAULT_AUDIT_RETENTION_DAYS = 365;

async function readSettings(tx: Tx, tenantId: string) {
  const row = await tx.selectFrom('tenant_settings').select(['require_mfa', 'require_sso', 'session_idle_minutes', 'audit_retention_days']).where('tenant_id', '=', tenantId).executeTakeFirst();
  return {
    requireMfa: row?.require_mfa ?? false,
    requireSso: row?.require_sso ?? false,
    sessionIdleMinutes: row?.session_idle_minutes ?? 30,
    auditRetentionDays: row?.audit_retention_days ?? DEFAULT_AUDIT_RETENTION_DAYS,
  };
}

/**
 * Requiring SSO needs a working IdP configuration and an owner who can still get in
 * when the IdP cannot (break-glass: password plus our second factor).
 */
async function assertSsoCanBeRequired(tx: Tx, tenantId: string): Promise<void> {
  const sso = await tx.selectFrom('tenant_sso').select('enabled').where('tenant_id', '=', tenantId).executeTakeFirst();
  if (!sso?.enabled) throw new AppError('sso.not_configured');
  const breakGlass = await tx
    .selectFrom('memberships as m')
    .innerJoin('users as u', 'u.id', 'm.user_id')
    .select('u.id')
    .where('m.tenant_id', '=', tenantId)
    .where('m.role', 'in', BREAK_GLASS_ROLES)
    .where('u.mfa_enabled', '=', true)
    .executeTakeFirst();
  if (!breakGlass) throw new AppError('sso.no_break_glass');
}

export function settingsRoutes(): RouteDefinition[] {
  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/settings',
      permission: 'settings.read',
      schema: { summary: "The tenant's security settings", tags: ['settings'], params: TenantParams, response: { 200: Settings } },
      async handler({ tx, tenantId }) {
        return readSettings(tx, tenantId);
      },
    }),
    tenantRoute({
      method: 'PATCH',
      url: '/api/v1/tenants/:tenantId/settings',
      permission: 'settings.manage',
      schema: { summary: "Change the tenant's security settings", tags: ['settings'], params: TenantParams, body: SettingsPatch, response: { 200: Settings } },
      async handler({ tx, tenantId, principal, body, audit }) {
        const before = await readSettings(tx, tenantId);
        const after = { ...before, ...body };
        if (after.requireMfa && !before.requireMfa) {
          // Whoever turns MFA on must have it (for a key: its creator), or they would lock themselves out.
          const caller = await tx.selectFrom('users').select('mfa_enabled').where('id', '=', principal.userId).executeTakeFirstOrThrow();
          if (!caller.mfa_enabled) throw new AppError('auth.mfa_required', { status: 409, detail: 'Turn on two-factor authentication for yourself first' });
        }
        if (after.requireSso && !before.requireSso) await assertSsoCanBeRequired(tx, tenantId);
        const values = { require_mfa: after.requireMfa, require_sso: after.requireSso, session_idle_minutes: after.sessionIdleMinutes, audit_retention_days: after.auditRetentionDays };
        await tx
          .insertInto('tenant_settings')
          .values({ tenant_id: tenantId, ...values })
          .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ ...values, updated_at: sql`now()` }))
          .execute();
        await audit({ action: 'settings.updated', target: { type: 'tenant', id: tenantId }, metadata: { before, after } });
        return after;
      },
    }),
  ];
}
