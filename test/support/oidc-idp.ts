/**
 * A real OpenID Provider for SSO tests (oidc-provider in a child process, see
 * oidc-idp-process.ts) and a tiny browser that signs in through its development login and
 * consent pages.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { IdpAccount, IdpClient, IdpConfig } from './oidc-idp-process.ts';

export type { IdpAccount, IdpClient, IdpConfig };

const SCRIPT = path.resolve(import.meta.dirname, 'oidc-idp-process.ts');

export interface StartIdpOptions extends IdpConfig {
  /** Lifetime of authorization codes (default 60 s, oidc-provider's default). */
  codeTtlSeconds?: number;
  /** How long to wait for the IdP to listen (default 15 s). */
  startTimeoutMs?: number;
}

export interface RunningIdp {
  /** http://127.0.0.1:PORT, no trailing slash. */
  readonly issuer: string;
  /** What the IdP wrote to stderr so far (oidc-provider notices, server errors). */
  stderr(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
  stop(): Promise<void>;
}

export async function startIdp(options: StartIdpOptions): Promise<RunningIdp> {
  const { codeTtlSeconds, startTimeoutMs = 15_000, clients, accounts } = options;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    IDP_CONFIG: JSON.stringify({ clients, accounts } satisfies IdpConfig),
  };
  if (codeTtlSeconds !== undefined) env.IDP_CODE_TTL_SECONDS = String(codeTtlSeconds);
  const child = spawn(process.execPath, [SCRIPT], { env, stdio: ['ignore', 'pipe', 'pipe'] });

  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    // Keep the tail only: a long-lived IdP must not grow the test's memory without bound.
    stderr = (stderr + chunk).slice(-64 * 1024);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };

  const issuer = await new Promise<string>((resolve, reject) => {
    let stdout = '';
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    const onData = (chunk: string): void => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline === -1) return;
      cleanup();
      try {
        const { issuer } = JSON.parse(stdout.slice(0, newline)) as { issuer?: unknown };
        if (typeof issuer !== 'string') throw new Error('no issuer');
        resolve(issuer);
      } catch {
        reject(new Error(`IdP printed an unexpected first line: ${stdout.slice(0, newline)}\nstderr:\n${stderr}`));
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      cleanup();
      // Let the last stderr chunk arrive before quoting it.
      setImmediate(() => reject(new Error(`IdP exited before listening (code ${code}, signal ${signal}); stderr:\n${stderr}`)));
    };
    const onError = (error: Error): void => {
      cleanup();
      reject(new Error(`could not start the IdP: ${error.message}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`IdP did not listen within ${startTimeoutMs} ms; stderr:\n${stderr}`));
    }, startTimeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.once('exit', onExit);
    child.once('error', onError);
  }).catch(async (error: unknown) => {
    await stop();
    throw error;
  });
  // Nothing more is expected on stdout; keep draining it so the child can never block.
  child.stdout.resume();

  return { issuer, stderr: () => stderr, stop };
}

// ---------------------------------------------------------------------------------------
// A minimal browser: cookie jar + manual redirects + HTML form submission.

interface StoredCookie {
  name: string;
  value: string;
  path: string;
  expires: number | null;
}

class CookieJar {
  readonly #cookies = new Map<string, StoredCookie>();

  store(requestUrl: URL, setCookieHeaders: string[]): void {
    for (const header of setCookieHeaders) {
      const [pair = '', ...attributes] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      // RFC 6265 default-path: the request path up to its last '/'.
      const lastSlash = requestUrl.pathname.lastIndexOf('/');
      let cookiePath = lastSlash > 0 ? requestUrl.pathname.slice(0, lastSlash) : '/';
      let expires: number | null = null;
      for (const attribute of attributes) {
        const i = attribute.indexOf('=');
        const key = (i === -1 ? attribute : attribute.slice(0, i)).trim().toLowerCase();
        const val = i === -1 ? '' : attribute.slice(i + 1).trim();
        if (key === 'path' && val.startsWith('/')) cookiePath = val;
        else if (key === 'max-age' && /^-?\d+$/.test(val)) expires = Date.now() + Number(val) * 1000;
        else if (key === 'expires' && expires === null) {
          const t = Date.parse(val);
          if (!Number.isNaN(t)) expires = t;
        }
      }
      const key = `${name}\u0000${cookiePath}`;
      if (expires !== null && expires <= Date.now()) this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path: cookiePath, expires });
    }
  }

  header(url: URL): string | undefined {
    const now = Date.now();
    const matching = [...this.#cookies.values()]
      .filter((c) => (c.expires === null || c.expires > now) && pathMatches(url.pathname, c.path))
      .sort((a, b) => b.path.length - a.path.length);
    return matching.length ? matching.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

interface HtmlForm {
  action: string;
  method: string;
  inputs: { name: string; type: string; value: string }[];
}

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (_, entity: string) => {
    const e = entity.toLowerCase();
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[e] ?? _;
  });
}

function parseAttributes(tag: string): Map<string, string> {
  const attributes = new Map<string, string>();
  // Skip the tag name, then name, name=value, name="value" or name='value'.
  const body = tag.replace(/^<\s*[\w-]+/, '').replace(/\/?>$/, '');
  for (const m of body.matchAll(/([^\s"'=<>/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    attributes.set(m[1]!.toLowerCase(), decodeEntities(m[2] ?? m[3] ?? m[4] ?? ''));
  }
  return attributes;
}

function parseForms(html: string): HtmlForm[] {
  const forms: HtmlForm[] = [];
  for (const m of html.matchAll(/<form\b[^>]*>([\s\S]*?)<\/form\s*>/gi)) {
    const open = m[0].slice(0, m[0].indexOf('>') + 1);
    const attributes = parseAttributes(open);
    const inputs: HtmlForm['inputs'] = [];
    for (const input of m[1]!.matchAll(/<input\b[^>]*>/gi)) {
      const a = parseAttributes(input[0]);
      const name = a.get('name');
      if (name) inputs.push({ name, type: (a.get('type') ?? 'text').toLowerCase(), value: a.get('value') ?? '' });
    }
    forms.push({ action: attributes.get('action') ?? '', method: (attributes.get('method') ?? 'get').toLowerCase(), inputs });
  }
  return forms;
}

/** Text of an oidc-provider error page or any other unexpected page, for error messages. */
function summarize(html: string): string {
  return decodeEntities(html)
    .replace(/<style[\s\S]*?<\/style>/gi, '')
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 500);
}

/**
 * Follows an authorization URL through oidc-provider's development login form (submitting
 * `login` as the login name and an arbitrary password) and consent form, staying on the
 * IdP's origin. Returns the redirect to the client's redirect_uri without requesting it:
 * code, state and iss on success; error=access_denied for a login name the IdP does not
 * know; other OAuth errors (e.g. invalid_request without PKCE) as the IdP sends them.
 * Throws if the IdP answers with an error page (unknown client or redirect_uri), shows the
 * login form twice, or the flow does not finish within 20 requests.
 */
export async function driveLogin(authorizationUrl: string, login: string): Promise<URL> {
  const start = new URL(authorizationUrl);
  const origin = start.origin;
  const jar = new CookieJar();
  let next: { url: URL; method: 'GET' | 'POST'; body?: URLSearchParams } = { url: start, method: 'GET' };
  let loginSubmitted = false;

  for (let step = 0; step < 20; step++) {
    const { url, method, body } = next;
    if (url.origin !== origin) throw new Error(`refusing to send a request off the IdP's origin: ${url.href}`);
    const headers: Record<string, string> = { accept: 'text/html' };
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { method, headers, redirect: 'manual', ...(body ? { body: body.toString() } : {}) });
    jar.store(url, response.headers.getSetCookie());

    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      const location = response.headers.get('location');
      if (!location) throw new Error(`${response.status} without Location from ${url.href}`);
      const target = new URL(location, url);
      if (target.origin !== origin) return target;
      next = { url: target, method: 'GET' };
      continue;
    }

    const html = await response.text();
    if (response.status !== 200) throw new Error(`IdP answered ${response.status} at ${url.pathname}: ${summarize(html)}`);
    const form = parseForms(html).find((f) => f.method === 'post' && f.inputs.some((i) => i.name === 'prompt'));
    if (!form) throw new Error(`no interaction form at ${url.pathname}: ${summarize(html)}`);
    const prompt = form.inputs.find((i) => i.name === 'prompt')!.value;
    const fields = new URLSearchParams();
    for (const input of form.inputs) {
      if (input.name === 'login') fields.append('login', login);
      else if (input.type === 'password') fields.append(input.name, 'any password');
      else if (input.type === 'checkbox' || input.type === 'radio') continue;
      else fields.append(input.name, input.value);
    }
    if (prompt === 'login') {
      if (loginSubmitted) throw new Error(`IdP showed the login form again after submitting login ${JSON.stringify(login)} (unknown account?)`);
      loginSubmitted = true;
    } else if (prompt !== 'consent') {
      throw new Error(`unexpected interaction prompt ${JSON.stringify(prompt)} at ${url.pathname}`);
    }
    next = { url: new URL(form.action || url.href, url), method: 'POST', body: fields };
  }
  throw new Error(`authorization did not finish within 20 requests, starting at ${authorizationUrl}`);
}
