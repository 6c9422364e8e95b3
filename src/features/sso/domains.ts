/**
 * Email domains a tenant proves it controls, by a DNS TXT record. Only a verified domain
 * lets the tenant's IdP sign in to an account that already exists with an address there:
 * otherwise any tenant's IdP could assert anyone's email and take the account over.
 */
import { Resolver } from 'node:dns/promises';
import { sql } from 'kysely';
import Type from 'typebox';
import type { Config } from '../../kernel/config/config.ts';
import { generateToken } from '../../kernel/crypto/tokens.ts';
import { isUniqueViolation, type Tx } from '../../kernel/db/database.ts';
import { AppError, notFound } from '../../kernel/http/errors.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { TenantItemParams, TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';

export const TXT_PREFIX = '_customernode-challenge';
const TXT_VALUE_PREFIX = 'customernode-domain-verification=';

const DomainName = Type.String({
  minLength: 3,
  maxLength: 253,
  // Lower-case letters, digits and hyphens in dot-separated labels, at least two labels.
  pattern: '^(?=.{3,253}$)([a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\.)+[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$',
});

const Domain = Type.Object({
  id: Uuid,
  domain: Type.String(),
  verified: Type.Boolean(),
  verifiedAt: Type.Union([Timestamp, Type.Null()]),
  txtRecord: Type.Object({ name: Type.String(), value: Type.String() }),
  createdAt: Timestamp,
});

type DomainRow = { id: string; domain: string; challenge: string; verified_at: Date | null; created_at: Date };

function present(row: DomainRow) {
  return {
    id: row.id,
    domain: row.domain,
    verified: row.verified_at !== null,
    verifiedAt: row.verified_at ? new Date(row.verified_at).toISOString() : null,
    txtRecord: { name: `${TXT_PREFIX}.${row.domain}`, value: `${TXT_VALUE_PREFIX}${row.challenge}` },
    createdAt: new Date(row.created_at).toISOString(),
  };
}

/** Whether this tenant has verified the domain of email. */
export async function isVerifiedDomain(tx: Tx, tenantId: string, email: string): Promise<boolean> {
  const domain = email.slice(email.lastIndexOf('@') + 1).toLowerCase();
  const row = await tx.selectFrom('tenant_domains').select('id').where('tenant_id', '=', tenantId).where('domain', '=', domain).where('verified_at', 'is not', null).executeTakeFirst();
  return row !== undefined;
}

export function createTxtLookup(config: Pick<Config, 'sso'>): (name: string) => Promise<string[]> {
  return async (name) => {
    const resolver = new Resolver({ timeout: 3000, tries: 2 });
    if (config.sso.dnsServers.length > 0) resolver.setServers([...config.sso.dnsServers]);
    try {
      return (await resolver.resolveTxt(name)).map((chunks) => chunks.join(''));
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA') return [];
      throw new AppError('domain.unverified', { detail: `The DNS lookup failed (${typeof code === 'string' ? code : 'error'}); try again`, cause: error });
    }
  };
}

export function domainRoutes(options: { lookupTxt: (name: string) => Promise<string[]> }): RouteDefinition[] {
  const { lookupTxt } = options;
  const columns = ['id', 'domain', 'challenge', 'verified_at', 'created_at'] as const;
  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/domains',
      permission: 'sso.manage',
      schema: { summary: "The tenant's email domains and their verification", tags: ['sso'], params: TenantParams, response: { 200: Type.Object({ items: Type.Array(Domain) }) } },
      async handler({ tx, tenantId }) {
        const rows = await tx.selectFrom('tenant_domains').select(columns).where('tenant_id', '=', tenantId).orderBy('domain').execute();
        return { items: rows.map(present) };
      },
    }),
    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/domains',
      permission: 'sso.manage',
      status: 201,
      schema: {
        summary: 'Claim an email domain; publish the returned TXT record, then verify',
        tags: ['sso'],
        params: TenantParams,
        body: Type.Object({ domain: DomainName }, { additionalProperties: false }),
        response: { 201: Domain },
      },
      async handler({ tx, tenantId, body, audit }) {
        const domain = body.domain.toLowerCase();
        const row = await tx
          .insertInto('tenant_domains')
          .values({ tenant_id: tenantId, domain, challenge: generateToken() })
          .onConflict((oc) => oc.columns(['tenant_id', 'domain']).doNothing())
          .returning(columns)
          .executeTakeFirst();
        if (!row) throw new AppError('validation.failed', { detail: 'This tenant already claimed that domain' });
        await audit({ action: 'sso.domain.added', target: { type: 'domain', id: row.id }, metadata: { domain } });
        return present(row);
      },
    }),
    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/domains/:id/verify',
      permission: 'sso.manage',
      schema: { summary: 'Look up the TXT record and mark the domain verified', tags: ['sso'], params: TenantItemParams, response: { 200: Domain } },
      async handler({ tx, tenantId, params, audit }) {
        const row = await tx.selectFrom('tenant_domains').select(columns).where('tenant_id', '=', tenantId).where('id', '=', params.id).executeTakeFirst();
        if (!row) throw notFound();
        if (row.verified_at !== null) return present(row);
        const expected = `${TXT_VALUE_PREFIX}${row.challenge}`;
        const found = await lookupTxt(`${TXT_PREFIX}.${row.domain}`);
        if (!found.includes(expected)) {
          throw new AppError('domain.unverified', { detail: `No TXT record ${TXT_PREFIX}.${row.domain} with the expected value was found` });
        }
        // A domain is verified by one tenant at a time: the unique index refuses a second
        // (this tenant cannot see the other's row, and must not learn more than that).
        let verified: DomainRow;
        try {
          verified = await tx
            .updateTable('tenant_domains')
            .set({ verified_at: sql`now()` })
            .where('tenant_id', '=', tenantId)
            .where('id', '=', row.id)
            .returning(columns)
            .executeTakeFirstOrThrow();
        } catch (error) {
          if (isUniqueViolation(error)) throw new AppError('domain.taken', { cause: error });
          throw error;
        }
        await audit({ action: 'sso.domain.verified', target: { type: 'domain', id: row.id }, metadata: { domain: row.domain } });
        return present(verified);
      },
    }),
    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/domains/:id',
      permission: 'sso.manage',
      status: 204,
      schema: { summary: 'Give up a domain claim', tags: ['sso'], params: TenantItemParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, params, audit }) {
        const row = await tx.deleteFrom('tenant_domains').where('tenant_id', '=', tenantId).where('id', '=', params.id).returning(['id', 'domain']).executeTakeFirst();
        if (!row) throw notFound();
        await audit({ action: 'sso.domain.removed', target: { type: 'domain', id: row.id }, metadata: { domain: row.domain } });
      },
    }),
  ];
}
