/**
 * The cost of the access decision alone, once the caller's session and membership are
 * loaded (they come with the tenant entry, in the same database round trip as the read):
 * what the guard asks the policy for every tenant request. Measured in-process over the
 * live route table's permissions and every role, for a session and for an API key.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { allRoutes } from '../src/app.ts';
import { authorizer, OWNER_ROLE, ROLES } from '../src/features/access/index.ts';
import { loadConfig } from '../src/kernel/config/config.ts';

export interface PolicyResult {
  readonly decisions: number;
  readonly microsPerDecision: number;
}

export const POLICY_TARGET_MICROS = 20;

export function measurePolicyDecision(seconds = 1): PolicyResult {
  // Throw-away keys: listing the routes must not leave development key files behind.
  const config = loadConfig({
    NODE_ENV: 'test',
    AUDIT_SIGNING_KEY: generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('hex'),
  });
  const permissions = allRoutes(config).flatMap((route) => (route.access.kind === 'tenant' ? [route.access.permission] : []));
  const roles = ROLES;
  let decisions = 0;
  let allowed = 0;
  const started = process.hrtime.bigint();
  const budget = BigInt(Math.round(seconds * 1e9));
  while (process.hrtime.bigint() - started < budget) {
    for (let i = 0; i < 1000; i++, decisions++) {
      const permission = permissions[decisions % permissions.length]!;
      const role = roles[decisions % roles.length]!;
      // As the guard does: the strict entry's role list, the caller's role(s) (a key's and its
      // creator's), and the break-glass rule of a tenant that requires SSO.
      const strictRoles = authorizer.rolesWith(permission);
      const callerRoles = decisions % 2 === 0 ? [role] : [role, OWNER_ROLE];
      if (strictRoles.length > 0 && callerRoles.every((r) => authorizer.can(r, permission)) && !authorizer.isBreakGlassRole(role)) allowed++;
    }
  }
  const elapsed = Number(process.hrtime.bigint() - started) / 1000;
  if (allowed === 0) throw new Error('the policy allowed nothing: the measurement is broken');
  return { decisions, microsPerDecision: elapsed / decisions };
}

export function policyLine(result: PolicyResult): string {
  const verdict = result.microsPerDecision <= POLICY_TARGET_MICROS ? 'PASS' : 'MISS';
  return `policy decision alone (principal and membership loaded): ${result.microsPerDecision.toFixed(3)} µs per request over ${result.decisions.toLocaleString('en-US')} decisions   target: <= ${POLICY_TARGET_MICROS} µs -> ${verdict}`;
}
