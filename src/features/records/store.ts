/** The only SQL of the records feature. Every function takes a tenant transaction. */
import { sql } from 'kysely';
import type { QueryCompiler, Tx } from '../../kernel/db/database.ts';
import type { Position } from '../../kernel/http/schemas.ts';

const ACCOUNT_COLUMNS = ['id', 'name', 'domain', 'description', 'created_at', 'updated_at'] as const;
const CONTACT_COLUMNS = ['id', 'account_id', 'name', 'email', 'phone', 'email_ct', 'phone_ct', 'created_at', 'updated_at'] as const;

export async function listAccounts(tx: Tx, tenantId: string, options: { limit: number; after?: Position }) {
  let query = tx.selectFrom('accounts').select(ACCOUNT_COLUMNS).where('tenant_id', '=', tenantId);
  const { after } = options;
  if (after) query = query.where(({ eb, refTuple, tuple }) => eb(refTuple('created_at', 'id'), '>', tuple(after.createdAt, after.id)));
  return query.orderBy('created_at').orderBy('id').limit(options.limit + 1).execute();
}

/** By id, as a builder: the route sends it along with the tenant entry (prefetch). */
export function accountById(db: QueryCompiler, tenantId: string, id: string) {
  return db.selectFrom('accounts').select(ACCOUNT_COLUMNS).where('tenant_id', '=', tenantId).where('id', '=', id);
}

export function getAccount(tx: Tx, tenantId: string, id: string) {
  return accountById(tx, tenantId, id).executeTakeFirst();
}

export function insertAccount(tx: Tx, tenantId: string, values: { name: string; domain: string | null; description: string | null }) {
  return tx.insertInto('accounts').values({ tenant_id: tenantId, ...values }).returning(ACCOUNT_COLUMNS).executeTakeFirstOrThrow();
}

