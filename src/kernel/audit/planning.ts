/**
 * How the audit's background work (the sealer, verification) plans its statements. The
 * statistics of these fast-growing tables are often wrong both ways, or missing (autovacuum
 * may not have analysed them yet), so plans must not depend on them: custom plans, no
 * sequential or bitmap scans, so every search walks an index in order; and no JIT, which the
 * cost PostgreSQL gives a disabled plan (a one-row table's scan, say) would otherwise set off.
 * Select-list items for one statement, set for the rest of the transaction (or savepoint).
 */
import { sql, type RawBuilder } from 'kysely';

export const INDEX_WALK_PLANNING: RawBuilder<unknown> = sql`set_config('plan_cache_mode', 'force_custom_plan', true) as custom,
  set_config('enable_seqscan', 'off', true) as seqscan, set_config('enable_bitmapscan', 'off', true) as bitmapscan, set_config('jit', 'off', true) as jit`;
