import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, type ReadStream } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { openAuditSink, runAfterCommit } from './database.ts';

// Threat: a mail with a link goes out for a change that never committed (the link is dead, or worse, misleading).
describe('side effects after commit', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await openTestDatabase();
  });
  afterAll(async () => t?.close());

  it('run once the transaction has committed, in order, and never for one that rolled back', async () => {
    const ran: string[] = [];
    await t.db.withTenant(randomUUID(), async () => {
      runAfterCommit(() => ran.push('first'));
      runAfterCommit(() => ran.push('second'));
      expect(ran).toEqual([]);
    });
    expect(ran).toEqual(['first', 'second']);
    await expect(
      t.db.withTenant(randomUUID(), async () => {
        runAfterCommit(() => ran.push('rolled back'));
        throw new Error('the change failed');
      }),
    ).rejects.toThrow('the change failed');
    expect(ran).toEqual(['first', 'second']);
    expect(() => runAfterCommit(() => undefined)).toThrow(/outside a kernel transaction/);
  });
});

// Threat: a SIEM that stops reading the operator stream makes the server hold audit lines
// without bound, or lines go missing without a word (the database keeps every event).
describe('the operator audit stream when nobody reads it', () => {
  it('drops lines beyond its backlog, says so once, and counts every line it dropped when the reader is back', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-sink-'));
    const fifo = path.join(dir, 'stream');
    execFileSync('mkfifo', [fifo]);
    const logged: { level: string; object: object; message: string }[] = [];
    const logger = {
      error: (object: object, message: string) => logged.push({ level: 'error', object, message }),
      warn: (object: object, message: string) => logged.push({ level: 'warn', object, message }),
    };
    // A FIFO with no reader: opening it for writing waits, so every line stays buffered.
    const sink = openAuditSink({ auditStream: { kind: 'file', path: fifo } }, logger as never, 1024);
    let reader: ReadStream | undefined;
    let closed = false;
    try {
      const line = (n: number) => `{"line":${n},"pad":"${'x'.repeat(280)}"}`;
      for (let n = 1; n <= 4; n++) sink.write!(line(n)); // 4 x 300 bytes: over the backlog after the fourth
      sink.write!([line(5), line(6), line(7)].join('\n')); // a sealing pass's lines as one text
      sink.write!(line(8));
      expect(logged).toEqual([{ level: 'error', object: { backlogBytes: 1200 }, message: expect.stringMatching(/not being read/) }]);

      reader = createReadStream(fifo, { encoding: 'utf8' });
      let received = '';
      reader.on('data', (chunk) => (received += chunk));
      while (received.split('\n').length <= 4) await new Promise((resolve) => setTimeout(resolve, 10));
      sink.write!(line(9));
      expect(logged[1]).toEqual({ level: 'warn', object: { dropped: 4 }, message: expect.stringMatching(/caught up/) });
      const ended = new Promise<void>((resolve) => reader!.on('end', () => resolve()));
      await sink.close();
      closed = true;
      await ended;
      expect(received.trimEnd().split('\n').map((text) => (JSON.parse(text) as { line: number }).line)).toEqual([1, 2, 3, 4, 9]);
    } finally {
      // Never leave the write side waiting for a reader (it holds a libuv thread).
      reader ??= createReadStream(fifo).on('data', () => {});
      reader.on('error', () => {});
      if (!closed) await sink.close();
      reader.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
