/**
 * CustomerNode's own lint rules: the tenant-scope patterns of DESIGN.md, enforced on every
 * file outside the database kernel. Each rule has RuleTester cases in rules.test.ts, and
 * lint-fixtures.test.ts proves on fixture files that `npm run lint` fails on each.
 */
import path from 'node:path';
import { ESLintUtils, type TSESLint, type TSESTree } from '@typescript-eslint/utils';

const createRule = ESLintUtils.RuleCreator((name) => `https://customernode.dev/lint/${name}`);

/** Paths with '/' separators, so the rules read the same on every platform. */
function pathOf(context: Readonly<TSESLint.RuleContext<string, unknown[]>>): string {
  return context.filename.replaceAll('\\', '/');
}

const inKernelDb = (file: string) => /\/src\/kernel\/db\//.test(file);
/** Where the database is opened: the server's and the CLI's entry points. */
const isCompositionRoot = (file: string) => /\/src\/(main\.ts|cli\/)/.test(file);

const DRIVERS = new Set(['pg', '@electric-sql/pglite']);

export const noRawDatabase = createRule({
  name: 'no-raw-database',
  meta: {
    type: 'problem',
    docs: { description: 'Outside the database kernel, no database driver, Kysely instance or database opener' },
    messages: {
      driver: "'{{source}}' is the kernel's: use the withTenant / withGlobal / systemDb handles of kernel/db.",
      kysely: 'A Kysely instance bypasses the tenant handles: take `tx` from withTenant (or a route context) instead.',
      opener: 'Only the entry points (src/main.ts, src/cli) open the database.',
    },
    schema: [],
  },
  defaultOptions: [],
  create(context) {
    const file = pathOf(context);
    if (inKernelDb(file)) return {};
    const kyselyNames = new Set(['Kysely']);
    const kyselyNamespaces = new Set<string>();
    return {
      ImportDeclaration(node) {
        const source = node.source.value;
        if (source === 'kysely') {
          for (const specifier of node.specifiers) {
            if (specifier.type === 'ImportNamespaceSpecifier') kyselyNamespaces.add(specifier.local.name);
            if (specifier.type === 'ImportSpecifier' && (specifier.imported.type === 'Identifier' ? specifier.imported.name : specifier.imported.value) === 'Kysely') kyselyNames.add(specifier.local.name);
          }
        }
        if (DRIVERS.has(source)) {
          context.report({ node, messageId: 'driver', data: { source } });
          return;
        }
        if (node.importKind === 'type') return;
        for (const specifier of node.specifiers) {
          if (specifier.type !== 'ImportSpecifier' || specifier.importKind === 'type') continue;
          const imported = specifier.imported.type === 'Identifier' ? specifier.imported.name : specifier.imported.value;
          if (source === 'kysely' && imported === 'Kysely') context.report({ node: specifier, messageId: 'kysely' });
          if (/\/kernel\/db\/database\.ts$/.test(source) && imported === 'openDatabase' && !isCompositionRoot(file)) {
            context.report({ node: specifier, messageId: 'opener' });
          }
        }
      },
      NewExpression(node) {
        const callee = node.callee;
        const viaNamespace = callee.type === 'MemberExpression' && callee.object.type === 'Identifier' && kyselyNamespaces.has(callee.object.name) && callee.property.type === 'Identifier' && callee.property.name === 'Kysely';
        if ((callee.type === 'Identifier' && kyselyNames.has(callee.name)) || viaNamespace) context.report({ node, messageId: 'kysely' });
      },
    };
  },
});

const RAW_SQL = new Set(['raw', 'lit', 'id', 'ref', 'table']);

