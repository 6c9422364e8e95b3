/**
 * `keys rotate-kek` and `keys rotate-tenant --tenant ID`: key rotation for operators.
 * Progress goes to stderr: a bar on a terminal, a line per step otherwise.
 */
import { contactsBelowVersion, reencryptContacts } from '../features/records/contacts-crypto.ts';
import { reencryptSsoSecret, ssoSecretsBelowVersion } from '../features/sso/index.ts';
import { createKeyring } from '../kernel/crypto/envelope.ts';
import { destroyDataKeysBelow, rewrapAllTenantKeys, startOrResumeRotation } from '../kernel/crypto/rotation.ts';
import { isUuid } from '../kernel/db/database.ts';
import { UsageError, withCliDatabase } from './support.ts';

export interface Progress {
  update(label: string, done: number, total: number): void;
  end(): void;
}

/** A progress bar on a terminal; otherwise a line at each tenth, so logs stay short. */
export function progressTo(stream: NodeJS.WriteStream): Progress {
  let lastTenth = -1;
  return {
    update(label, done, total) {
      const share = total === 0 ? 1 : done / total;
      if (stream.isTTY) {
        const width = 30;
        const filled = Math.round(share * width);
        stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.round(share * 100)}% ${done}/${total}`);
        return;
      }
      const tenth = Math.floor(share * 10);
      if (tenth !== lastTenth) {
        lastTenth = tenth;
        stream.write(`${label}: ${done}/${total}\n`);
      }
    },
    end() {
      if (stream.isTTY) stream.write('\n');
    },
  };
}

export async function keysCommand(args: readonly string[], json: boolean, out: (line: string) => void, progress: Progress): Promise<void> {
  const [sub, ...options] = args;
  if (sub === 'rotate-kek') {
    if (options.length > 0) throw new UsageError('keys rotate-kek takes no arguments');
    await withCliDatabase(async (db, config) => {
      const keyring = createKeyring(config, { warn() {} });
      const result = await rewrapAllTenantKeys(db, keyring, (done, total) => progress.update('re-wrapping tenant keys', done, total));
      progress.end();
      out(json ? JSON.stringify(result) : `re-wrapped ${result.rewrapped} tenant keys under ${result.kekId}`);
    });
    return;
  }
  if (sub === 'rotate-tenant') {
    const tenantId = options[0] === '--tenant' ? options[1] : undefined;
    if (tenantId === undefined || !isUuid(tenantId) || options.length !== 2) throw new UsageError('usage: customernode keys rotate-tenant --tenant ID [--json]');
    const tenant = tenantId.toLowerCase();
    await withCliDatabase(async (db, config) => {
      const keyring = createKeyring(config, { warn() {} });
      // Resumable: while older versions remain, an interrupted rotation is finished, not started anew.
      const { version, resumed } = await startOrResumeRotation(db, keyring, tenant);
      // Every field encrypted under the tenant's data key: contacts, then the SSO client secret.
      const { reencrypted: contacts } = await reencryptContacts(db, keyring, tenant, (done, total) => progress.update('re-encrypting contacts', done, total));
      progress.end();
      const { reencrypted: ssoSecrets } = await reencryptSsoSecret(db, keyring, tenant);
      const reencrypted = contacts + ssoSecrets;
      // Destroyed only if, under the key lock, nothing is left under an older version.
      const destroyed = await destroyDataKeysBelow(db, keyring, tenant, version, async (tx) => (await contactsBelowVersion(tx, tenant, version)) + (await ssoSecretsBelowVersion(tx, tenant, version)));
      const result = { tenantId: tenant, version, resumed, reencrypted, destroyedVersions: destroyed };
      out(json ? JSON.stringify(result) : `tenant ${tenant}: data key version ${version}${resumed ? ' (resumed)' : ''}, ${reencrypted} records re-encrypted, ${destroyed} older versions destroyed`);
    });
    return;
  }
  throw new UsageError('usage: customernode keys rotate-kek | keys rotate-tenant --tenant ID [--json]');
}
