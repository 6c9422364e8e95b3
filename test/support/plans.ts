/** The plan PostgreSQL (or PGlite) would run for a query, flattened, for tests that pin plan shapes. */
import { CompiledQuery } from 'kysely';
import type { Tx } from '../../src/kernel/db/database.ts';

export interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

const flatten = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(flatten)];

/** Every node of the query's plan, outermost first; and the plan as JSON text. */
export async function explainPlan(tx: Tx, query: CompiledQuery): Promise<{ nodes: PlanNode[]; text: string }> {
  const { rows } = await tx.executeQuery<{ 'QUERY PLAN': unknown }>(CompiledQuery.raw(`explain (format json) ${query.sql}`, [...query.parameters]));
  const json = rows[0]!['QUERY PLAN'];
  // PostgreSQL's driver parses the JSON; PGlite's hands it over as text.
  const text = typeof json === 'string' ? json : JSON.stringify(json);
  return { nodes: flatten((JSON.parse(text) as [{ Plan: PlanNode }])[0].Plan), text };
}
