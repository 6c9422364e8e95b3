/** Wires the features into the kernel: the composition used by main.ts and by the tests. */
import type { FastifyInstance } from 'fastify';
import type { Config } from './kernel/config/config.ts';
import type { Database } from './kernel/db/database.ts';
import { createMailer, type Mailer } from './kernel/mail/mailer.ts';
import type { AuditSigner } from './kernel/audit/sealer.ts';
import { loadAuditSigner } from './kernel/audit/signing.ts';
import { createKeyring, type Keyring } from './kernel/crypto/envelope.ts';
import { buildServer } from './kernel/http/server.ts';
import type { RouteDefinition } from './kernel/http/routes.ts';
import { authorizer } from './features/access/index.ts';
import { auditLogRoutes } from './features/audit-log/index.ts';
import { apiKeyRoutes, createSessionAuthenticator, identityRoutes, sessionRoutes } from './features/identity/index.ts';
import { monitoringRoutes, reportRoutes } from './features/monitoring/index.ts';
import { platformRoutes } from './features/platform/index.ts';
import { recordsRoutes } from './features/records/index.ts';
import { createRelyingParty, createTxtLookup, domainRoutes, ssoRoutes } from './features/sso/index.ts';
import { deletionRoutes, scimRoutes, settingsRoutes, tenancyRoutes } from './features/tenancy/index.ts';
import { integrationRoutes } from './features/integrations/index.ts';
import { reviewRoutes } from './features/reviews/index.ts';
import { createEgressGuard, type EgressGuard } from './kernel/net/egress.ts';

/** Outbound requests to URLs tenants choose (webhooks): public addresses, plus what the operator allows. */
export function createWebhookEgress(config: Config): EgressGuard {
  return createEgressGuard({ allowNetworks: config.egress.allowNetworks, dnsServers: config.sso.dnsServers });
}

export function allRoutes(
  config: Config,
  mailer: Mailer = createMailer(config),
  signer: AuditSigner = loadAuditSigner(config, { warn() {} }),
  keyring: Keyring = createKeyring(config, { warn() {} }),
  egress: EgressGuard = createWebhookEgress(config),
): RouteDefinition[] {
  return [
    ...platformRoutes(config),
    ...identityRoutes(config, mailer, keyring),
    ...sessionRoutes(config),
    ...apiKeyRoutes(),
    ...tenancyRoutes({ mailer, appUrl: config.appUrl }),
    ...settingsRoutes(),
    ...deletionRoutes({ mailer, appUrl: config.appUrl }),
    ...recordsRoutes(keyring),
    ...auditLogRoutes(signer),
    ...ssoRoutes({ config, relyingParty: createRelyingParty({ allowHttpIssuers: config.sso.allowHttpIssuers }), keyring }),
    ...domainRoutes({ lookupTxt: createTxtLookup(config) }),
    ...monitoringRoutes(),
    ...reportRoutes(),
    ...reviewRoutes(),
    ...scimRoutes({ mailer, appUrl: config.appUrl }),
    ...integrationRoutes({ keyring, egress, credentialMaxAgeDays: config.integrations.credentialMaxAgeDays }),
  ];
}

export async function buildApp(options: {
  config: Config;
  db: Database;
  logStream?: NodeJS.WritableStream;
  extraRoutes?: readonly RouteDefinition[];
  /** The checkpoint signing key (main.ts loads it with its logger); loaded from config when absent. */
  auditSigner?: AuditSigner;
  /** Field encryption (main.ts builds it with its logger); built from config when absent. */
  keyring?: Keyring;
  /** Tests only: rewrites the route table (the permission matrix proves it notices a weakened guard). */
  alterRoutes?: (routes: RouteDefinition[]) => RouteDefinition[];
}): Promise<FastifyInstance> {
  const mailer = createMailer(options.config);
  const egress = createWebhookEgress(options.config);
  const app = await buildServer({
    config: options.config,
    db: options.db,
    authenticator: createSessionAuthenticator({ idleMinutes: options.config.sessionIdleMinutes }),
    authorizer,
    routes: (options.alterRoutes ?? ((routes) => routes))([...allRoutes(options.config, mailer, options.auditSigner, options.keyring, egress), ...(options.extraRoutes ?? [])]),
    ...(options.logStream ? { logStream: options.logStream } : {}),
  });
  app.addHook('onClose', async () => {
    mailer.close();
    await egress.close();
  });
  return app;
}
