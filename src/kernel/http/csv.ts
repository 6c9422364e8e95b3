/** One CSV field: quoted, quotes doubled; a leading = + - @ (or tab, CR) is defused so a spreadsheet shows it as text. */
export function csvField(value: unknown): string {
  let text = value === null || value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return `"${text.replaceAll('"', '""')}"`;
}