export function updateAccount(tx: Tx, tenantId: string, id: string, values: { name?: string; domain?: string | null; description?: string | null }) {
  return tx
    .updateTable('accounts')
    .set({ ...values, updated_at: sql`date_trunc('milliseconds', now())` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returning(ACCOUNT_COLUMNS)
    .executeTakeFirst();
}

export async function deleteAccount(tx: Tx, tenantId: string, id: string): Promise<boolean> {
  const result = await tx.deleteFrom('accounts').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

export async function accountHasContacts(tx: Tx, tenantId: string, id: string): Promise<boolean> {
  const row = await tx.selectFrom('contacts').select('id').where('tenant_id', '=', tenantId).where('account_id', '=', id).limit(1).executeTakeFirst();
  return row !== undefined;
}

export async function listContacts(tx: Tx, tenantId: string, options: { limit: number; after?: Position; emailIndex?: Buffer }) {
  let query = tx.selectFrom('contacts').select(CONTACT_COLUMNS).where('tenant_id', '=', tenantId);
  const { after, emailIndex } = options;
  if (emailIndex) query = query.where('email_index', '=', emailIndex);
  if (after) query = query.where(({ eb, refTuple, tuple }) => eb(refTuple('created_at', 'id'), '>', tuple(after.createdAt, after.id)));
  return query.orderBy('created_at').orderBy('id').limit(options.limit + 1).execute();
}

/** By id, as a builder: the route sends it along with the tenant entry (prefetch). */
export function contactById(db: QueryCompiler, tenantId: string, id: string) {
  return db.selectFrom('contacts').select(CONTACT_COLUMNS).where('tenant_id', '=', tenantId).where('id', '=', id);
}

export function getContact(tx: Tx, tenantId: string, id: string) {
  return contactById(tx, tenantId, id).executeTakeFirst();
}

/** Sealed fields: ciphertexts and the email's blind index (contacts-crypto.ts). */
export interface SealedContactFields {
  email_ct?: Buffer | null;
  phone_ct?: Buffer | null;
  email_index?: Buffer | null;
}

/** A sealed field replaces any plaintext left from before migration 20. */
function clearedPlaintext(values: SealedContactFields): { email?: null; phone?: null } {
  return { ...('email_ct' in values ? { email: null } : {}), ...('phone_ct' in values ? { phone: null } : {}) };
}

export function insertContact(tx: Tx, tenantId: string, values: { id: string; account_id: string; name: string } & SealedContactFields) {
  return tx.insertInto('contacts').values({ tenant_id: tenantId, ...values }).returning(CONTACT_COLUMNS).executeTakeFirstOrThrow();
}

export function updateContact(tx: Tx, tenantId: string, id: string, values: { account_id?: string; name?: string } & SealedContactFields) {
  return tx
    .updateTable('contacts')
    .set({ ...values, ...clearedPlaintext(values), updated_at: sql`date_trunc('milliseconds', now())` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returning(CONTACT_COLUMNS)
    .executeTakeFirst();
}

/** Sealed fields in, plaintext out, by the backfill or a re-encryption: not a change by anyone, so updated_at stays. */
export async function writeSealedFields(tx: Tx, tenantId: string, id: string, values: SealedContactFields): Promise<void> {
  await tx.updateTable('contacts').set({ ...values, ...clearedPlaintext(values) }).where('tenant_id', '=', tenantId).where('id', '=', id).execute();
}

/** The sealed fields of contacts in id order after an id (re-encryption after a key rotation); locked unless lock is false. */
export function contactsAfter(tx: Tx, tenantId: string, after: string | undefined, limit: number, lock = true) {
  let query = tx.selectFrom('contacts').select(['id', 'email_ct', 'phone_ct']).where('tenant_id', '=', tenantId);
  if (after !== undefined) query = query.where('id', '>', after);
  const ordered = query.orderBy('id').limit(limit);
  return lock ? ordered.forUpdate().execute() : ordered.execute();
}

/** Accounts in id order after an id (a tenant export reads them in chunks). */
export function exportAccounts(tx: Tx, tenantId: string, after: string, limit: number) {
  let query = tx.selectFrom('accounts').select(ACCOUNT_COLUMNS).where('tenant_id', '=', tenantId);
  if (after !== '') query = query.where('id', '>', after);
  return query.orderBy('id').limit(limit).execute();
}

/** Contacts in id order after an id, every column a contact view needs (a tenant export). */
export function exportContacts(tx: Tx, tenantId: string, after: string, limit: number) {
  let query = tx.selectFrom('contacts').select(CONTACT_COLUMNS).where('tenant_id', '=', tenantId);
  if (after !== '') query = query.where('id', '>', after);
  return query.orderBy('id').limit(limit).execute();
}

/** Contacts with a field under a data key version below version (the ciphertext's bytes 2-5 hold it, big-endian). */
export async function countContactsBelowVersion(tx: Tx, tenantId: string, version: number): Promise<number> {
  const below = Buffer.alloc(4);
  below.writeUInt32BE(version);
  const row = await tx
    .selectFrom('contacts')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('tenant_id', '=', tenantId)
    .where((eb) =>
      eb.or([
        eb.and([eb('email_ct', 'is not', null), eb(sql`substring(email_ct from 2 for 4)`, '<', below)]),
        eb.and([eb('phone_ct', 'is not', null), eb(sql`substring(phone_ct from 2 for 4)`, '<', below)]),
      ]),
    )
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Rows still holding plaintext (written before migration 20), for the backfill; locked. */
export function legacyPlaintextContacts(tx: Tx, tenantId: string, limit: number) {
  return tx
    .selectFrom('contacts')
    .select(['id', 'email', 'phone'])
    .where('tenant_id', '=', tenantId)
    .where((eb) => eb.or([eb('email', 'is not', null), eb('phone', 'is not', null)]))
    .limit(limit)
    .forUpdate()
    .execute();
}

export async function deleteContact(tx: Tx, tenantId: string, id: string): Promise<boolean> {
  const result = await tx.deleteFrom('contacts').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

/** A tenant's records as stored (ciphertexts and blind index included): what a single-tenant restore copies. */
export async function storedRecords(tx: Tx, tenantId: string) {
  return {
    accounts: await tx.selectFrom('accounts').select([...ACCOUNT_COLUMNS]).where('tenant_id', '=', tenantId).orderBy('id').execute(),
    contacts: await tx
      .selectFrom('contacts')
      .select(['id', 'account_id', 'name', 'email_ct', 'phone_ct', 'email_index', 'created_at', 'updated_at'])
      .where('tenant_id', '=', tenantId)
      .orderBy('id')
      .execute(),
  };
}

export type StoredRecords = Awaited<ReturnType<typeof storedRecords>>;

/**
 * Puts back the records that are missing (by id), accounts before their contacts; records
 * that exist now are left as they are. Returns the ids put back.
 */
export async function insertMissingRecords(tx: Tx, tenantId: string, records: StoredRecords): Promise<{ accounts: string[]; contacts: string[] }> {
  const accounts: string[] = [];
  for (const row of records.accounts) {
    const inserted = await tx.insertInto('accounts').values({ tenant_id: tenantId, ...row }).onConflict((oc) => oc.columns(['tenant_id', 'id']).doNothing()).returning('id').executeTakeFirst();
    if (inserted) accounts.push(inserted.id);
  }
  const contacts: string[] = [];
  for (const row of records.contacts) {
    const inserted = await tx
      .insertInto('contacts')
      .values({ tenant_id: tenantId, ...row, email_ct: row.email_ct && Buffer.from(row.email_ct), phone_ct: row.phone_ct && Buffer.from(row.phone_ct), email_index: row.email_index && Buffer.from(row.email_index) })
      .onConflict((oc) => oc.columns(['tenant_id', 'id']).doNothing())
      .returning('id')
      .executeTakeFirst();
    if (inserted) contacts.push(inserted.id);
  }
  return { accounts, contacts };
}
