/**
 * The only module that reads process.env. It parses the environment once at boot,
 * validates every value, freezes the result and fails closed: a bad or missing value
 * throws a ConfigError naming the variable (never its value, which may be a secret).
 */
import { createPrivateKey } from 'node:crypto';
import { readFileSync, realpathSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Cron } from 'croner';
import { parseCidr } from '../http/ip-allowlist.ts';

export type NodeEnv = 'development' | 'test' | 'production';

export interface Pkcs11Settings {
  /** The PKCS#11 library of the HSM (for SoftHSM2: /usr/lib/softhsm/libsofthsm2.so). */
  readonly module: string;
  readonly tokenLabel: string;
  readonly pin: string;
  /** The AES-256 key that wraps data keys now, and earlier ones that still unwrap. */
  readonly keyLabel: string;
  readonly retiredKeyLabels: readonly string[];
}

export interface S3Settings {
  readonly bucket: string;
  /** Key prefix inside the bucket ('' or ending in '/'). */
  readonly prefix: string;
  readonly region: string;
  /** An S3-compatible service's endpoint (MinIO, Ceph, a local test server); undefined: AWS. */
  readonly endpoint: string | undefined;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly forcePathStyle: boolean;
}

export interface AlertThresholds {
  /** Failed logins for this many different members of a tenant from one address within sprayWindowMinutes: password spraying. */
  readonly sprayAccounts: number;
  readonly sprayWindowMinutes: number;
  /** access.denied events by one principal within denialWindowMinutes: enumeration or id probing. */
  readonly denialBurst: number;
  readonly denialWindowMinutes: number;
  /** Exports (audit log or records) by one principal within exportWindowMinutes: bulk extraction. */
  readonly exportBurst: number;
  readonly exportWindowMinutes: number;
  /** Records served to one principal (lists, reads, exports) within largeReadWindowMinutes: an unusually large read. */
  readonly largeReadRecords: number;
  readonly largeReadWindowMinutes: number;
}

/** The rules' named defaults (README, "Security alerts"). */
export const DEFAULT_ALERT_THRESHOLDS: AlertThresholds = Object.freeze({
  sprayAccounts: 5,
  sprayWindowMinutes: 15,
  denialBurst: 20,
  denialWindowMinutes: 5,
  exportBurst: 3,
  exportWindowMinutes: 60,
  largeReadRecords: 10_000,
  largeReadWindowMinutes: 15,
});

