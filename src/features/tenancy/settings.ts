/**
 * The tenant policy center. requireMfa, requireSso, sessionIdleMinutes and ipAllowlist are
 * enforced by the guard on every request (the tenant entry reads them); auditRetentionDays by
 * the retention purge (the database itself bounds it to at least 90 days); allowedEmailDomains
 * by invitations and provisioning; guestSharing and aiEnabled are the switches the sharing
 * and AI capabilities must consult (both off by default: nothing leaves the tenant unless an
 * admin turns it on). Every change is audited with before and after.
 */
import { sql } from 'kysely';
import Type from 'typebox';
import type { Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { TenantParams } from '../../kernel/http/schemas.ts';
import { BREAK_GLASS_ROLES, type Role } from '../access/index.ts';
import { ipAllowed, networkAddress, parseCidr } from '../../kernel/http/ip-allowlist.ts';

const Cidr = Type.String({ minLength: 2, maxLength: 60, description: 'An IPv4 or IPv6 network in CIDR notation, or one address' });
const Domain = Type.String({ minLength: 1, maxLength: 253, pattern: '^(?=.{1,253}$)([a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\.)+[a-zA-Z]{2,63}$' });
const Settings = Type.Object({
  requireMfa: Type.Boolean(),
  requireSso: Type.Boolean(),
  sessionIdleMinutes: Type.Integer(),
  auditRetentionDays: Type.Integer(),
  guestSharing: Type.Boolean(),
  aiEnabled: Type.Boolean(),
  ipAllowlist: Type.Array(Type.String()),
  allowedEmailDomains: Type.Array(Type.String()),
  accessReviewUnanswered: Type.Union([Type.Literal('flag'), Type.Literal('revoke')]),
  accessReviewIntervalDays: Type.Integer(),
  scimDefaultRole: Type.String(),
});
const SettingsPatch = Type.Object(
  {
    requireMfa: Type.Optional(Type.Boolean()),
    requireSso: Type.Optional(Type.Boolean()),
    sessionIdleMinutes: Type.Optional(Type.Integer({ minimum: 5, maximum: 1440 })),
    auditRetentionDays: Type.Optional(Type.Integer({ minimum: 90, maximum: 3650 })),
    guestSharing: Type.Optional(Type.Boolean()),
    aiEnabled: Type.Optional(Type.Boolean()),
    ipAllowlist: Type.Optional(Type.Array(Cidr, { maxItems: 100, uniqueItems: true })),
    allowedEmailDomains: Type.Optional(Type.Array(Domain, { maxItems: 100, uniqueItems: true })),
    /** What an access review does with entries nobody answered by its deadline. */
    accessReviewUnanswered: Type.Optional(Type.Union([Type.Literal('flag'), Type.Literal('revoke')])),
    /** How often an access review is due (a reminder alert after that). */
    accessReviewIntervalDays: Type.Optional(Type.Integer({ minimum: 7, maximum: 730 })),
    /** The role SCIM-provisioned members get (never owner: an identity provider cannot make owners). */
    scimDefaultRole: Type.Optional(Type.Union([Type.Literal('admin'), Type.Literal('member'), Type.Literal('viewer'), Type.Literal('guest')])),
    /** Saving an allow-list that excludes the caller's own address needs this (or they lock themselves out). */
    confirmIpAllowlist: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false, minProperties: 1 },
);

/** The schema's default too (tenant_settings.audit_retention_days). */
export const DEFAULT_AUDIT_RETENTION_DAYS = 365;

export async function readSettings(tx: Tx, tenantId: string) {
  const row = await tx
    .selectFrom('tenant_settings')
    .select(['require_mfa', 'require_sso', 'session_idle_minutes', 'audit_retention_days', 'guest_sharing', 'ai_enabled', 'allowed_email_domains', 'access_review_unanswered', 'access_review_interval_days', 'scim_default_role'])
    .select(sql<string[]>`ip_allowlist::text[]`.as('ip_allowlist'))
    .where('tenant_id', '=', tenantId)
    .executeTakeFirst();
  return {
    requireMfa: row?.require_mfa ?? false,
    requireSso: row?.require_sso ?? false,
    sessionIdleMinutes: row?.session_idle_minutes ?? 30,
    auditRetentionDays: row?.audit_retention_days ?? DEFAULT_AUDIT_RETENTION_DAYS,
    guestSharing: row?.guest_sharing ?? false,
    aiEnabled: row?.ai_enabled ?? false,
    ipAllowlist: row?.ip_allowlist ?? [],
    allowedEmailDomains: row?.allowed_email_domains ?? [],
    accessReviewUnanswered: row?.access_review_unanswered ?? 'flag',
    accessReviewIntervalDays: row?.access_review_interval_days ?? 90,
    scimDefaultRole: row?.scim_default_role ?? 'member',
  };
}

/** The CIDRs as PostgreSQL will store them (network address, prefix), or a 400 naming the first bad entry. */
function normalizeAllowlist(entries: readonly string[]): string[] {
  return entries.map((entry) => {
    const parsed = parseCidr(entry);
    if (!parsed) throw new AppError('validation.failed', { detail: `ipAllowlist: "${entry.slice(0, 60)}" is not an IP network (CIDR) or address` });
    return `${networkAddress(parsed)}/${parsed.prefix}`;
  });
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
      async handler({ tx, tenantId, principal, body, audit, meta }) {
        const before = await readSettings(tx, tenantId);
        const { confirmIpAllowlist, ...changes } = body;
        const after = {
          ...before,
          ...changes,
          ...(changes.ipAllowlist ? { ipAllowlist: normalizeAllowlist(changes.ipAllowlist) } : {}),
          ...(changes.allowedEmailDomains ? { allowedEmailDomains: changes.allowedEmailDomains.map((domain) => domain.toLowerCase()) } : {}),
        };
        // An admin cannot lock themselves out by accident: their own address must stay allowed, unless confirmed.
        if (changes.ipAllowlist && !ipAllowed(after.ipAllowlist, meta.ip) && confirmIpAllowlist !== true) {
          throw new AppError('settings.ip_allowlist_excludes_you', {
            detail: `Your address (${meta.ip ?? 'unknown'}) is not in the new list; add it, or send confirmIpAllowlist: true to save anyway`,
          });
        }
        if (after.requireMfa && !before.requireMfa) {
          // Whoever turns MFA on must have it (for a key: its creator), or they would lock themselves out.
          const caller = await tx.selectFrom('users').select('mfa_enabled').where('id', '=', principal.userId).executeTakeFirstOrThrow();
          if (!caller.mfa_enabled) throw new AppError('auth.mfa_required', { status: 409, detail: 'Turn on two-factor authentication for yourself first' });
        }
        if (after.requireSso && !before.requireSso) await assertSsoCanBeRequired(tx, tenantId);
        const values = {
          require_mfa: after.requireMfa,
          require_sso: after.requireSso,
          session_idle_minutes: after.sessionIdleMinutes,
          audit_retention_days: after.auditRetentionDays,
          guest_sharing: after.guestSharing,
          ai_enabled: after.aiEnabled,
          ip_allowlist: after.ipAllowlist,
          allowed_email_domains: after.allowedEmailDomains,
          access_review_unanswered: after.accessReviewUnanswered,
          access_review_interval_days: after.accessReviewIntervalDays,
          scim_default_role: after.scimDefaultRole as Role,
        };
        await tx
          .insertInto('tenant_settings')
          .values({ tenant_id: tenantId, ...values })
          .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ ...values, updated_at: sql`now()` }))
          .execute();
        // As stored (PostgreSQL's own spelling of each network).
        const saved = await readSettings(tx, tenantId);
        await audit({ action: 'settings.updated', target: { type: 'tenant', id: tenantId }, metadata: { before, after: saved } });
        return saved;
      },
    }),
  ];
}