export const noRawSql = createRule({
  name: 'no-raw-sql',
  meta: {
    type: 'problem',
    docs: { description: 'Outside the database kernel, no SQL text built from strings (sql.raw, sql.lit, CompiledQuery.raw, ...)' },
    messages: {
      raw: '{{call}} builds SQL from a string: use the query builder or the sql template with bound values.',
    },
    schema: [],
  },
  defaultOptions: [],
  create(context) {
    if (inKernelDb(pathOf(context))) return {};
    // Local names of kysely's `sql` and `CompiledQuery` (aliases too) and of `import * as k from 'kysely'`.
    const sqlNames = new Set(['sql']);
    const compiledNames = new Set(['CompiledQuery']);
    const namespaces = new Set<string>();
    const propertyName = (node: TSESTree.MemberExpression): string | null =>
      node.property.type === 'Identifier' && !node.computed ? node.property.name : node.property.type === 'Literal' && typeof node.property.value === 'string' ? node.property.value : null;
    /** 'sql' or 'CompiledQuery' when node names one of them (directly, aliased, or through a namespace). */
    const kyselyExport = (node: TSESTree.Node): string | null => {
      if (node.type === 'Identifier') return sqlNames.has(node.name) ? 'sql' : compiledNames.has(node.name) ? 'CompiledQuery' : null;
      if (node.type === 'MemberExpression' && node.object.type === 'Identifier' && namespaces.has(node.object.name)) {
        const name = propertyName(node);
        return name === 'sql' || name === 'CompiledQuery' ? name : null;
      }
      return null;
    };
    const isRaw = (owner: string | null, member: string | null) => (owner === 'sql' && member !== null && RAW_SQL.has(member)) || (owner === 'CompiledQuery' && member === 'raw');
    return {
      ImportDeclaration(node) {
        if (node.source.value !== 'kysely') return;
        for (const specifier of node.specifiers) {
          if (specifier.type === 'ImportNamespaceSpecifier') namespaces.add(specifier.local.name);
          if (specifier.type !== 'ImportSpecifier') continue;
          const imported = specifier.imported.type === 'Identifier' ? specifier.imported.name : specifier.imported.value;
          if (imported === 'sql') sqlNames.add(specifier.local.name);
          if (imported === 'CompiledQuery') compiledNames.add(specifier.local.name);
        }
      },
      MemberExpression(node) {
        const owner = kyselyExport(node.object);
        const member = propertyName(node);
        if (isRaw(owner, member)) context.report({ node, messageId: 'raw', data: { call: `${owner}.${member}` } });
      },
      // const { raw } = sql
      VariableDeclarator(node) {
        if (node.id.type !== 'ObjectPattern' || !node.init) return;
        const owner = kyselyExport(node.init);
        for (const property of node.id.properties) {
          const member = property.type === 'Property' && property.key.type === 'Identifier' ? property.key.name : null;
          if (isRaw(owner, member)) context.report({ node: property, messageId: 'raw', data: { call: `${owner}.${member}` } });
        }
      },
    };
  },
});

const QUERY_STARTS = new Set(['selectFrom', 'insertInto', 'updateTable', 'deleteFrom', 'mergeInto', 'replaceInto', 'selectNoFrom', 'with', 'executeQuery']);

export const tenantQueryThroughHandle = createRule({
  name: 'tenant-query-through-handle',
  meta: {
    type: 'problem',
    docs: { description: 'Queries start from a transaction handle (withTenant, withGlobal, systemDb, a route context), never from a Kysely instance' },
    messages: {
      handle: 'This query starts from a Kysely instance ({{type}}), outside any tenant transaction: use the `tx` handle.',
    },
    schema: [],
  },
  defaultOptions: [],
  create(context) {
    if (inKernelDb(pathOf(context))) return {};
    const services = ESLintUtils.getParserServices(context);
    const checker = services.program.getTypeChecker();
    return {
      CallExpression(node: TSESTree.CallExpression) {
        const callee = node.callee;
        if (callee.type !== 'MemberExpression' || callee.property.type !== 'Identifier' || !QUERY_STARTS.has(callee.property.name)) return;
        const type = services.getTypeAtLocation(callee.object);
        // Transaction<DB> (the handles) extends Kysely<DB>; only the bare class is refused.
        const name = (type.aliasSymbol ?? type.getSymbol())?.getName();
        if (name === 'Kysely') context.report({ node, messageId: 'handle', data: { type: checker.typeToString(type) } });
      },
    };
  },
});

export const systemDbReason = createRule({
  name: 'system-db-reason',
  meta: {
    type: 'problem',
    docs: { description: 'systemDb({ reason }) names its reason as a literal string' },
    messages: { reason: 'systemDb needs { reason: "<why this crosses tenants>" } with a literal string of at least 8 characters.' },
    schema: [],
  },
  defaultOptions: [],
  create(context) {
    return {
      CallExpression(node) {
        const callee = node.callee;
        const named = callee.type === 'MemberExpression' && callee.property.type === 'Identifier' ? callee.property.name : callee.type === 'Identifier' ? callee.name : null;
        if (named !== 'systemDb') return;
        const [options] = node.arguments;
        const reason =
          options?.type === 'ObjectExpression'
            ? options.properties.find((p) => p.type === 'Property' && p.key.type === 'Identifier' && p.key.name === 'reason')
            : undefined;
        const value = reason?.type === 'Property' ? reason.value : undefined;
        const text =
          value?.type === 'Literal' && typeof value.value === 'string'
            ? value.value
            : value?.type === 'TemplateLiteral' && value.expressions.length === 0
              ? (value.quasis[0]?.value.cooked ?? '')
              : null;
        if (text === null || text.trim().length < 8) context.report({ node, messageId: 'reason' });
      },
    };
  },
});