export interface Config {
  readonly nodeEnv: NodeEnv;
  readonly isProduction: boolean;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** Connection used for migrations; its user owns the tables. Undefined: embedded PGlite. */
  readonly databaseUrl: string | undefined;
  /** Login role the server uses for requests: not superuser, not BYPASSRLS, not owner. */
  readonly databaseAppUser: string;
  readonly databaseAppPassword: string | undefined;
  /** Password of cn_system, the role of systemDb (cross-tenant jobs). */
  readonly databaseSystemPassword: string | undefined;
  readonly databasePoolSize: number;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  readonly signupOpen: boolean;
  /** Proxy addresses whose X-Forwarded-* headers are trusted; empty trusts none. */
  readonly trustProxy: readonly string[];
  /** Serve HTTPS itself (TLS 1.2+, AEAD suites only) with this certificate chain and key; undefined: plain HTTP behind a proxy. */
  readonly tls: { readonly certPem: string; readonly keyPem: string } | undefined;
  /** Public origin, e.g. https://app.example.com; used for Origin checks and security.txt. */
  readonly publicUrl: string | undefined;
  readonly securityContact: string;
  readonly securityPolicyUrl: string | undefined;
  readonly argon2: { readonly memoryKiB: number; readonly iterations: number; readonly parallelism: number };
  readonly sessionAbsoluteHours: number;
  /** A session unused this long stops working (a tenant may set a shorter limit). */
  readonly sessionIdleMinutes: number;
  readonly loginProtection: {
    /** Failed logins of one account within windowMinutes before it is locked. */
    readonly maxFailures: number;
    readonly windowMinutes: number;
    /** First lock; each further lock without a success in between doubles it (capped at 64x). */
    readonly lockMinutes: number;
    readonly ipMaxFailures: number;
    /** Distinct accounts failing from one IP within the window: credential stuffing. */
    readonly stuffingAccounts: number;
    /** Concurrent argon2 computations; more wait in line (a login flood cannot take every thread). */
    readonly argon2Concurrency: number;
  };
  readonly mail: {
    /** smtp(s)://user:password@host:port; undefined: write mails to outboxDir (development). */
    readonly smtpUrl: string | undefined;
    readonly from: string;
    readonly outboxDir: string;
  };
  /** Base of links in mails: PUBLIC_URL, else this server's own address. */
  readonly appUrl: string;
  /** Where committed audit events are also written, one JSON line each, for a SIEM. */
  readonly auditStream: { readonly kind: 'stdout' } | { readonly kind: 'off' } | { readonly kind: 'file'; readonly path: string };
  readonly audit: {
    /** PKCS#8 PEM of the Ed25519 key that signs checkpoints; undefined: a development key under DATA_DIR. */
    readonly signingKeyPem: string | undefined;
    /** PEM public keys of retired signing keys, so older checkpoints still verify. */
    readonly retiredKeysPem: string | undefined;
    /** How often the sealer looks for unsealed events (the bound on commit-to-sealed, plus a batch). */
    readonly sealIntervalMs: number;
    readonly checkpointEvents: number;
    readonly checkpointSeconds: number;
    /** How often the retention purge runs. */
    readonly purgeIntervalMinutes: number;
  };
  /** Thresholds of the anomaly rules (features/monitoring/alerts.ts); each has a named default. */
  readonly alerts: AlertThresholds;
  readonly keys: {
    /** Where the key-encryption key lives: in this process (local) or in a PKCS#11 token (an HSM). */
    readonly provider: 'local' | 'pkcs11';
    readonly pkcs11: Pkcs11Settings | undefined;
    /** The local provider's key-encryption key (32 bytes); undefined: a development key under DATA_DIR. */
    readonly localKek: Buffer | undefined;
    /** Earlier key-encryption keys, so data keys wrapped before a KEK rotation still unwrap. */
    readonly retiredKeks: readonly Buffer[];
    /** How long an unwrapped data key may stay in memory, and how many at most. */
    readonly cacheSeconds: number;
    readonly cacheEntries: number;
  };
  readonly backup: {
    /** Where backups are written: a directory outside DATA_DIR; undefined: none configured. */
    readonly dir: string | undefined;
    /** Or an S3-compatible bucket (never both). */
    readonly s3: S3Settings | undefined;
    /**
     * pg_dump's connection: a role that reads past row-level security (superuser or BYPASSRLS),
     * because every tenant table forces RLS even for its owner. Default: DATABASE_URL.
     */
    readonly databaseUrl: string | undefined;
    /** Stored files that belong in every backup (DATA_DIR/files). */
    readonly filesDir: string;
    /** Cron expression of scheduled backups in the server; undefined: only by command. */
    readonly schedule: string | undefined;
    /** Cron expression of scheduled restore drills (backup verify of the newest backup). */
    readonly verifySchedule: string;
    /** Retention: the newest retainCount backups are kept, older ones once older than retainDays. */
    readonly retainCount: number;
    readonly retainDays: number;
  };
  readonly egress: {
    /** Non-public networks outbound requests (webhooks) may reach: on-premise targets; an operator's choice, never a tenant's. */
    readonly allowNetworks: readonly (readonly [string, number, 'ipv4' | 'ipv6'])[];
  };
  readonly integrations: {
    /** Credentials older than this get a rotation reminder. */
    readonly credentialMaxAgeDays: number;
    /** How often the webhook worker looks for new events and due deliveries. */
    readonly webhookIntervalMs: number;
  };
  readonly sso: {
    /** Allow http:// OIDC issuers (tests and local trials only; production refuses it). */
    readonly allowHttpIssuers: boolean;
    /** DNS servers (host or host:port) for domain-verification lookups; empty: the system's. */
    readonly dnsServers: readonly string[];
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`Invalid configuration: ${variable} ${problem}`);
    this.variable = variable;
  }
}

const DEV_SECURITY_CONTACT = 'mailto:security@customernode.invalid';
const DEV_MAIL_FROM = 'CustomerNode <no-reply@customernode.invalid>';

type Env = Readonly<Record<string, string | undefined>>;

/** An empty variable counts as unset (API.md). */
function raw(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value;
}

