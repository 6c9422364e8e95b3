/**
 * The HTTP plumbing: request ids, redacted logs, security headers, body limits, strict
 * schema validation, problem+json errors, the OpenAPI document and the route registry.
 */
import cookie from '@fastify/cookie';
import swagger from '@fastify/swagger';
import { Ajv, type Options as AjvOptions } from 'ajv';
import addFormats from 'ajv-formats';
import helmet from 'helmet';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Config } from '../config/config.ts';
import { InvalidTenantIdError, type Database } from '../db/database.ts';
import { AppError, scimErrorBody, toProblem } from './errors.ts';
import type { Authenticator, Authorizer } from './principal.ts';
import { enforceAccessDeclarations, registerRoutes, type RouteDefinition } from './routes.ts';

export const BODY_LIMIT_BYTES = 1024 * 1024;

/** Paths and keys never written to logs. */
export const LOG_REDACT_PATHS = [
  'req.headers.cookie',
  'req.headers.authorization',
  'req.headers["x-csrf-token"]',
  'res.headers["set-cookie"]',
  '*.password',
  '*.currentPassword',
  '*.newPassword',
  '*.token',
  '*.key',
  '*.secret',
  '*.csrfToken',
  '*.code',
];

/**
 * A request URL as logged: query values replaced, names kept. Query strings carry personal
 * data (`?email=`) and one-time secrets (an SSO callback's `code` and `state`).
 */
export function redactQuery(url: string): string {
  const start = url.indexOf('?');
  if (start < 0) return url;
  const params = url
    .slice(start + 1)
    .split('&')
    .map((param) => {
      const equals = param.indexOf('=');
      return equals < 0 ? param : `${param.slice(0, equals)}=[redacted]`;
    });
  return `${url.slice(0, start)}?${params.join('&')}`;
}

export interface ServerDeps {
  readonly config: Pick<Config, 'logLevel' | 'trustProxy' | 'publicUrl' | 'isProduction' | 'sessionIdleMinutes'> & Partial<Pick<Config, 'tls' | 'alerts'>>;
  readonly db: Database;
  readonly authenticator: Authenticator;
  readonly authorizer: Authorizer;
  readonly routes: readonly RouteDefinition[];
  /** Tests capture logs here. */
  readonly logStream?: NodeJS.WritableStream;
}

function makeAjv(options: AjvOptions): Ajv {
  const ajv = new Ajv({ allErrors: false, strict: true, removeAdditional: false, useDefaults: true, ...options });
  addFormats.default(ajv);
  return ajv;
}

const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Refuses unsafe requests from another site (defence in depth beside SameSite and the CSRF token). */
function assertSameOrigin(request: FastifyRequest, publicUrl: string | undefined): void {
  if (!UNSAFE_METHODS.has(request.method)) return;
  if (request.headers['sec-fetch-site'] === 'cross-site') throw new AppError('csrf.invalid', { detail: 'Cross-site request refused' });
  const origin = request.headers.origin;
  if (origin === undefined) return;
  const expected = publicUrl ?? `${request.protocol}://${request.host}`;
  if (origin !== expected) throw new AppError('csrf.invalid', { detail: 'Cross-site request refused' });
}

function toAppError(error: FastifyError | Error): AppError {
  if (error instanceof AppError) return error;
  if (error instanceof InvalidTenantIdError) return new AppError('not_found', { cause: error });
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) {
    const first = fastifyError.validation[0];
    const where = fastifyError.validationContext ?? 'request';
    const field = first?.instancePath ? `${where}${first.instancePath.replaceAll('/', '.')}` : where;
    const extra = first?.keyword === 'additionalProperties' ? ` (unknown field "${String(first.params.additionalProperty)}")` : '';
    return new AppError('validation.failed', { detail: `${field} ${first?.message ?? 'is invalid'}${extra}`.slice(0, 300), cause: error });
  }
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('request.too_large', { cause: error });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('request.unsupported_media_type', { cause: error });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError('request.malformed', { cause: error });
    default:
      break;
  }
  if (error instanceof SyntaxError || fastifyError.statusCode === 400) return new AppError('request.malformed', { cause: error });
  if (fastifyError.statusCode === 413) return new AppError('request.too_large', { cause: error });
  if (fastifyError.statusCode === 415) return new AppError('request.unsupported_media_type', { cause: error });
  if (fastifyError.statusCode === 503) return new AppError('unavailable', { cause: error });
  return new AppError('internal', { cause: error });
}

/** TLS 1.2 suites with forward secrecy and an AEAD cipher; TLS 1.3's suites are all AEAD. */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

