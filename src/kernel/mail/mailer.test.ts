import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMailer } from './mailer.ts';

const quietLog = { info: () => {}, error: () => {} };

describe('mail transport', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'cn-mail-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('without SMTP it writes an owner-only .eml file to the outbox and logs only its name', async () => {
    const outboxDir = path.join(dir, 'outbox');
    const lines: object[] = [];
    const mailer = createMailer({ mail: { smtpUrl: undefined, from: 'CN <no-reply@example.com>', outboxDir } });
    await mailer.send({ to: 'ada@example.com', subject: 'Hello', text: 'secret link #token=abc' }, { info: (o) => lines.push(o), error: () => {} });
    const [file] = readdirSync(outboxDir);
    expect(file).toMatch(/\.eml$/);
    expect(statSync(path.join(outboxDir, file!)).mode & 0o777).toBe(0o600);
    expect(statSync(outboxDir).mode & 0o777).toBe(0o700);
    const raw = readFileSync(path.join(outboxDir, file!), 'utf8');
    expect(raw).toMatch(/^To: ada@example.com$/m);
    expect(raw).toMatch(/^Subject: Hello$/m);
    expect(raw).toContain('#token=abc');
    expect(JSON.stringify(lines)).not.toContain('token');
  });

  it('with SMTP_URL it hands the message to a real SMTP server, with credentials', async () => {
    const received: { from: string | undefined; to: string[]; data: string; user: string | undefined }[] = [];
    const server = new SMTPServer({
      secure: false,
      disabledCommands: ['STARTTLS'],
      allowInsecureAuth: true,
      onAuth(auth, _session, callback) {
        if (auth.username === 'mailer' && auth.password === 'pw-in-url') callback(null, { user: auth.username });
        else callback(new Error('bad credentials'));
      },
      onData(stream, session, callback) {
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          received.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : undefined,
            to: session.envelope.rcptTo.map((r) => r.address),
            data: Buffer.concat(chunks).toString('utf8'),
            user: session.user as string | undefined,
          });
          callback();
        });
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.server.address() as AddressInfo;
    try {
      const mailer = createMailer({ mail: { smtpUrl: `smtp://mailer:pw-in-url@127.0.0.1:${port}`, from: 'CN <no-reply@example.com>', outboxDir: path.join(dir, 'unused') } });
      await mailer.send({ to: 'grace@example.com', subject: 'Reset', text: 'link' }, quietLog);
      mailer.close();
      expect(received).toHaveLength(1);
      expect(received[0]).toMatchObject({ from: 'no-reply@example.com', to: ['grace@example.com'], user: 'mailer' });
      expect(received[0]!.data).toMatch(/^Subject: Reset/m);
      expect(readdirSync(dir)).not.toContain('unused');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('a failed background delivery is logged without throwing', async () => {
    const errors: object[] = [];
    const mailer = createMailer({ mail: { smtpUrl: 'smtp://127.0.0.1:1', from: 'CN <no-reply@example.com>', outboxDir: path.join(dir, 'x') } });
    await new Promise<void>((resolve) => {
      mailer.sendInBackground({ to: 'x@example.com', subject: 's', text: 't' }, { info: () => {}, error: (o) => { errors.push(o); resolve(); } });
    });
    mailer.close();
    expect(errors).toHaveLength(1);
  });
});