/** Secrets may come from NAME or from the file named by NAME_FILE, never both. */
function secret(env: Env, name: string): string | undefined {
  const direct = raw(env, name);
  const file = raw(env, `${name}_FILE`);
  if (direct !== undefined && file !== undefined) {
    throw new ConfigError(name, `and ${name}_FILE are both set; set only one`);
  }
  if (file === undefined) return direct;
  try {
    const content = readFileSync(file, 'utf8').trim();
    if (content === '') throw new ConfigError(`${name}_FILE`, 'names an empty file');
    return content;
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`${name}_FILE`, 'names a file that cannot be read');
  }
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value.trim())) throw new ConfigError(name, `must be a whole number from ${min} to ${max}`);
  const parsed = Number(value.trim());
  if (parsed < min || parsed > max) throw new ConfigError(name, `must be a whole number from ${min} to ${max}`);
  return parsed;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const value = raw(env, name)?.trim();
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(name, `must be one of: ${allowed.join(', ')}`);
  }
  return value as T;
}

function postgresUrl(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(name, 'is not a valid URL');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(name, 'must be a postgres:// or postgresql:// URL');
  }
  return value;
}

function httpOrigin(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(name, 'is not a valid URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError(name, 'must be an http(s) URL');
  return url.origin;
}

/** RFC 9116: web URIs in security.txt must be https. */
function httpsUrl(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!URL.canParse(value) || new URL(value).protocol !== 'https:') throw new ConfigError(name, 'must be an https:// URL');
  return value;
}

/** A 256-bit key given as 64 hex digits or 44 base64 characters. */
function key256(name: string, value: string): Buffer {
  const bytes = /^[0-9a-fA-F]{64}$/.test(value) ? Buffer.from(value, 'hex') : /^[A-Za-z0-9+/]{43}=$/.test(value) ? Buffer.from(value, 'base64') : undefined;
  if (bytes?.length !== 32) throw new ConfigError(name, 'must be a 256-bit key: 64 hex digits or 44 base64 characters');
  return bytes;
}

/** A cron expression (5 or 6 fields, as croner reads it). */
function cron(env: Env, name: string, fallback: string | undefined): string | undefined {
  const value = raw(env, name)?.trim() ?? fallback;
  if (value === undefined) return undefined;
  try {
    new Cron(value, { paused: true }).stop();
  } catch {
    throw new ConfigError(name, 'must be a cron expression such as "0 2 * * *"');
  }
  return value;
}

/** BACKUP_S3_*: a bucket, credentials (never the SDK's own environment lookup), an optional endpoint. */
function s3Settings(env: Env): S3Settings | undefined {
  const bucket = raw(env, 'BACKUP_S3_BUCKET')?.trim();
  if (bucket === undefined) return undefined;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new ConfigError('BACKUP_S3_BUCKET', 'must be an S3 bucket name');
  const prefix = raw(env, 'BACKUP_S3_PREFIX')?.trim() ?? '';
  if (!/^([A-Za-z0-9._-]+\/)*$/.test(prefix)) throw new ConfigError('BACKUP_S3_PREFIX', "must be empty or path segments ending in '/'");
  const endpoint = raw(env, 'BACKUP_S3_ENDPOINT')?.trim();
  if (endpoint !== undefined && !(URL.canParse(endpoint) && ['http:', 'https:'].includes(new URL(endpoint).protocol))) throw new ConfigError('BACKUP_S3_ENDPOINT', 'must be an http(s) URL');
  const accessKeyId = raw(env, 'BACKUP_S3_ACCESS_KEY_ID')?.trim();
  if (accessKeyId === undefined) throw new ConfigError('BACKUP_S3_ACCESS_KEY_ID', 'is required with BACKUP_S3_BUCKET');
  const secretAccessKey = secret(env, 'BACKUP_S3_SECRET_ACCESS_KEY');
  if (secretAccessKey === undefined) throw new ConfigError('BACKUP_S3_SECRET_ACCESS_KEY', 'is required with BACKUP_S3_BUCKET');
  return Object.freeze({
    bucket,
    prefix,
    region: raw(env, 'BACKUP_S3_REGION')?.trim() ?? 'us-east-1',
    endpoint,
    accessKeyId,
    secretAccessKey,
    forcePathStyle: oneOf(env, 'BACKUP_S3_FORCE_PATH_STYLE', ['0', '1'], endpoint === undefined ? '0' : '1') === '1',
  });
}

