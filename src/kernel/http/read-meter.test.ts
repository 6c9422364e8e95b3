import { describe, expect, it } from 'vitest';
import { ReadMeter } from './read-meter.ts';

describe('the read meter', () => {
  const limits = { largeReadRecords: 100, largeReadWindowMinutes: 10 };
  const clock = () => {
    let now = Date.UTC(2026, 10, 30, 12, 0, 0);
    return { now: () => now, advance: (minutes: number) => (now += minutes * 60_000) };
  };

  it('reports once when a principal crosses the threshold within the window, with the routes that served the records', () => {
    const time = clock();
    const meter = new ReadMeter(limits, time.now);
    expect(meter.add('t|user:a', 60, 'GET /accounts')).toBeNull();
    time.advance(5);
    expect(meter.add('t|user:a', 39, 'GET /contacts')).toBeNull();
    expect(meter.add('t|user:b', 99, 'GET /accounts')).toBeNull(); // another principal counts apart
    expect(meter.add('t|user:a', 1, 'GET /contacts')).toEqual({ records: 100, windowMinutes: 10, routes: ['GET /accounts', 'GET /contacts'] });
    expect(meter.add('t|user:a', 500, 'GET /accounts')).toBeNull(); // quiet for the rest of the window
  });

  it('forgets reads older than the window: the same volume spread thinner never crosses', () => {
    const time = clock();
    const meter = new ReadMeter(limits, time.now);
    for (let i = 0; i < 30; i++) {
      expect(meter.add('t|user:a', 10, 'GET /accounts')).toBeNull(); // at most 7 reads of 10 fall within any 10 minutes
      time.advance(1.5);
    }
  });

  it('reports again after a window if the reading goes on', () => {
    const time = clock();
    const meter = new ReadMeter(limits, time.now);
    expect(meter.add('t|apikey:k', 100, 'GET /export')).not.toBeNull();
    for (let i = 0; i < 9; i++) {
      time.advance(1);
      expect(meter.add('t|apikey:k', 50, 'GET /export')).toBeNull();
    }
    time.advance(1);
    expect(meter.add('t|apikey:k', 50, 'GET /export')).toMatchObject({ records: 500 });
  });

  it('ignores empty reads and keeps a bounded number of principals', () => {
    const time = clock();
    const meter = new ReadMeter(limits, time.now);
    expect(meter.add('t|user:a', 0, 'GET /accounts')).toBeNull();
    expect(meter.size).toBe(0);
    for (let i = 0; i < 50_000; i++) meter.add(`t|user:${i}`, 1, 'GET /accounts');
    time.advance(11);
    meter.add('t|user:new', 1, 'GET /accounts');
    expect(meter.size).toBe(1); // every idle principal was swept
    for (let i = 0; i < 60_000; i++) meter.add(`t|user:busy-${i}`, 1, 'GET /accounts');
    expect(meter.size).toBeLessThanOrEqual(50_000);
  });
});
