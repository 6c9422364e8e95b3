import Type from 'typebox';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../../kernel/config/config.ts';
import { publicRoute, type RouteDefinition } from '../../kernel/http/routes.ts';

/** RFC 9116: Expires must be under a year ahead; we always answer 180 days from now. */
const SECURITY_TXT_VALIDITY_MS = 180 * 24 * 3_600_000;

const SECURITY_POLICY = readFileSync(path.join(import.meta.dirname, '../../../SECURITY.md'), 'utf8');

export function platformRoutes(config: Pick<Config, 'securityContact' | 'securityPolicyUrl' | 'publicUrl'>): RouteDefinition[] {
  return [
    publicRoute({
      method: 'GET',
      url: '/.well-known/security-policy',
      reason: 'the disclosure policy that security.txt points to',
      schema: { summary: 'Vulnerability disclosure policy', tags: ['platform'], response: { 200: Type.String() } },
      async handler({ reply }) {
        void reply.type('text/markdown; charset=utf-8');
        return SECURITY_POLICY;
      },
    }),
    publicRoute({
      method: 'GET',
      url: '/healthz',
      reason: 'load balancers probe readiness without credentials',
      schema: { summary: 'Readiness probe', tags: ['platform'], response: { 200: Type.Object({ status: Type.Literal('ok') }) } },
      async handler() {
        return { status: 'ok' };
      },
    }),
    publicRoute({
      method: 'GET',
      url: '/.well-known/security.txt',
      reason: 'RFC 9116 vulnerability disclosure must be reachable by anyone',
      schema: { summary: 'Vulnerability disclosure (RFC 9116)', tags: ['platform'], response: { 200: Type.String() } },
      async handler({ request, reply }) {
        const origin = config.publicUrl ?? `${request.protocol}://${request.host}`;
        const expires = new Date(Date.now() + SECURITY_TXT_VALIDITY_MS);
        expires.setUTCHours(0, 0, 0, 0);
        void reply.type('text/plain; charset=utf-8');
        return [
          `Contact: ${config.securityContact}`,
          `Expires: ${expires.toISOString().replace('.000Z', 'Z')}`,
          `Policy: ${config.securityPolicyUrl ?? `${origin}/.well-known/security-policy`}`,
          `Canonical: ${origin}/.well-known/security.txt`,
          'Preferred-Languages: en',
          '',
        ].join('\n');
      },
    }),
  ];
}
