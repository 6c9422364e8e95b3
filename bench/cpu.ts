/** The machine's CPU time from /proc/stat (Linux), shared by the bench's measurements. */
import { existsSync, readFileSync } from 'node:fs';

/** Clock ticks per second: USER_HZ is 100 on every mainstream Linux build. */
export const CLK_TCK = 100;

export const procAvailable = existsSync('/proc/stat');

export interface SystemTicks {
  /** All CPUs: user + nice + system + irq + softirq (steal excluded). */
  busy: number;
  steal: number;
  total: number;
}

export function systemTicks(): SystemTicks {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line.trim().split(/\s+/).slice(1, 9).map(Number);
  return { busy: user + nice + system + irq + softirq, steal, total: user + nice + system + idle + iowait + irq + softirq + steal };
}
