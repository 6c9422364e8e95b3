/**
 * Development keys kept under DATA_DIR/keys (the embedded default only; production configures
 * real keys and refuses these): read the file, or create it once, owner-only.
 */
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The file's content (trimmed), made with generate() when it does not exist yet. */
export function readOrCreateKeyFile(dataDir: string, name: string, generate: () => string): { file: string; content: string } {
  const dir = path.join(dataDir, 'keys');
  const file = path.join(dir, name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  let content: string;
  try {
    content = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'ENOENT') throw error;
    content = generate();
    // wx: never overwrite a key another process just wrote (whatever it protects would be lost).
    try {
      writeFileSync(file, content, { mode: 0o600, flag: 'wx' });
    } catch (writeError) {
      if ((writeError as { code?: unknown }).code !== 'EEXIST') throw writeError;
      content = readFileSync(file, 'utf8');
    }
  }
  chmodSync(file, 0o600);
  return { file, content: content.trim() };
}