export const featureBoundaries = createRule({
  name: 'feature-boundaries',
  meta: {
    type: 'problem',
    docs: { description: "A feature uses another feature only through that feature's index.ts" },
    messages: { boundary: "Import '{{feature}}' through its index.ts, not '{{source}}'." },
    schema: [],
  },
  defaultOptions: [],
  create(context) {
    const file = pathOf(context);
    const own = /\/src\/features\/([^/]+)\//.exec(file)?.[1];
    if (own === undefined || /\.test\.ts$/.test(file)) return {};
    const check = (node: TSESTree.Node, source: string) => {
      if (!source.startsWith('.')) return;
      const target = path.posix.resolve(path.posix.dirname(file), source);
      const match = /\/src\/features\/([^/]+)\/(.+)$/.exec(target);
      if (!match || match[1] === own) return;
      if (match[2] !== 'index.ts') context.report({ node, messageId: 'boundary', data: { feature: match[1]!, source } });
    };
    return {
      ImportDeclaration(node) {
        check(node, node.source.value);
      },
      ExportNamedDeclaration(node) {
        if (node.source) check(node, node.source.value);
      },
      ExportAllDeclaration(node) {
        check(node, node.source.value);
      },
    };
  },
});

const ROLE_NAMES = new Set(['owner', 'admin', 'member', 'viewer', 'guest']);

export const noRoleInterpretation = createRule({
  name: 'no-role-interpretation',
  meta: {
    type: 'problem',
    docs: { description: 'Only the access policy interprets a role: no comparisons with role names elsewhere' },
    messages: { role: "Comparing with the role '{{role}}' interprets roles outside src/features/access: ask the policy (can, OWNER_ROLE, ...) instead." },
    schema: [],
  },
  defaultOptions: [],
  create(context) {
    const file = pathOf(context);
    // The application's code only: the policy itself, tests, the bench and tools may name roles.
    if (!/\/src\//.test(file) || /\/src\/features\/access\//.test(file) || /\.test\.ts$/.test(file)) return {};
    const roleLiteral = (node: TSESTree.Node | undefined) => (node?.type === 'Literal' && typeof node.value === 'string' && ROLE_NAMES.has(node.value) ? node.value : null);
    return {
      BinaryExpression(node) {
        if (!['===', '!==', '==', '!='].includes(node.operator)) return;
        const role = roleLiteral(node.left) ?? roleLiteral(node.right);
        if (role) context.report({ node, messageId: 'role', data: { role } });
      },
      // switch (role) { case 'owner': ... }
      SwitchCase(node) {
        const role = roleLiteral(node.test ?? undefined);
        if (role) context.report({ node, messageId: 'role', data: { role } });
      },
      // ['admin', 'owner'].includes(role), new Set(['owner']), ...
      ArrayExpression(node) {
        for (const element of node.elements) {
          const role = roleLiteral(element ?? undefined);
          if (role) {
            context.report({ node, messageId: 'role', data: { role } });
            return;
          }
        }
      },
      // Query filters: .where('role', '=', 'owner') and the like.
      CallExpression(node) {
        if (node.callee.type !== 'MemberExpression' || node.callee.property.type !== 'Identifier' || !/^(where|orWhere|having)$/.test(node.callee.property.name)) return;
        const [column, , value] = node.arguments;
        const role = roleLiteral(value);
        if (role && column?.type === 'Literal' && typeof column.value === 'string' && /(^|\.)role$/.test(column.value)) context.report({ node, messageId: 'role', data: { role } });
      },
    };
  },
});

const plugin = {
  meta: { name: 'customernode' },
  rules: {
    'no-raw-database': noRawDatabase,
    'no-raw-sql': noRawSql,
    'tenant-query-through-handle': tenantQueryThroughHandle,
    'system-db-reason': systemDbReason,
    'feature-boundaries': featureBoundaries,
    'no-role-interpretation': noRoleInterpretation,
  },
};

export default plugin;