function httpsServerFactory(tls: { readonly certPem: string; readonly keyPem: string }) {
  return (handler: (request: IncomingMessage, response: ServerResponse) => void) =>
    // Fastify types its raw server as http.Server; an https.Server serves the same interface.
    createHttpsServer({ cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2', ciphers: TLS12_CIPHERS, honorCipherOrder: true }, handler) as unknown as Server;
}

export async function buildServer(deps: ServerDeps): Promise<FastifyInstance> {
  const bodyAjv = makeAjv({ coerceTypes: false });
  const parameterAjv = makeAjv({ coerceTypes: 'array' });

  const app = Fastify({
    logger: {
      level: deps.config.logLevel,
      redact: { paths: LOG_REDACT_PATHS, censor: '[redacted]' },
      serializers: {
        // Fastify's own request fields, with the query values redacted; anything else passed as
        // `req` is kept as it is (the redact paths above still apply to it).
        req: (request: FastifyRequest) =>
          'raw' in request && typeof request.url === 'string'
            ? { method: request.method, url: redactQuery(request.url), host: request.host, remoteAddress: request.ip, remotePort: request.socket?.remotePort }
            : (request as unknown as Record<string, unknown>),
      },
      ...(deps.logStream ? { stream: deps.logStream } : {}),
    },
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    trustProxy: deps.config.trustProxy.length > 0 ? [...deps.config.trustProxy] : false,
    // HTTPS served by us: TLS 1.2 or 1.3 only, AEAD suites only (the server's order).
    ...(deps.config.tls ? { serverFactory: httpsServerFactory(deps.config.tls) } : {}),
    bodyLimit: BODY_LIMIT_BYTES,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { maxParamLength: 200 },
    // Router-level errors (malformed URL, over-long path parameter) skip hooks and the
    // error handler: answer them as problem+json with the safe headers ourselves.
    frameworkErrors: (error, request, reply) => {
      const appError = new AppError('validation.failed', { detail: 'The request path is not valid', cause: error });
      void (reply as FastifyReply)
        .code(appError.status)
        .headers({ 'x-request-id': request.id, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' })
        .type('application/problem+json')
        .send(JSON.stringify(toProblem(appError)));
    },
  });
  // JSON is the only body we accept; anything else is 415, not a validation error.
  app.removeContentTypeParser('text/plain');

  // Bodies are validated strictly (no type coercion, unknown fields rejected); path and
  // query strings arrive as text, so they are coerced to the declared types.
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? bodyAjv : parameterAjv).compile(schema));

  enforceAccessDeclarations(app);

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const appError = toAppError(error);
    if (appError.status >= 500) request.log.error({ err: error }, 'request failed');
    else request.log.info({ code: appError.code }, 'request refused');
    for (const [name, value] of Object.entries(appError.headers)) void reply.header(name, value);
    // SCIM clients read SCIM's error format (RFC 7644 3.12), also for a body that did not parse.
    if (request.url.startsWith('/scim/')) {
      const problem = toProblem(appError);
      const body = scimErrorBody(appError.status, problem.detail ?? problem.title, appError.status === 400 ? 'invalidSyntax' : undefined);
      return reply.code(appError.status).type('application/scim+json').send(JSON.stringify(body));
    }
    return reply.code(appError.status).type('application/problem+json').send(JSON.stringify(toProblem(appError)));
  });
  // SCIM clients send application/scim+json: parsed exactly like JSON (same limits and prototype-poisoning checks).
  app.addContentTypeParser('application/scim+json', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));

  app.setNotFoundHandler((request, reply) =>
    reply.code(404).type('application/problem+json').send(JSON.stringify(toProblem(new AppError('not_found')))),
  );

  await app.register(cookie);
  // Built once: @fastify/helmet rebuilt the middleware (parsing the CSP) on every request.
  const securityHeaders = helmet({
    // A strict CSP of our own: helmet's defaults allow inline styles.
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        connectSrc: ["'self'"],
        fontSrc: ["'self'"],
        objectSrc: ["'none'"],
        baseUri: ["'none'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
      },
    },
    crossOriginEmbedderPolicy: true,
  });
  app.addHook('onRequest', (request, reply, done) => securityHeaders(request.raw, reply.raw, (error) => done(error as Error | undefined)));
  // After helmet, so that a refused request still carries the security headers.
  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id);
    void reply.header('cache-control', 'no-store');
    assertSameOrigin(request, deps.config.publicUrl);
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'CustomerNode API', version: '1' },
      components: {
        securitySchemes: {
          session: { type: 'apiKey', in: 'cookie', name: 'cn_session' },
        },
      },
    },
  });

  app.route({
    method: 'GET',
    url: '/api/v1/openapi.json',
    config: { access: { kind: 'public', reason: 'the API contract is public documentation' } },
    schema: { hide: true },
    handler: async () => app.swagger(),
  });

  registerRoutes(app, deps.routes, deps);
  return app;
}
