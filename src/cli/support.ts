/** What every CLI command shares: the usage error (exit 64) and a database opened from the environment. */
import pino from 'pino';
import { loadConfig, type Config } from '../kernel/config/config.ts';
import { openDatabase, type Database } from '../kernel/db/database.ts';

export class UsageError extends Error {
  override name = 'UsageError';
}

/** Opens the database the environment names (quietly), runs fn, and closes it whatever happens. */
export async function withCliDatabase<T>(fn: (db: Database, config: Config) => Promise<T>, config: Config = loadConfig()): Promise<T> {
  const db = await openDatabase({ config, logger: pino({ level: 'silent' }) });
  try {
    return await fn(db, config);
  } finally {
    await db.close();
  }
}