/** BACKUP_DIR: absolute once resolved, and never inside DATA_DIR (a backup must not share the data's fate). */
function backupDir(env: Env, dataDir: string): string | undefined {
  const value = raw(env, 'BACKUP_DIR');
  if (value === undefined) return undefined;
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  const dir = real(path.resolve(value));
  const relative = path.relative(real(dataDir), dir);
  if (relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative))) {
    throw new ConfigError('BACKUP_DIR', 'must not be DATA_DIR or inside it: backups are kept apart from the data');
  }
  return dir;
}

/** TLS_CERT_FILE and TLS_KEY_FILE together or not at all; the pair must load as a TLS context. */
function tlsFiles(env: Env): { certPem: string; keyPem: string } | undefined {
  const certFile = raw(env, 'TLS_CERT_FILE');
  const keyFile = raw(env, 'TLS_KEY_FILE');
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) throw new ConfigError(certFile === undefined ? 'TLS_CERT_FILE' : 'TLS_KEY_FILE', 'must be set together with the other TLS file');
  const read = (name: string, file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      throw new ConfigError(name, 'names a file that cannot be read');
    }
  };
  const certPem = read('TLS_CERT_FILE', certFile);
  const keyPem = read('TLS_KEY_FILE', keyFile);
  try {
    createSecureContext({ cert: certPem, key: keyPem });
  } catch {
    throw new ConfigError('TLS_KEY_FILE', 'and TLS_CERT_FILE do not form a usable certificate and private key');
  }
  return { certPem, keyPem };
}

function isEd25519PrivateKey(pem: string): boolean {
  try {
    return createPrivateKey(pem).asymmetricKeyType === 'ed25519';
  } catch {
    return false;
  }
}

