/**
 * Counts the records each principal is served (a list's page, a single read, an export's
 * chunks) over a sliding window, so an unusually large read can become an audit event and
 * then an alert (features/monitoring/alerts.ts, rule large_read). Reads are not audited one
 * by one: that would add a write to every read. The count lives in this process, so with
 * several server processes each counts its own share of a principal's reads.
 */

export interface ReadVolume {
  /** Records served within the window when the threshold was crossed. */
  readonly records: number;
  readonly windowMinutes: number;
  /** The routes that served them (at most MAX_ROUTES). */
  readonly routes: readonly string[];
}

interface Entry {
  /** Records per minute, a slot per minute of the window (ring), and the minute each slot holds. */
  readonly counts: number[];
  readonly minutes: number[];
  readonly routes: Set<string>;
  /** After a report, none until this minute: at most one report per window while the reading goes on. */
  quietUntil: number;
  lastMinute: number;
}

const MAX_ROUTES = 10;
/** Principals tracked at most: idle ones are swept first, then the longest-tracked dropped. */
const MAX_ENTRIES = 50_000;

export class ReadMeter {
  readonly #threshold: number;
  readonly #windowMinutes: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();

  constructor(limits: { readonly largeReadRecords: number; readonly largeReadWindowMinutes: number }, now: () => number = Date.now) {
    this.#threshold = limits.largeReadRecords;
    this.#windowMinutes = limits.largeReadWindowMinutes;
    this.#now = now;
  }

  /** Adds records served to key by route; returns the window's volume when this crosses the threshold, else null. */
  add(key: string, records: number, route: string): ReadVolume | null {
    if (!(records > 0)) return null;
    const minute = Math.floor(this.#now() / 60_000);
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      if (this.#entries.size >= MAX_ENTRIES) this.#sweep(minute);
      entry = { counts: new Array<number>(this.#windowMinutes).fill(0), minutes: new Array<number>(this.#windowMinutes).fill(-1), routes: new Set(), quietUntil: 0, lastMinute: minute };
      this.#entries.set(key, entry);
    }
    entry.lastMinute = minute;
    const slot = minute % this.#windowMinutes;
    if (entry.minutes[slot] !== minute) {
      entry.minutes[slot] = minute;
      entry.counts[slot] = 0;
    }
    entry.counts[slot]! += records;
    if (entry.routes.size < MAX_ROUTES) entry.routes.add(route);
    if (minute < entry.quietUntil) return null;
    let total = 0;
    for (let i = 0; i < this.#windowMinutes; i++) if (entry.minutes[i]! > minute - this.#windowMinutes) total += entry.counts[i]!;
    if (total < this.#threshold) return null;
    const volume: ReadVolume = { records: total, windowMinutes: this.#windowMinutes, routes: [...entry.routes] };
    // A new window starts: the next report needs as many records again, and a window's time.
    entry.counts.fill(0);
    entry.routes.clear();
    entry.quietUntil = minute + this.#windowMinutes;
    return volume;
  }

  #sweep(minute: number): void {
    for (const [key, entry] of this.#entries) if (entry.lastMinute <= minute - this.#windowMinutes && entry.quietUntil <= minute) this.#entries.delete(key);
    // Still nearly full (a flood of principals): drop the longest-tracked ones, leaving room
    // for a tenth more, so a sweep runs at most once per MAX_ENTRIES / 10 new principals.
    for (const key of this.#entries.keys()) {
      if (this.#entries.size <= MAX_ENTRIES * 0.9) break;
      this.#entries.delete(key);
    }
  }

  /** Principals tracked now (for tests). */
  get size(): number {
    return this.#entries.size;
  }
}
