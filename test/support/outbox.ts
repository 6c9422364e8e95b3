/** Reads the development mail outbox (DATA_DIR/outbox/*.eml) the way a person would. */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface OutboxMail {
  readonly file: string;
  readonly to: string;
  readonly subject: string;
  readonly text: string;
}

function decodeQuotedPrintable(body: string): string {
  const bytes = body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

export function readOutbox(dataDir: string): OutboxMail[] {
  const dir = path.join(dataDir, 'outbox');
  let files: string[];
  try {
    files = readdirSync(dir).filter((name) => name.endsWith('.eml')).sort();
  } catch {
    return [];
  }
  return files.map((name) => {
    const raw = readFileSync(path.join(dir, name), 'utf8');
    const split = raw.indexOf('\n\n');
    const headers = raw.slice(0, split);
    const header = (key: string) => new RegExp(`^${key}: (.*)$`, 'mi').exec(headers)?.[1]?.trim() ?? '';
    const qp = /^Content-Transfer-Encoding: quoted-printable$/im.test(headers);
    const body = raw.slice(split + 2);
    return { file: name, to: header('To'), subject: header('Subject'), text: qp ? decodeQuotedPrintable(body) : body };
  });
}

/** Waits (briefly) for a mail to `to` whose text contains a `#token=` link, and returns the token. */
export async function waitForToken(dataDir: string, to: string, subjectIncludes: string, after = 0): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const mails = readOutbox(dataDir).filter((m) => m.to.includes(to) && m.subject.includes(subjectIncludes));
    const mail = mails[after];
    // Invitation tokens name their tenant: "<tenant uuid>.<secret>".
    const token = mail ? /#token=((?:[0-9a-f-]{36}\.)?[A-Za-z0-9_-]{43})/.exec(mail.text)?.[1] : undefined;
    if (token) return token;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no mail "${subjectIncludes}" to ${to} in the outbox`);
}
