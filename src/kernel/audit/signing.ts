/**
 * The checkpoint signing key. Production takes it from AUDIT_SIGNING_KEY(_FILE) (config
 * refuses to start without it). The embedded development default generates one under
 * DATA_DIR (0600) and says loudly that it proves nothing: whoever holds the data holds it.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readOrCreateKeyFile } from '../crypto/dev-key-file.ts';
import type { Config } from '../config/config.ts';
import { keyIdOf, publicKeysFromPem } from './chain.ts';
import type { AuditSigner } from './sealer.ts';

const DEV_KEY_FILE = 'audit-signing-key.pem';

function developmentKey(dataDir: string, log: { warn(object: object, message: string): void }): KeyObject {
  const { file, content } = readOrCreateKeyFile(dataDir, DEV_KEY_FILE, () => generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  log.warn({ file }, 'DEVELOPMENT audit signing key in use: checkpoints signed with a key stored beside the data prove nothing; set AUDIT_SIGNING_KEY in production');
  return createPrivateKey(content);
}

/** Splits a PEM bundle into its PUBLIC KEY blocks. */
function pemBlocks(text: string): string[] {
  return text.match(/-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/g) ?? [];
}

export function loadAuditSigner(config: Pick<Config, 'audit' | 'dataDir'>, log: { warn(object: object, message: string): void }): AuditSigner {
  const privateKey = config.audit.signingKeyPem === undefined ? developmentKey(config.dataDir, log) : createPrivateKey(config.audit.signingKeyPem);
  const publicKey = createPublicKey(privateKey);
  const publicKeys = new Map(publicKeysFromPem(pemBlocks(config.audit.retiredKeysPem ?? '')));
  publicKeys.set(keyIdOf(publicKey), publicKey);
  return { privateKey, keyId: keyIdOf(publicKey), publicKeys };
}
