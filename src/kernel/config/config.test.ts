import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.ts';

const PROD = {
  NODE_ENV: 'production',
  DATABASE_URL: 'postgres://owner@db.internal/cn',
  DATABASE_APP_PASSWORD: 'app-password-from-secret-store',
  DATABASE_SYSTEM_PASSWORD: 'system-password-from-secret-store',
  SECURITY_CONTACT: 'mailto:security@example.com',
  PUBLIC_URL: 'https://app.example.com',
  SMTP_URL: 'smtps://mailer:mail-password@smtp.example.com:465',
  MAIL_FROM: 'CustomerNode <no-reply@example.com>',
  AUDIT_SIGNING_KEY: generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  KEY_ENCRYPTION_KEY: 'a'.repeat(64),
};

function errorOf(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  it('defaults to the embedded database on 127.0.0.1:3000 and freezes the result', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ host: '127.0.0.1', port: 3000, databaseUrl: undefined, signupOpen: true, nodeEnv: 'development' });
    expect(config.dataDir).toBe(path.resolve('./data'));
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('treats an empty variable as unset', () => {
    expect(loadConfig({ PORT: '', DATABASE_URL: '  ' })).toMatchObject({ port: 3000, databaseUrl: undefined });
  });

  it('fails closed naming the bad variable, never echoing its value', () => {
    const error = errorOf({ PORT: 'eighty' });
    expect(error.variable).toBe('PORT');
    expect(error.message).not.toContain('eighty');
    // secretlint-disable-next-line -- a made-up credential: the test proves it is never echoed
    expect(errorOf({ DATABASE_URL: 'mysql://root:hunter2@x/db' }).message).not.toContain('hunter2');
    expect(errorOf({ SIGNUP: 'maybe' }).variable).toBe('SIGNUP');
    expect(errorOf({ ARGON2_MEMORY_KIB: '1024' }).variable).toBe('ARGON2_MEMORY_KIB');
    expect(errorOf({ TRUST_PROXY: 'everyone' }).variable).toBe('TRUST_PROXY');
  });

  it('reads secrets from *_FILE and refuses both forms at once', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-config-'));
    const file = path.join(dir, 'db-url');
    writeFileSync(file, 'postgres://owner@localhost/cn\n');
    expect(loadConfig({ DATABASE_URL_FILE: file }).databaseUrl).toBe('postgres://owner@localhost/cn');
    expect(errorOf({ DATABASE_URL_FILE: file, DATABASE_URL: 'postgres://x@y/z' }).variable).toBe('DATABASE_URL');
    expect(errorOf({ DATABASE_URL_FILE: path.join(dir, 'missing') }).variable).toBe('DATABASE_URL_FILE');
  });

  it('production refuses the embedded database, missing secrets and development defaults', () => {
    expect(loadConfig(PROD).isProduction).toBe(true);
    for (const name of ['DATABASE_URL', 'DATABASE_APP_PASSWORD', 'DATABASE_SYSTEM_PASSWORD', 'SECURITY_CONTACT', 'PUBLIC_URL', 'SMTP_URL', 'MAIL_FROM', 'AUDIT_SIGNING_KEY', 'KEY_ENCRYPTION_KEY'] as const) {
      const env = Object.fromEntries(Object.entries(PROD).filter(([key]) => key !== name));
      expect(errorOf(env).variable).toBe(name);
    }
  });

  it('takes a 256-bit key-encryption key as hex or base64, current and retired, and refuses anything else', () => {
    const hex = 'ab'.repeat(32);
    const base64 = Buffer.alloc(32, 7).toString('base64');
    expect(loadConfig({ KEY_ENCRYPTION_KEY: hex }).keys.localKek).toEqual(Buffer.from(hex, 'hex'));
    expect(loadConfig({ KEY_ENCRYPTION_KEY: base64 }).keys.localKek).toEqual(Buffer.alloc(32, 7));
    expect(loadConfig({ KEY_ENCRYPTION_KEYS_RETIRED: `${hex}, ${base64}` }).keys.retiredKeks).toHaveLength(2);
    expect(loadConfig({}).keys.localKek).toBeUndefined();
    for (const bad of ['ab'.repeat(31), 'zz'.repeat(32), Buffer.alloc(16).toString('base64'), 'correct horse battery staple']) {
      const error = errorOf({ KEY_ENCRYPTION_KEY: bad });
      expect(error.variable).toBe('KEY_ENCRYPTION_KEY');
      expect(error.message).not.toContain(bad);
    }
    expect(errorOf({ KEY_ENCRYPTION_KEYS_RETIRED: 'nope' }).variable).toBe('KEY_ENCRYPTION_KEYS_RETIRED');
  });

  it('takes TLS_CERT_FILE and TLS_KEY_FILE together, as a usable pair, and names the bad one', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-config-tls-'));
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')]);
    expect(made.status).toBe(0);
    spawnSync('openssl', ['genpkey', '-algorithm', 'RSA', '-out', path.join(dir, 'other.pem')]);
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    expect(loadConfig({}).tls).toBeUndefined();
    expect(loadConfig({ TLS_CERT_FILE: cert, TLS_KEY_FILE: key }).tls?.certPem).toContain('BEGIN CERTIFICATE');
    expect(errorOf({ TLS_CERT_FILE: cert }).variable).toBe('TLS_KEY_FILE');
    expect(errorOf({ TLS_KEY_FILE: key }).variable).toBe('TLS_CERT_FILE');
    expect(errorOf({ TLS_CERT_FILE: path.join(dir, 'missing.pem'), TLS_KEY_FILE: key }).variable).toBe('TLS_CERT_FILE');
    const mismatched = errorOf({ TLS_CERT_FILE: cert, TLS_KEY_FILE: path.join(dir, 'other.pem') });
    expect(mismatched.variable).toBe('TLS_KEY_FILE');
    expect(mismatched.message).not.toContain('PRIVATE KEY');
  });

  it('production refuses http OIDC issuers; mail settings are validated', () => {
    expect(errorOf({ ...PROD, SSO_ALLOW_HTTP_ISSUERS: '1' }).variable).toBe('SSO_ALLOW_HTTP_ISSUERS');
    expect(errorOf({ SMTP_URL: 'http://smtp.example.com' }).variable).toBe('SMTP_URL');
    expect(errorOf({ MAIL_FROM: 'nobody' }).variable).toBe('MAIL_FROM');
    expect(errorOf({ AUDIT_SIGNING_KEY: 'not a key' }).variable).toBe('AUDIT_SIGNING_KEY');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(errorOf({ AUDIT_SIGNING_KEY: rsa }).variable).toBe('AUDIT_SIGNING_KEY');
    expect(errorOf({ DNS_SERVERS: '127.0.0.1:53,evil host' }).variable).toBe('DNS_SERVERS');
    const config = loadConfig({ DNS_SERVERS: '127.0.0.1:5353, 10.0.0.2', DATA_DIR: '/tmp/cn' });
    expect(config.sso.dnsServers).toEqual(['127.0.0.1:5353', '10.0.0.2']);
    expect(config.mail.outboxDir).toBe(path.resolve('/tmp/cn/outbox'));
    expect(config.appUrl).toBe('http://127.0.0.1:3000');
    expect(errorOf({ EGRESS_ALLOW_CIDRS: '10.0.0.0/8, intranet.example' }).variable).toBe('EGRESS_ALLOW_CIDRS');
    expect(errorOf({ INTEGRATION_CREDENTIAL_MAX_AGE_DAYS: '0' }).variable).toBe('INTEGRATION_CREDENTIAL_MAX_AGE_DAYS');
    expect(loadConfig({ EGRESS_ALLOW_CIDRS: '10.20.0.0/16, fd12::/64, 192.0.2.7' }).egress.allowNetworks).toEqual([
      ['10.20.0.0', 16, 'ipv4'],
      ['fd12::', 64, 'ipv6'],
      ['192.0.2.7', 32, 'ipv4'],
    ]);
    expect(config.egress.allowNetworks).toEqual([]);
    expect(config.integrations).toEqual({ credentialMaxAgeDays: 90, webhookIntervalMs: 2000 });
  });

  it('AUDIT_STREAM is stdout, off or an absolute file (off in tests by default)', () => {
    expect(loadConfig({}).auditStream).toEqual({ kind: 'stdout' });
    expect(loadConfig({ NODE_ENV: 'test' }).auditStream).toEqual({ kind: 'off' });
    expect(loadConfig({ AUDIT_STREAM: '/var/log/cn/audit.jsonl' }).auditStream).toEqual({ kind: 'file', path: '/var/log/cn/audit.jsonl' });
    expect(errorOf({ AUDIT_STREAM: 'relative/file.jsonl' }).variable).toBe('AUDIT_STREAM');
  });

  it('an SMTP password never appears in a configuration error', () => {
    // secretlint-disable-next-line -- a made-up credential: the test proves it is never echoed
    const error = errorOf({ SMTP_URL: 'ftp://mailer:hunter2-secret@smtp.example.com' });
    expect(error.message).not.toContain('hunter2-secret');
  });

  it('SIGNUP=closed turns self-service signup off', () => {
    expect(loadConfig({ SIGNUP: 'closed' }).signupOpen).toBe(false);
  });

  it('keeps backups apart from the data: BACKUP_DIR inside DATA_DIR (or equal to it) is refused', () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'cn-config-data-'));
    for (const dir of [dataDir, path.join(dataDir, 'backups'), `${dataDir}/./nested/../backups`]) {
      expect(() => loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir, BACKUP_DIR: dir })).toThrow(/BACKUP_DIR must not be DATA_DIR or inside it/);
    }
    const apart = mkdtempSync(path.join(os.tmpdir(), 'cn-config-backups-'));
    expect(loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir, BACKUP_DIR: apart }).backup.dir).toBe(apart);
    // A sibling whose name merely starts like DATA_DIR is outside it.
    expect(loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir, BACKUP_DIR: `${dataDir}-backups` }).backup.dir).toBe(`${dataDir}-backups`);
  });

  it('refuses a schedule that is not a cron expression, naming the variable', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-config-schedule-'));
    expect(() => loadConfig({ NODE_ENV: 'test', BACKUP_DIR: dir, BACKUP_SCHEDULE: 'every night' })).toThrow(/BACKUP_SCHEDULE must be a cron expression/);
    expect(() => loadConfig({ NODE_ENV: 'test', BACKUP_DIR: dir, BACKUP_VERIFY_SCHEDULE: '61 * * * *' })).toThrow(/BACKUP_VERIFY_SCHEDULE/);
    expect(loadConfig({ NODE_ENV: 'test', BACKUP_DIR: dir, BACKUP_SCHEDULE: '0 2 * * *' }).backup.schedule).toBe('0 2 * * *');
    // A schedule with nowhere to put the backups is refused, not silently idle.
    expect(() => loadConfig({ NODE_ENV: 'test', BACKUP_SCHEDULE: '0 2 * * *' })).toThrow(/BACKUP_SCHEDULE needs BACKUP_DIR/);
  });

  it('reads an S3-compatible backup bucket with explicit credentials, and refuses two targets or missing credentials', () => {
    const s3 = { NODE_ENV: 'test', BACKUP_S3_BUCKET: 'cn-backups', BACKUP_S3_ENDPOINT: 'http://127.0.0.1:9000', BACKUP_S3_ACCESS_KEY_ID: 'id', BACKUP_S3_SECRET_ACCESS_KEY: 'backup-secret' };
    expect(loadConfig(s3).backup.s3).toMatchObject({ bucket: 'cn-backups', prefix: '', region: 'us-east-1', forcePathStyle: true });
    expect(() => loadConfig({ ...s3, BACKUP_DIR: mkdtempSync(path.join(os.tmpdir(), 'cn-config-two-')) })).toThrow(/choose one backup target/);
    expect(() => loadConfig({ ...s3, BACKUP_S3_SECRET_ACCESS_KEY: '' })).toThrow(/BACKUP_S3_SECRET_ACCESS_KEY is required/);
    expect(() => loadConfig({ ...s3, BACKUP_S3_PREFIX: '../x' })).toThrow(/BACKUP_S3_PREFIX/);
    expect(() => loadConfig({ ...s3, BACKUP_S3_BUCKET: 'Not A Bucket' })).toThrow(/BACKUP_S3_BUCKET must be an S3 bucket name/);
  });
});