/** Parses and freezes the configuration. Pure: pass the environment in (tests pass their own). */
export function loadConfig(env: Env = process.env): Config {
  const nodeEnv = oneOf<NodeEnv>(env, 'NODE_ENV', ['development', 'test', 'production'], 'development');
  const isProduction = nodeEnv === 'production';
  const databaseUrl = postgresUrl('DATABASE_URL', secret(env, 'DATABASE_URL'));
  const databaseAppPassword = secret(env, 'DATABASE_APP_PASSWORD');
  const databaseSystemPassword = secret(env, 'DATABASE_SYSTEM_PASSWORD');
  const securityContact = raw(env, 'SECURITY_CONTACT')?.trim() ?? DEV_SECURITY_CONTACT;
  if (!/^(mailto:|https:\/\/)\S+$/.test(securityContact)) {
    throw new ConfigError('SECURITY_CONTACT', 'must be a mailto: or https:// URI');
  }
  const publicUrl = httpOrigin('PUBLIC_URL', raw(env, 'PUBLIC_URL'));
  const smtpUrl = secret(env, 'SMTP_URL');
  if (smtpUrl !== undefined && !(URL.canParse(smtpUrl) && ['smtp:', 'smtps:'].includes(new URL(smtpUrl).protocol))) {
    throw new ConfigError('SMTP_URL', 'must be an smtp:// or smtps:// URL');
  }
  const mailFrom = raw(env, 'MAIL_FROM')?.trim() ?? DEV_MAIL_FROM;
  if (!/^[^\r\n]{3,320}$/.test(mailFrom) || !mailFrom.includes('@')) throw new ConfigError('MAIL_FROM', 'must be an email address, optionally with a display name');
  const auditSigningKey = secret(env, 'AUDIT_SIGNING_KEY');
  if (auditSigningKey !== undefined && !isEd25519PrivateKey(auditSigningKey)) throw new ConfigError('AUDIT_SIGNING_KEY', 'must be an Ed25519 private key in PKCS#8 PEM');
  const keyProvider = oneOf<'local' | 'pkcs11'>(env, 'KEY_PROVIDER', ['local', 'pkcs11'], 'local');
  let pkcs11: Pkcs11Settings | undefined;
  if (keyProvider === 'pkcs11') {
    const required = (name: string, value: string | undefined) => {
      if (value === undefined) throw new ConfigError(name, 'is required when KEY_PROVIDER=pkcs11');
      return value;
    };
    const label = (name: string, value: string) => {
      if (!/^[\x20-\x7e]{1,32}$/.test(value)) throw new ConfigError(name, 'must be 1 to 32 printable ASCII characters');
      return value;
    };
    pkcs11 = {
      module: required('PKCS11_MODULE', raw(env, 'PKCS11_MODULE')),
      tokenLabel: label('PKCS11_TOKEN_LABEL', required('PKCS11_TOKEN_LABEL', raw(env, 'PKCS11_TOKEN_LABEL'))),
      pin: required('PKCS11_PIN', secret(env, 'PKCS11_PIN')),
      keyLabel: label('PKCS11_KEY_LABEL', required('PKCS11_KEY_LABEL', raw(env, 'PKCS11_KEY_LABEL'))),
      retiredKeyLabels: (raw(env, 'PKCS11_RETIRED_KEY_LABELS') ?? '')
        .split(',')
        .map((entry) => entry.trim())
        .filter((entry) => entry !== '')
        .map((entry) => label('PKCS11_RETIRED_KEY_LABELS', entry)),
    };
  }
  const localKekValue = secret(env, 'KEY_ENCRYPTION_KEY');
  const localKek = localKekValue === undefined ? undefined : key256('KEY_ENCRYPTION_KEY', localKekValue);
  const retiredKeks = (secret(env, 'KEY_ENCRYPTION_KEYS_RETIRED') ?? '')
    .split(/[\s,]+/)
    .filter((entry) => entry !== '')
    .map((entry) => key256('KEY_ENCRYPTION_KEYS_RETIRED', entry));
  const allowHttpIssuers = oneOf(env, 'SSO_ALLOW_HTTP_ISSUERS', ['0', '1'], '0') === '1';
  const dnsServers = (raw(env, 'DNS_SERVERS') ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  for (const entry of dnsServers) {
    if (!/^(\[[0-9a-fA-F:]+\]|[0-9.]+|[0-9a-fA-F:]+)(:\d{1,5})?$/.test(entry)) throw new ConfigError('DNS_SERVERS', 'must be a comma-separated list of IP addresses, each optionally with :port');
  }
  const allowNetworks = (raw(env, 'EGRESS_ALLOW_CIDRS') ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry) => {
      const parsed = parseCidr(entry);
      if (!parsed) throw new ConfigError('EGRESS_ALLOW_CIDRS', 'must be a comma-separated list of IP networks (CIDR) or addresses');
      return Object.freeze([parsed.network, parsed.prefix, parsed.family] as const);
    });

  if (isProduction) {
    // Production refuses every development default: the embedded database, a
    // passwordless application role and the placeholder disclosure contact.
    if (databaseUrl === undefined) throw new ConfigError('DATABASE_URL', 'is required when NODE_ENV=production');
    if (databaseAppPassword === undefined) {
      throw new ConfigError('DATABASE_APP_PASSWORD', 'is required when NODE_ENV=production');
    }
    if (databaseSystemPassword === undefined) {
      throw new ConfigError('DATABASE_SYSTEM_PASSWORD', 'is required when NODE_ENV=production');
    }
    if (securityContact === DEV_SECURITY_CONTACT) {
      throw new ConfigError('SECURITY_CONTACT', 'must be set to a real contact when NODE_ENV=production');
    }
    if (publicUrl === undefined) throw new ConfigError('PUBLIC_URL', 'is required when NODE_ENV=production');
    // Password-reset and verification mails must really leave the machine.
    if (smtpUrl === undefined) throw new ConfigError('SMTP_URL', 'is required when NODE_ENV=production');
    if (mailFrom === DEV_MAIL_FROM) throw new ConfigError('MAIL_FROM', 'must be set to a real sender when NODE_ENV=production');
    if (allowHttpIssuers) throw new ConfigError('SSO_ALLOW_HTTP_ISSUERS', 'must not be 1 when NODE_ENV=production');
    // Checkpoints signed by a key lying next to the data prove nothing to a customer.
    if (auditSigningKey === undefined) throw new ConfigError('AUDIT_SIGNING_KEY', 'is required when NODE_ENV=production');
    // A key-encryption key stored beside the data it protects protects nothing.
    if (keyProvider === 'local' && localKek === undefined) throw new ConfigError('KEY_ENCRYPTION_KEY', 'is required when NODE_ENV=production (or KEY_PROVIDER=pkcs11)');
  }

  if (raw(env, 'BACKUP_SCHEDULE') !== undefined && raw(env, 'BACKUP_DIR') === undefined && raw(env, 'BACKUP_S3_BUCKET') === undefined) {
    throw new ConfigError('BACKUP_SCHEDULE', 'needs BACKUP_DIR or BACKUP_S3_BUCKET (where the scheduled backups go)');
  }
  if (raw(env, 'BACKUP_DIR') !== undefined && raw(env, 'BACKUP_S3_BUCKET') !== undefined) throw new ConfigError('BACKUP_S3_BUCKET', 'and BACKUP_DIR are both set; choose one backup target');

  const appUser = raw(env, 'DATABASE_APP_USER')?.trim() ?? 'cn_app';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(appUser)) {
    throw new ConfigError('DATABASE_APP_USER', 'must be a lower-case PostgreSQL identifier');
  }
  const trustProxy = (raw(env, 'TRUST_PROXY') ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  for (const entry of trustProxy) {
    if (!/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(entry)) {
      throw new ConfigError('TRUST_PROXY', 'must be a comma-separated list of IP addresses or CIDR ranges');
    }
  }

  const auditStreamValue = raw(env, 'AUDIT_STREAM')?.trim() ?? (nodeEnv === 'test' ? 'off' : 'stdout');
  if (!['stdout', 'off'].includes(auditStreamValue) && !path.isAbsolute(auditStreamValue)) {
    throw new ConfigError('AUDIT_STREAM', 'must be stdout, off, or an absolute file path');
  }
  const tls = tlsFiles(env);
  const host = raw(env, 'HOST')?.trim() ?? '127.0.0.1';
  const port = integer(env, 'PORT', 3000, 0, 65535);
  const dataDir = path.resolve(raw(env, 'DATA_DIR') ?? './data');
  const config: Config = {
    nodeEnv,
    isProduction,
    host,
    port,
    dataDir,
    databaseUrl,
    databaseAppUser: appUser,
    databaseAppPassword,
    databaseSystemPassword,
    databasePoolSize: integer(env, 'DATABASE_POOL_SIZE', 10, 1, 200),
    logLevel: oneOf(env, 'LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], nodeEnv === 'test' ? 'silent' : 'info'),
    signupOpen: oneOf(env, 'SIGNUP', ['open', 'closed'], 'open') === 'open',
    trustProxy: Object.freeze(trustProxy),
    tls: tls ? Object.freeze(tls) : undefined,
    publicUrl,
    securityContact,
    securityPolicyUrl: httpsUrl('SECURITY_POLICY_URL', raw(env, 'SECURITY_POLICY_URL')),
    argon2: Object.freeze({
      // OWASP minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
      memoryKiB: integer(env, 'ARGON2_MEMORY_KIB', 19456, 19456, 1048576),
      iterations: integer(env, 'ARGON2_ITERATIONS', 2, 2, 20),
      parallelism: integer(env, 'ARGON2_PARALLELISM', 1, 1, 16),
    }),
    sessionAbsoluteHours: integer(env, 'SESSION_ABSOLUTE_HOURS', 12, 1, 720),
    sessionIdleMinutes: integer(env, 'SESSION_IDLE_MINUTES', 30, 5, 1440),
    loginProtection: Object.freeze({
      maxFailures: integer(env, 'LOGIN_MAX_FAILURES', 10, 3, 100),
      windowMinutes: integer(env, 'LOGIN_WINDOW_MINUTES', 15, 1, 1440),
      lockMinutes: integer(env, 'LOGIN_LOCK_MINUTES', 15, 1, 1440),
      ipMaxFailures: integer(env, 'LOGIN_IP_MAX_FAILURES', 100, 10, 100000),
      stuffingAccounts: integer(env, 'LOGIN_STUFFING_ACCOUNTS', 20, 3, 10000),
      // One core stays free for the event loop and the database, so a login flood cannot
      // starve other requests (measured in the bench's login-flood probe).
      argon2Concurrency: integer(env, 'ARGON2_CONCURRENCY', Math.max(1, availableParallelism() - 1), 1, 64),
    }),
    mail: Object.freeze({ smtpUrl, from: mailFrom, outboxDir: path.join(dataDir, 'outbox') }),
    appUrl: publicUrl ?? `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    audit: Object.freeze({
      signingKeyPem: auditSigningKey,
      retiredKeysPem: secret(env, 'AUDIT_RETIRED_KEYS'),
      sealIntervalMs: integer(env, 'AUDIT_SEAL_INTERVAL_MS', 250, 10, 60000),
      checkpointEvents: integer(env, 'AUDIT_CHECKPOINT_EVENTS', 1000, 1, 1000000),
      checkpointSeconds: integer(env, 'AUDIT_CHECKPOINT_SECONDS', 60, 1, 86400),
      purgeIntervalMinutes: integer(env, 'AUDIT_PURGE_INTERVAL_MINUTES', 60, 1, 10080),
    }),
    alerts: Object.freeze({
      sprayAccounts: integer(env, 'ALERT_SPRAY_ACCOUNTS', DEFAULT_ALERT_THRESHOLDS.sprayAccounts, 2, 10000),
      sprayWindowMinutes: integer(env, 'ALERT_SPRAY_WINDOW_MINUTES', DEFAULT_ALERT_THRESHOLDS.sprayWindowMinutes, 1, 1440),
      denialBurst: integer(env, 'ALERT_DENIAL_BURST', DEFAULT_ALERT_THRESHOLDS.denialBurst, 2, 100000),
      denialWindowMinutes: integer(env, 'ALERT_DENIAL_WINDOW_MINUTES', DEFAULT_ALERT_THRESHOLDS.denialWindowMinutes, 1, 1440),
      exportBurst: integer(env, 'ALERT_EXPORT_BURST', DEFAULT_ALERT_THRESHOLDS.exportBurst, 1, 1000),
      exportWindowMinutes: integer(env, 'ALERT_EXPORT_WINDOW_MINUTES', DEFAULT_ALERT_THRESHOLDS.exportWindowMinutes, 1, 10080),
      largeReadRecords: integer(env, 'ALERT_LARGE_READ_RECORDS', DEFAULT_ALERT_THRESHOLDS.largeReadRecords, 10, 100_000_000),
      largeReadWindowMinutes: integer(env, 'ALERT_LARGE_READ_WINDOW_MINUTES', DEFAULT_ALERT_THRESHOLDS.largeReadWindowMinutes, 1, 1440),
    }),
    keys: Object.freeze({
      provider: keyProvider,
      pkcs11: pkcs11 ? Object.freeze({ ...pkcs11, retiredKeyLabels: Object.freeze(pkcs11.retiredKeyLabels) }) : undefined,
      localKek,
      retiredKeks: Object.freeze(retiredKeks),
      cacheSeconds: integer(env, 'KEY_CACHE_SECONDS', 300, 1, 86400),
      cacheEntries: integer(env, 'KEY_CACHE_ENTRIES', 1000, 1, 1000000),
    }),
    sso: Object.freeze({ allowHttpIssuers, dnsServers: Object.freeze(dnsServers) }),
    egress: Object.freeze({ allowNetworks: Object.freeze(allowNetworks) }),
    integrations: Object.freeze({
      credentialMaxAgeDays: integer(env, 'INTEGRATION_CREDENTIAL_MAX_AGE_DAYS', 90, 1, 3650),
      webhookIntervalMs: integer(env, 'WEBHOOK_INTERVAL_MS', 2000, 100, 600_000),
    }),
    backup: Object.freeze({
      dir: backupDir(env, dataDir),
      s3: s3Settings(env),
      databaseUrl: postgresUrl('BACKUP_DATABASE_URL', secret(env, 'BACKUP_DATABASE_URL')) ?? databaseUrl,
      filesDir: path.join(dataDir, 'files'),
      schedule: cron(env, 'BACKUP_SCHEDULE', undefined),
      verifySchedule: cron(env, 'BACKUP_VERIFY_SCHEDULE', '30 4 * * 0')!,
      retainCount: integer(env, 'BACKUP_RETAIN_COUNT', 14, 1, 10000),
      retainDays: integer(env, 'BACKUP_RETAIN_DAYS', 35, 1, 3650),
    }),
    auditStream: Object.freeze(
      auditStreamValue === 'stdout' ? { kind: 'stdout' as const } : auditStreamValue === 'off' ? { kind: 'off' as const } : { kind: 'file' as const, path: auditStreamValue },
    ),
  };
  return Object.freeze(config);
}
