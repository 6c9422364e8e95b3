/**
 * The one mail transport. SMTP (nodemailer) when SMTP_URL is set; otherwise, for a local
 * trial, each message is written as an .eml file to DATA_DIR/outbox and a log line names the
 * file (never the message: it holds single-use tokens, which stay out of logs).
 */
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { Config } from '../config/config.ts';

export interface Mail {
  readonly to: string;
  readonly subject: string;
  readonly text: string;
}

interface Log {
  info(object: object, message: string): void;
  error(object: object, message: string): void;
}

export interface Mailer {
  /** Resolves when the message is handed over (SMTP accepted it, or the file is written). */
  send(mail: Mail, log: Log): Promise<void>;
  /**
   * Sends in the background and never throws: for answers that must take the same time
   * whether or not a mail goes out (password reset must not reveal which emails exist).
   */
  sendInBackground(mail: Mail, log: Log): void;
  close(): void;
}

export function createMailer(config: Pick<Config, 'mail'>): Mailer {
  const { smtpUrl, from, outboxDir } = config.mail;
  // The outbox still builds a real RFC 5322 message, so what a person opens locally is what SMTP would carry.
  const transport = smtpUrl !== undefined ? nodemailer.createTransport(smtpUrl) : nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'unix' });

  async function send(mail: Mail, log: Log): Promise<void> {
    const info = await transport.sendMail({ from, to: mail.to, subject: mail.subject, text: mail.text });
    if (smtpUrl !== undefined) {
      log.info({ messageId: info.messageId }, 'mail sent');
      return;
    }
    await mkdir(outboxDir, { recursive: true, mode: 0o700 });
    const file = path.join(outboxDir, `${new Date().toISOString().replaceAll(':', '-')}-${randomUUID()}.eml`);
    await writeFile(file, (info as unknown as { message: Buffer }).message, { mode: 0o600 });
    log.info({ outboxFile: file, subject: mail.subject }, 'mail written to the local outbox (no SMTP_URL configured)');
  }

  return {
    send,
    sendInBackground(mail, log) {
      send(mail, log).catch((error: unknown) => {
        log.error({ err: error instanceof Error ? { message: error.message, code: (error as { code?: unknown }).code } : String(error) }, 'mail delivery failed');
      });
    },
    close() {
      transport.close();
    },
  };
}
