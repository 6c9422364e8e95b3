#!/usr/bin/env node
/**
 * The customernode command (`npm run cli -- <command>`). Reads the same environment as the
 * server. Exit 0 on success; otherwise non-zero with a one-line reason on stderr.
 * Commands that list or create accept --json and then print exactly one JSON document.
 */
import pino from 'pino';
import { ConfigError, loadConfig } from '../kernel/config/config.ts';
import { runMigrations } from '../kernel/db/database.ts';
import { DataDirLockedError } from '../kernel/db/lock.ts';

const USAGE = `Usage: customernode <command> [--json]

Commands:
  migrate        apply pending database migrations
  help           show this help`;

export class UsageError extends Error {
  override name = 'UsageError';
}

export async function runCli(argv: readonly string[], out: (line: string) => void): Promise<void> {
  const json = argv.includes('--json');
  const args = argv.filter((arg) => arg !== '--json');
  const [command, ...rest] = args;
  if (command === undefined || command === 'help' || command === '--help') {
    out(USAGE);
    return;
  }
  if (command !== 'migrate') throw new UsageError(`unknown command "${command}" (try: customernode help)`);
  if (rest.length > 0) throw new UsageError(`migrate takes no arguments`);
  const config = loadConfig();
  const applied = await runMigrations({ config, logger: pino({ level: 'silent' }) });
  out(json ? JSON.stringify({ applied }) : applied.length > 0 ? `applied migrations: ${applied.join(', ')}` : 'database is up to date');
}

if (import.meta.main) {
  runCli(process.argv.slice(2), (line) => process.stdout.write(`${line}\n`)).catch((error: unknown) => {
    const known = error instanceof ConfigError || error instanceof DataDirLockedError || error instanceof UsageError;
    const message = known ? (error as Error).message : `failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
    process.stderr.write(`customernode: ${message}\n`);
    process.exit(known && error instanceof UsageError ? 64 : 1);
  });
}
