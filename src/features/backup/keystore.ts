/**
 * The keystore: every wrapped data key, kept in the backup target but never inside a backup
 * (API.md). A restore takes the keys from here; deleting a tenant removes its keys here too,
 * so its ciphertexts in every older backup become unreadable (crypto-shredding).
 *
 * Keys stay wrapped by the key provider (KEK or HSM) and the whole document is encrypted and
 * authenticated under its own content key, wrapped the same way. Versions a rotation retired
 * are kept while a stored backup may still need them, then dropped.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import type { KeyProvider } from '../../kernel/crypto/key-provider.ts';
import { createDecryptStream, createEncryptStream } from '../../kernel/crypto/file-stream.ts';
import { PLATFORM } from '../../kernel/crypto/envelope.ts';
import type { Database } from '../../kernel/db/database.ts';
import type { KeyRow } from '../../kernel/db/snapshot.ts';
import { BackupIntegrityError } from './archive.ts';
import { BackupNotFoundError, type BackupTarget } from './targets.ts';

export const KEYSTORE_OBJECT = 'keys/keystore.cnk';
const AAD = Buffer.from('customernode keystore v1', 'utf8');

export interface KeystoreEntry extends KeyRow {
  /** When this version was last seen live (null: it is live); kept while backups may need it. */
  readonly retiredAt: string | null;
}

interface StoredEntry {
  owner: string;
  purpose: string;
  version: number;
  kekId: string;
  wrapped: string;
  retiredAt: string | null;
}

const entryName = (entry: KeyRow) => `${entry.owner}/${entry.purpose}/${entry.version}`;

export async function readKeystore(target: BackupTarget, provider: KeyProvider): Promise<KeystoreEntry[]> {
  let stored: Buffer;
  try {
    stored = await buffer(await target.read(KEYSTORE_OBJECT));
  } catch (error) {
    if (error instanceof BackupNotFoundError) return [];
    throw error;
  }
  try {
    const headerLength = stored.readUInt32BE(0);
    const header = JSON.parse(stored.subarray(4, 4 + headerLength).toString('utf8')) as { format: number; kekId: string; wrappedKey: string };
    if (header.format !== 1) throw new Error('unknown keystore format');
    const key = await provider.unwrap(Buffer.from(header.wrappedKey, 'base64'), AAD, header.kekId);
    const plain = await buffer(Readable.from([stored.subarray(4 + headerLength)]).pipe(createDecryptStream({ key, context: 'keystore' })));
    key.fill(0);
    const document = JSON.parse(plain.toString('utf8')) as { format: number; keys: StoredEntry[] };
    return document.keys.map((entry) => ({ ...entry, wrapped: Buffer.from(entry.wrapped, 'base64') }));
  } catch (error) {
    throw new BackupIntegrityError(`the keystore (${KEYSTORE_OBJECT}) cannot be read: ${(error as Error).message}`);
  }
}

export async function writeKeystore(target: BackupTarget, provider: KeyProvider, entries: readonly KeystoreEntry[]): Promise<void> {
  const key = randomBytes(32);
  const header = Buffer.from(JSON.stringify({ format: 1, kekId: provider.keyId, wrappedKey: (await provider.wrap(key, AAD)).toString('base64') }), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(header.length, 0);
  const document = JSON.stringify({
    format: 1,
    updatedAt: new Date().toISOString(),
    keys: entries.map((entry) => ({ owner: entry.owner, purpose: entry.purpose, version: entry.version, kekId: entry.kekId, wrapped: entry.wrapped.toString('base64'), retiredAt: entry.retiredAt })),
  });
  const encrypted = await buffer(Readable.from([Buffer.from(document, 'utf8')]).pipe(createEncryptStream({ key, context: 'keystore' })));
  key.fill(0);
  await target.write(KEYSTORE_OBJECT, Readable.from([length, header, encrypted]));
}

/**
 * Brings the keystore up to the live keys: every live key; a version no longer live (a
 * rotation retired it) stays until no stored backup is older than its retirement; a deleted
 * tenant's keys go.
 */
export async function refreshKeystore(db: Database, target: BackupTarget, provider: KeyProvider, oldestBackup: Date): Promise<{ keys: number }> {
  const { live, tenants } = await db.systemDb({ reason: 'the backup keystore copies every wrapped data key' }).transaction(async (tx) => ({
    live: [
      ...(await tx.selectFrom('tenant_keys').select(['tenant_id as owner', 'purpose', 'version', 'kek_id', 'wrapped']).execute()),
      ...(await tx.selectFrom('platform_keys').select(['purpose', 'version', 'kek_id', 'wrapped']).execute()).map((row) => ({ ...row, owner: PLATFORM })),
    ],
    tenants: new Map((await tx.selectFrom('tenants').select(['id', 'deleted_at']).execute()).map((row) => [row.id, row.deleted_at])),
  }));
  const now = new Date().toISOString();
  const entries = new Map<string, KeystoreEntry>();
  for (const row of live) {
    const entry: KeystoreEntry = { owner: row.owner, purpose: row.purpose, version: row.version, kekId: row.kek_id, wrapped: Buffer.from(row.wrapped), retiredAt: null };
    entries.set(entryName(entry), entry);
  }
  for (const previous of await readKeystore(target, provider)) {
    if (entries.has(entryName(previous))) continue;
    const tenantGone = previous.owner !== PLATFORM && (!tenants.has(previous.owner) || tenants.get(previous.owner) !== null);
    if (tenantGone) continue;
    const retiredAt = previous.retiredAt ?? now;
    if (new Date(retiredAt) < oldestBackup) continue;
    entries.set(entryName(previous), { ...previous, retiredAt });
  }
  await writeKeystore(target, provider, [...entries.values()]);
  return { keys: entries.size };
}

/** Removes a deleted tenant's keys from the keystore: its data in every stored backup is then unreadable. */
export async function forgetTenantKeys(target: BackupTarget, provider: KeyProvider, tenantId: string): Promise<{ removed: number }> {
  const entries = await readKeystore(target, provider);
  const kept = entries.filter((entry) => entry.owner !== tenantId);
  if (kept.length !== entries.length) await writeKeystore(target, provider, kept);
  return { removed: entries.length - kept.length };
}
