/**
 * Versioned migrations, applied in order by the table-owner connection. Never edit a
 * migration that has shipped: add a new one. Every tenant-owned table follows the
 * invariants of DESIGN.md (tenant_id first in the primary key, tenant-including foreign
 * keys, RLS enabled and forced); the schema test in catalog.test.ts holds us to that.
 * Timestamps are kept to the millisecond so keyset cursors round-trip through JS Dates.
 */

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** The RLS predicate. nullif: after a transaction current_setting(..., true) is '' not NULL. */
export const TENANT_PREDICATE = "tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid";

/** Enables and forces RLS with the tenant policy, plus full access for the system role. */
function isolate(table: string): string {
  return `
alter table ${table} enable row level security;
alter table ${table} force row level security;
create policy tenant_isolation on ${table} using (${TENANT_PREDICATE}) with check (${TENANT_PREDICATE});
create policy system_access on ${table} to cn_system using (true) with check (true);`;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'foundation',
    sql: `
create table tenants (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  created_at timestamptz not null default date_trunc('milliseconds', now())
);

create table users (
  id uuid primary key default gen_random_uuid(),
  email text not null check (email = lower(email) and length(email) <= 254),
  name text not null check (length(name) between 1 and 200),
  password_hash text not null,
  mfa_enabled boolean not null default false,
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  last_login_at timestamptz
);
create unique index users_email_key on users (email);

create table sessions (
  id uuid primary key default gen_random_uuid(),
  token_hash bytea not null unique,
  user_id uuid not null references users (id) on delete cascade,
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  last_seen_at timestamptz not null default date_trunc('milliseconds', now()),
  expires_at timestamptz not null,
  revoked_at timestamptz,
  ip text,
  user_agent text
);
create index sessions_user_idx on sessions (user_id);

create table memberships (
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  role text not null check (role in ('owner', 'admin', 'member', 'viewer', 'guest')),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, user_id)
);
create index memberships_user_idx on memberships (user_id);
${isolate('memberships')}
-- A signed-in user may list their own memberships across tenants (tenant picker);
-- reading or writing anyone else's still needs the tenant context.
create policy memberships_self_read on memberships for select
  using (user_id = nullif(current_setting('app.user_id', true), '')::uuid);

create table invitations (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  email text not null,
  role text not null check (role in ('owner', 'admin', 'member', 'viewer', 'guest')),
  token_hash bytea not null,
  invited_by uuid not null references users (id),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid references users (id),
  primary key (tenant_id, id),
  unique (tenant_id, token_hash)
);
${isolate('invitations')}

create table accounts (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  name text not null,
  domain text,
  description text,
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  updated_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, id)
);
create index accounts_page_idx on accounts (tenant_id, created_at, id);
${isolate('accounts')}

create table contacts (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  account_id uuid not null,
  name text not null,
  email text,
  phone text,
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  updated_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, id),
  -- A contact can only point at an account of its own tenant.
  foreign key (tenant_id, account_id) references accounts (tenant_id, id) on delete restrict
);
create index contacts_page_idx on contacts (tenant_id, created_at, id);
create index contacts_account_idx on contacts (tenant_id, account_id);
${isolate('contacts')}

-- Audit rows never cascade away with their subject: no foreign keys to the things they describe.
create table audit_heads (
  tenant_id uuid not null references tenants (id),
  seq bigint not null default 0,
  primary key (tenant_id)
);
${isolate('audit_heads')}

create table audit_events (
  tenant_id uuid not null references tenants (id),
  seq bigint not null,
  id uuid not null default gen_random_uuid(),
  at timestamptz not null default date_trunc('milliseconds', now()),
  actor_type text not null check (actor_type in ('user', 'apikey', 'system', 'scim', 'anonymous')),
  actor_id uuid,
  actor_email text,
  action text not null,
  target_type text,
  target_id text,
  outcome text not null check (outcome in ('success', 'denied', 'failure')),
  ip text,
  user_agent text,
  request_id text,
  metadata jsonb not null default '{}',
  primary key (tenant_id, seq),
  unique (tenant_id, id)
);
create index audit_events_action_idx on audit_events (tenant_id, action, seq);
${isolate('audit_events')}

create table platform_audit_events (
  seq bigserial primary key,
  id uuid not null unique default gen_random_uuid(),
  tenant_id uuid,
  at timestamptz not null default date_trunc('milliseconds', now()),
  actor_type text not null check (actor_type in ('user', 'apikey', 'system', 'scim', 'anonymous')),
  actor_id uuid,
  actor_email text,
  action text not null,
  target_type text,
  target_id text,
  outcome text not null check (outcome in ('success', 'denied', 'failure')),
  ip text,
  user_agent text,
  request_id text,
  metadata jsonb not null default '{}'
);
`,
  },
  {
    version: 2,
    name: 'enter-tenant',
    // The request guard's first statement: set the tenant for this transaction, then read
    // the caller's session, user and membership under that tenant's RLS. One round trip.
    // SECURITY INVOKER: it runs with the caller's privileges and policies.
    sql: `
create function cn_enter_tenant(p_tenant uuid, p_token_hash bytea)
returns table (session_id uuid, user_id uuid, email text, name text, role text)
language plpgsql volatile security invoker as $$
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  return query
    select s.id, u.id, u.email, u.name, m.role
    from public.sessions s
    join public.users u on u.id = s.user_id
    left join public.memberships m on m.tenant_id = p_tenant and m.user_id = s.user_id
    where s.token_hash = p_token_hash and s.revoked_at is null and s.expires_at > now();
end $$;
revoke all on function cn_enter_tenant(uuid, bytea) from public;
`,
  },
  {
    version: 3,
    name: 'auth-throttles',
    // Login protection state lives in the database so every server instance shares it.
    sql: `
create table auth_throttles (
  key text primary key,
  failures integer not null default 0,
  window_started_at timestamptz not null default now(),
  locked_until timestamptz,
  lockouts integer not null default 0,
  updated_at timestamptz not null default now()
);
create table auth_failures (
  ip text not null,
  account_key text not null,
  at timestamptz not null default now()
);
create index auth_failures_ip_idx on auth_failures (ip, at);
`,
  },
  {
    version: 4,
    name: 'api-keys',
    sql: `
create table api_keys (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  name text not null check (length(name) between 1 and 100),
  role text not null check (role in ('owner', 'admin', 'member', 'viewer', 'guest')),
  key_hash bytea not null,
  created_by uuid not null references users (id),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  expires_at timestamptz,
  last_used_at timestamptz,
  revoked_at timestamptz,
  primary key (tenant_id, id),
  unique (tenant_id, key_hash)
);
create index api_keys_creator_idx on api_keys (tenant_id, created_by);
${isolate('api_keys')}

-- The guard's first statement for a request with an API key: tenant context, the live key,
-- its creator and the creator's current role (a key never outranks its creator), and a
-- last-used stamp at most once a minute.
create function cn_enter_tenant_key(p_tenant uuid, p_key_hash bytea)
returns table (key_id uuid, key_role text, creator_id uuid, creator_email text, creator_name text, creator_role text)
language plpgsql volatile security invoker as $$
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  -- SKIP LOCKED: a request never queues behind another request's stamp of the same key.
  update public.api_keys k set last_used_at = now()
    where (k.tenant_id, k.id) in (
      select k2.tenant_id, k2.id from public.api_keys k2
      where k2.tenant_id = p_tenant and k2.key_hash = p_key_hash and k2.revoked_at is null
        and (k2.expires_at is null or k2.expires_at > now())
        and (k2.last_used_at is null or k2.last_used_at < now() - interval '1 minute')
      for update skip locked);
  return query
    select k.id, k.role, u.id, u.email, u.name, m.role
    from public.api_keys k
    join public.users u on u.id = k.created_by
    left join public.memberships m on m.tenant_id = k.tenant_id and m.user_id = k.created_by
    where k.tenant_id = p_tenant and k.key_hash = p_key_hash and k.revoked_at is null
      and (k.expires_at is null or k.expires_at > now());
end $$;
revoke all on function cn_enter_tenant_key(uuid, bytea) from public;
`,
  },
  {
    version: 5,
    name: 'mfa',
    sql: `
alter table users add column totp_secret text;
alter table users add column totp_pending_secret text;
alter table users add column totp_last_step bigint;

create table mfa_recovery_codes (
  user_id uuid not null references users (id) on delete cascade,
  code_hash bytea not null,
  used_at timestamptz,
  primary key (user_id, code_hash)
);

create table mfa_challenges (
  id uuid primary key default gen_random_uuid(),
  token_hash bytea not null unique,
  user_id uuid not null references users (id) on delete cascade,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  consumed_at timestamptz
);
`,
  },
  {
    version: 6,
    name: 'tenant-settings',
    sql: `
create table tenant_settings (
  tenant_id uuid not null references tenants (id) on delete cascade,
  require_mfa boolean not null default false,
  session_idle_minutes integer not null default 30 check (session_idle_minutes between 5 and 1440),
  updated_at timestamptz not null default now(),
  primary key (tenant_id)
);
${isolate('tenant_settings')}

`,
  },
  {
    version: 7,
    name: 'session-authenticated-at',
    // When the person behind a session last proved who they are (login, MFA, re-authentication):
    // sensitive actions need that to be recent (step-up).
    sql: `alter table sessions add column authenticated_at timestamptz not null default now();`,
  },
  {
    version: 8,
    name: 'tenant-session-revocations',
    sql: `
create table tenant_session_revocations (
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  revoked_before timestamptz not null,
  primary key (tenant_id, user_id)
);
${isolate('tenant_session_revocations')}

-- The guard's entry now also answers what the tenant's policy needs: whether the user has
-- a second factor, the tenant's MFA and idle rules, and when the session was last used
-- (stamped at most once a minute). Idle time counts against min(platform, tenant) limits.
drop function cn_enter_tenant(uuid, bytea);
create function cn_enter_tenant(p_tenant uuid, p_token_hash bytea, p_platform_idle_minutes integer)
returns table (session_id uuid, user_id uuid, email text, name text, role text, mfa_enabled boolean, require_mfa boolean, idle boolean)
language plpgsql volatile security invoker as $$
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  -- One statement (one plan, cached by plpgsql): the settings row is read once.
  return query
    with ts as (
      select t.require_mfa, least(p_platform_idle_minutes, t.session_idle_minutes) as idle_minutes
      from public.tenant_settings t where t.tenant_id = p_tenant
    ), live as (
      select s.id, s.user_id, s.last_seen_at,
        s.last_seen_at < now() - make_interval(mins => coalesce((select ts.idle_minutes from ts), p_platform_idle_minutes)) as idle
      from public.sessions s
      where s.token_hash = p_token_hash and s.revoked_at is null and s.expires_at > now()
        -- An admin signed this member out of this tenant: older sessions no longer count here.
        and not exists (select 1 from public.tenant_session_revocations r
                        where r.tenant_id = p_tenant and r.user_id = s.user_id and s.created_at <= r.revoked_before)
    ), due as (
      -- SKIP LOCKED: while one request stamps the session, the others neither wait nor stamp
      -- (the stamp may ride a deferred read-only COMMIT; nobody must queue behind it).
      select s2.id from public.sessions s2 join live on live.id = s2.id
      where not live.idle and s2.last_seen_at < now() - interval '1 minute'
      for update of s2 skip locked
    ), stamp as (
      update public.sessions s set last_seen_at = now() from due where s.id = due.id
    )
    select live.id, u.id, u.email, u.name, m.role, u.mfa_enabled, coalesce((select ts.require_mfa from ts), false), live.idle
    from live
    join public.users u on u.id = live.user_id
    left join public.memberships m on m.tenant_id = p_tenant and m.user_id = live.user_id;
end $$;
revoke all on function cn_enter_tenant(uuid, bytea, integer) from public;

`,
  },
  {
    version: 9,
    name: 'user-tokens',
    // Mailed single-use tokens (password reset, email verification), stored only as digests.
    // email: the address the token went to, so a verification proves that exact address.
    sql: `
alter table users add column email_verified_at timestamptz;
create table user_tokens (
  token_hash bytea primary key,
  user_id uuid not null references users (id) on delete cascade,
  purpose text not null check (purpose in ('password_reset', 'email_verification')),
  email text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
create index user_tokens_user_idx on user_tokens (user_id, purpose);
`,
  },
  {
    version: 10,
    name: 'sso',
    sql: `
-- A tenant's OpenID Connect identity provider. client_secret: field encryption arrives
-- with the key management capability; until then it is never returned by the API or logged.
create table tenant_sso (
  tenant_id uuid not null references tenants (id) on delete cascade,
  issuer text not null,
  client_id text not null,
  client_secret text not null,
  allowed_domains text[] not null default '{}',
  default_role text not null default 'member' check (default_role in ('admin', 'member', 'viewer')),
  jit_provisioning boolean not null default false,
  enabled boolean not null default true,
  updated_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id)
);
${isolate('tenant_sso')}

-- Email domains a tenant proved it controls (DNS TXT). A domain is verified by at most one
-- tenant at a time: only that tenant's IdP may vouch for existing accounts of the domain.
create table tenant_domains (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  domain text not null check (domain = lower(domain) and length(domain) <= 253),
  challenge text not null,
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  verified_at timestamptz,
  primary key (tenant_id, id),
  unique (tenant_id, domain)
);
create unique index tenant_domains_verified_key on tenant_domains (domain) where verified_at is not null;
${isolate('tenant_domains')}

-- Users are global, so an SSO identity is keyed by the IdP's (issuer, subject), never by email.
create table sso_identities (
  issuer text not null,
  subject text not null,
  user_id uuid not null references users (id) on delete cascade,
  tenant_id uuid not null references tenants (id) on delete cascade,
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (issuer, subject)
);
create index sso_identities_user_idx on sso_identities (user_id);

-- A login in flight between /start and /callback (state stored only as a digest).
create table sso_logins (
  tenant_id uuid not null references tenants (id) on delete cascade,
  state_hash bytea not null,
  code_verifier text not null,
  nonce text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  consumed_at timestamptz,
  primary key (tenant_id, state_hash)
);
${isolate('sso_logins')}

-- Owners' password logins into a tenant that requires SSO, recorded once per session.
create table sso_break_glass (
  tenant_id uuid not null references tenants (id) on delete cascade,
  session_id uuid not null references sessions (id) on delete cascade,
  at timestamptz not null default now(),
  primary key (tenant_id, session_id)
);
${isolate('sso_break_glass')}

alter table tenant_settings add column require_sso boolean not null default false;
-- A session opened by a tenant's IdP reaches only that tenant; idp_mfa: the IdP said it used more than one factor.
alter table sessions add column sso_tenant_id uuid references tenants (id) on delete cascade;
alter table sessions add column idp_mfa boolean not null default false;

drop function cn_enter_tenant(uuid, bytea, integer);
create function cn_enter_tenant(p_tenant uuid, p_token_hash bytea, p_platform_idle_minutes integer)
returns table (session_id uuid, user_id uuid, email text, name text, role text, mfa_enabled boolean, require_mfa boolean, idle boolean,
               require_sso boolean, sso_tenant_id uuid)
language plpgsql volatile security invoker as $$
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  return query
    with ts as (
      select t.require_mfa, t.require_sso, least(p_platform_idle_minutes, t.session_idle_minutes) as idle_minutes
      from public.tenant_settings t where t.tenant_id = p_tenant
    ), live as (
      select s.id, s.user_id, s.last_seen_at, s.sso_tenant_id, s.idp_mfa,
        s.last_seen_at < now() - make_interval(mins => coalesce((select ts.idle_minutes from ts), p_platform_idle_minutes)) as idle
      from public.sessions s
      where s.token_hash = p_token_hash and s.revoked_at is null and s.expires_at > now()
        and not exists (select 1 from public.tenant_session_revocations r
                        where r.tenant_id = p_tenant and r.user_id = s.user_id and s.created_at <= r.revoked_before)
    ), due as (
      select s2.id from public.sessions s2 join live on live.id = s2.id
      where not live.idle and s2.last_seen_at < now() - interval '1 minute'
      for update of s2 skip locked
    ), stamp as (
      update public.sessions s set last_seen_at = now() from due where s.id = due.id
    )
    select live.id, u.id, u.email, u.name, m.role,
      -- A second factor: our TOTP, or this tenant's IdP saying it asked for more than one.
      u.mfa_enabled or (live.sso_tenant_id = p_tenant and live.idp_mfa),
      coalesce((select ts.require_mfa from ts), false), live.idle,
      coalesce((select ts.require_sso from ts), false), live.sso_tenant_id
    from live
    join public.users u on u.id = live.user_id
    left join public.memberships m on m.tenant_id = p_tenant and m.user_id = live.user_id;
end $$;
revoke all on function cn_enter_tenant(uuid, bytea, integer) from public;
`,
  },
  {
    version: 11,
    name: 'strict-tenant-entry',
    // The entry for a request that sends its first read along with it (one round trip): it
    // raises unless the caller may proceed without anything the guard must write or decide
    // (denials, break-glass), which aborts the transaction before the read runs. Whoever it
    // refuses is taken through the ordinary entry and guard, which record the outcome.
    sql: `
create function cn_enter_tenant_strict(p_tenant uuid, p_token_hash bytea, p_platform_idle_minutes integer, p_roles text[])
returns table (session_id uuid, user_id uuid, email text, name text, role text, mfa_enabled boolean, require_mfa boolean, idle boolean,
               require_sso boolean, sso_tenant_id uuid)
language plpgsql volatile security invoker as $$
declare
  c record;
begin
  select * into c from public.cn_enter_tenant(p_tenant, p_token_hash, p_platform_idle_minutes) e limit 1;
  if not found or c.idle or c.role is null or not (c.role = any (p_roles))
     or (c.sso_tenant_id is not null and c.sso_tenant_id <> p_tenant)
     or (c.require_mfa and not c.mfa_enabled)
     or (c.require_sso and c.sso_tenant_id is distinct from p_tenant) then
    raise exception 'the caller may not proceed on the strict path' using errcode = 'CN403';
  end if;
  return query select c.session_id, c.user_id, c.email, c.name, c.role, c.mfa_enabled, c.require_mfa, c.idle, c.require_sso, c.sso_tenant_id;
end $$;
revoke all on function cn_enter_tenant_strict(uuid, bytea, integer, text[]) from public;
`,
  },
  {
    version: 12,
    name: 'audit-append-only',
    // Grants already keep the application and system roles to INSERT and SELECT on audit
    // tables; this trigger holds every role to it, the tables' owner included (only a
    // superuser, or the owner by disabling the trigger, can get past it: both are visible).
    // The retention purge (not built yet) will run as a role named cn_audit_purge, the one
    // role the trigger lets DELETE; no such role exists until then.
    sql: `
create function cn_audit_append_only() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' and current_user = 'cn_audit_purge' then
    return old;
  end if;
  raise exception 'audit events are append-only: % on % refused', tg_op, tg_table_name using errcode = '42501';
end $$;
create trigger audit_events_append_only before update or delete on audit_events
  for each row execute function cn_audit_append_only();
create trigger platform_audit_events_append_only before update or delete on platform_audit_events
  for each row execute function cn_audit_append_only();
create trigger audit_events_no_truncate before truncate on audit_events
  for each statement execute function cn_audit_append_only();
create trigger platform_audit_events_no_truncate before truncate on platform_audit_events
  for each statement execute function cn_audit_append_only();
`,
  },
  {
    version: 13,
    name: 'audit-target-index',
    // A record's history: its events, newest first.
    sql: `create index audit_events_target_idx on audit_events (tenant_id, target_type, target_id, seq);`,
  },
  {
    version: 14,
    name: 'security-alerts',
    sql: `
create table security_alerts (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  rule text not null,
  severity text not null check (severity in ('low', 'medium', 'high')),
  subject text not null,
  evidence uuid[] not null default '{}',
  details jsonb not null default '{}',
  status text not null default 'open' check (status in ('open', 'acknowledged', 'resolved')),
  at timestamptz not null default date_trunc('milliseconds', now()),
  updated_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, id)
);
-- One unresolved alert per rule and subject: a burst raises one alert, not hundreds.
create unique index security_alerts_open_key on security_alerts (tenant_id, rule, subject) where status <> 'resolved';
create index security_alerts_page_idx on security_alerts (tenant_id, at, id);
${isolate('security_alerts')}

-- How far the alert rules have read each tenant's log.
create table alert_cursors (
  tenant_id uuid not null references tenants (id) on delete cascade,
  last_seq bigint not null default 0,
  primary key (tenant_id)
);
${isolate('alert_cursors')}
`,
  },
  {
    version: 15,
    name: 'audit-chain',
    // The write path only inserts an event (with a global position, no per-tenant lock);
    // the sealer later gives each event its per-tenant seq and chain hash, in batches, as
    // cn_system. The trigger lets cn_system make exactly that one change, once per row.
    // Events recorded before this version are re-sealed in their old order.
    sql: `
alter table audit_events disable trigger audit_events_append_only;
create sequence audit_event_position;
alter table audit_events add column position bigint, add column hash bytea, add column sealed_at timestamptz;
-- The JCS text of metadata, stored at sealing: lets the database recompute the chain hashes
-- itself (fast verification); the chain is still defined on metadata, which it must equal.
alter table audit_events add column canonical_metadata text;
update audit_events e set position = o.n
  from (select tenant_id, seq, nextval('audit_event_position') as n from (select tenant_id, seq from audit_events order by tenant_id, seq) s) o
  where e.tenant_id = o.tenant_id and e.seq = o.seq;
alter table audit_events alter column position set default nextval('audit_event_position'), alter column position set not null;
alter sequence audit_event_position owned by audit_events.position;
alter table audit_events drop constraint audit_events_pkey;
alter table audit_events alter column seq drop not null;
update audit_events set seq = null;
alter table audit_events drop constraint audit_events_tenant_id_id_key;
alter table audit_events add primary key (tenant_id, id);
-- Readers only ever see sealed events, so every read index covers sealed rows only: an
-- insert touches the primary key and the unsealed index alone; sealing fills the rest.
create unique index audit_events_seq_key on audit_events (tenant_id, seq) where seq is not null;
create index audit_events_unsealed_idx on audit_events (tenant_id, position) where seq is null;
drop index audit_events_action_idx;
create index audit_events_action_idx on audit_events (tenant_id, action, seq) where seq is not null;
drop index audit_events_target_idx;
create index audit_events_target_idx on audit_events (tenant_id, target_type, target_id, seq) where seq is not null;
alter table audit_events add constraint audit_events_sealed_check
  check ((seq is null) = (hash is null) and (seq is null) = (sealed_at is null));
alter table audit_events enable trigger audit_events_append_only;
drop table audit_heads;

alter table platform_audit_events disable trigger platform_audit_events_append_only;
alter table platform_audit_events rename column seq to position;
alter table platform_audit_events add column seq bigint, add column hash bytea, add column sealed_at timestamptz, add column canonical_metadata text;
create unique index platform_audit_events_seq_key on platform_audit_events (seq) where seq is not null;
create index platform_audit_events_unsealed_idx on platform_audit_events (position) where seq is null;
alter table platform_audit_events add constraint platform_audit_events_sealed_check
  check ((seq is null) = (hash is null) and (seq is null) = (sealed_at is null));
alter table platform_audit_events enable trigger platform_audit_events_append_only;

-- The head of each chain: written only by the sealer, under a row lock the writers never take.
create table audit_chain_heads (
  tenant_id uuid not null references tenants (id),
  seq bigint not null default 0,
  hash bytea not null default decode(repeat('00', 32), 'hex'),
  sealed_at timestamptz,
  primary key (tenant_id)
);
${isolate('audit_chain_heads')}
create table platform_audit_head (
  id boolean primary key default true check (id),
  seq bigint not null default 0,
  hash bytea not null default decode(repeat('00', 32), 'hex'),
  sealed_at timestamptz
);
insert into platform_audit_head default values;

-- Signed checkpoints of a chain head (Ed25519 over a canonical JSON message).
create table audit_checkpoints (
  tenant_id uuid not null references tenants (id),
  seq bigint not null,
  hash bytea not null,
  at timestamptz not null default date_trunc('milliseconds', now()),
  key_id text not null,
  signature bytea not null,
  reason text not null check (reason in ('interval', 'retention')),
  primary key (tenant_id, seq, reason)
);
${isolate('audit_checkpoints')}
create table platform_audit_checkpoints (
  seq bigint not null,
  hash bytea not null,
  at timestamptz not null default date_trunc('milliseconds', now()),
  key_id text not null,
  signature bytea not null,
  reason text not null check (reason in ('interval', 'retention')),
  primary key (seq, reason)
);

create or replace function cn_audit_append_only() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' and current_user = 'cn_audit_purge' and tg_table_name = 'audit_events' then
    return old;
  end if;
  -- Sealing: the system role gives an unsealed event its seq and hash, once. Its column
  -- grant (seq, hash, sealed_at, canonical_metadata) keeps every other column as it was.
  if tg_op = 'UPDATE' and current_user = 'cn_system' and tg_table_name in ('audit_events', 'platform_audit_events') then
    if old.seq is null and old.hash is null and new.seq is not null and new.hash is not null then
      return new;
    end if;
  end if;
  raise exception 'audit events are append-only: % on % refused', tg_op, tg_table_name using errcode = '42501';
end $$;
create trigger audit_checkpoints_append_only before update or delete on audit_checkpoints
  for each row execute function cn_audit_append_only();
create trigger platform_audit_checkpoints_append_only before update or delete on platform_audit_checkpoints
  for each row execute function cn_audit_append_only();
create trigger audit_checkpoints_no_truncate before truncate on audit_checkpoints
  for each statement execute function cn_audit_append_only();
create trigger platform_audit_checkpoints_no_truncate before truncate on platform_audit_checkpoints
  for each statement execute function cn_audit_append_only();

-- Retention. The purge is a function owned by the nologin role cn_audit_purge, the one role
-- the trigger lets delete events. The database itself holds the rules, whoever calls it:
-- only sealed events, only up to a signed checkpoint (so the rest still verifies), and only
-- events older than the tenant's retention, which is never under 90 days.
alter table tenant_settings add column audit_retention_days integer not null default 365
  check (audit_retention_days between 90 and 3650);
create function cn_audit_purge(p_tenant uuid, p_through bigint) returns bigint
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  keep_days integer;
  newest timestamptz;
  deleted bigint;
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  select greatest(coalesce(max(audit_retention_days), 365), 90) into keep_days from tenant_settings where tenant_id = p_tenant;
  if not exists (select 1 from audit_checkpoints where tenant_id = p_tenant and seq = p_through and reason = 'retention') then
    raise exception 'no signed retention checkpoint at seq %', p_through using errcode = 'CN409';
  end if;
  select max(at) into newest from audit_events where tenant_id = p_tenant and seq <= p_through;
  if newest is not null and newest >= now() - make_interval(days => keep_days) then
    raise exception 'events up to seq % are not all older than % days', p_through, keep_days using errcode = 'CN409';
  end if;
  delete from audit_events where tenant_id = p_tenant and seq <= p_through;
  get diagnostics deleted = row_count;
  return deleted;
end $$;
revoke all on function cn_audit_purge(uuid, bigint) from public;
grant cn_audit_purge to current_user;
grant create on schema public to cn_audit_purge;
alter function cn_audit_purge(uuid, bigint) owner to cn_audit_purge;
revoke create on schema public from cn_audit_purge;
`,
  },
  {
    version: 16,
    name: 'platform-alerts',
    // Alerts no single tenant owns (credential stuffing across tenants): operators see them.
    sql: `
create table platform_security_alerts (
  id uuid primary key default gen_random_uuid(),
  rule text not null,
  severity text not null check (severity in ('low', 'medium', 'high')),
  subject text not null,
  evidence uuid[] not null default '{}',
  details jsonb not null default '{}',
  status text not null default 'open' check (status in ('open', 'acknowledged', 'resolved')),
  at timestamptz not null default date_trunc('milliseconds', now()),
  updated_at timestamptz not null default date_trunc('milliseconds', now())
);
create unique index platform_security_alerts_open_key on platform_security_alerts (rule, subject) where status <> 'resolved';
create table platform_alert_cursor (
  id boolean primary key default true check (id),
  last_seq bigint not null default 0
);
insert into platform_alert_cursor default values;
`,
  },
  {
    version: 17,
    name: 'strict-entry-statement',
    // The strict entry becomes one prepared statement the kernel sends (database.ts): a PL/pgSQL
    // entry cost PostgreSQL a third more per read than the same query run directly. What it
    // still needs from the database: a refusal that aborts the transaction (so the read sent
    // along never runs) and the session's last-seen stamp, run only when it is due (once a
    // minute per session), so the hot path plans no UPDATE or row lock at all.
    sql: `
drop function cn_enter_tenant_strict(uuid, bytea, integer, text[]);
create function cn_refuse_strict_entry() returns boolean language plpgsql volatile security invoker as $$
begin
  raise exception 'the caller may not proceed on the strict path' using errcode = 'CN403';
end $$;
revoke all on function cn_refuse_strict_entry() from public;
-- Skip locked: a concurrent request of the same session is stamping it already.
create function cn_touch_session(p_session uuid) returns boolean language sql volatile security invoker as $$
  update public.sessions s set last_seen_at = now()
  where s.id = (select s2.id from public.sessions s2
                where s2.id = p_session and s2.revoked_at is null and s2.last_seen_at < now() - interval '1 minute'
                for update skip locked)
  returning true
$$;
revoke all on function cn_touch_session(uuid) from public;
`,
  },
  {
    version: 18,
    name: 'membership-signed-out-before',
    // The strict entry reads a tenant's sign-out of a user from the membership row it joins
    // anyway, instead of one more index probe per read. tenant_session_revocations stays the
    // record (it outlives a removed membership); triggers keep the copy equal to it, in the
    // same transaction. The copy is taken AFTER a membership insert, with a fresh snapshot, so
    // a re-added member picks up a sign-out committed while the insert waited on the old row.
    sql: `
alter table memberships add column signed_out_before timestamptz;
update memberships m set signed_out_before = r.revoked_before
  from tenant_session_revocations r where r.tenant_id = m.tenant_id and r.user_id = m.user_id;

create function cn_copy_sign_out_to_membership() returns trigger language plpgsql security invoker as $$
begin
  if tg_op = 'DELETE' then
    update public.memberships set signed_out_before = null where tenant_id = old.tenant_id and user_id = old.user_id;
    return old;
  end if;
  update public.memberships set signed_out_before = new.revoked_before where tenant_id = new.tenant_id and user_id = new.user_id;
  return new;
end $$;
create trigger tenant_session_revocations_copy after insert or update or delete on tenant_session_revocations
  for each row execute function cn_copy_sign_out_to_membership();

create function cn_copy_sign_out_from_revocations() returns trigger language plpgsql security invoker as $$
begin
  update public.memberships m set signed_out_before = r.revoked_before
    from public.tenant_session_revocations r
    where m.tenant_id = new.tenant_id and m.user_id = new.user_id and r.tenant_id = new.tenant_id and r.user_id = new.user_id;
  return null;
end $$;
create trigger memberships_copy_sign_out after insert on memberships
  for each row execute function cn_copy_sign_out_from_revocations();
`,
  },
  {
    version: 19,
    name: 'tenant-keys',
    // Each tenant's keys, stored only wrapped by the key provider's key-encryption key
    // (kek_id names which), versioned: a rotation adds a version, older versions stay until
    // no ciphertext uses them. Deleting the tenant deletes its keys (crypto-shredding).
    sql: `
create table tenant_keys (
  tenant_id uuid not null references tenants (id) on delete cascade,
  purpose text not null check (purpose in ('data', 'index')),
  version integer not null check (version >= 1),
  kek_id text not null check (length(kek_id) between 1 and 200),
  wrapped bytea not null check (length(wrapped) between 33 and 512),
  created_at timestamptz not null default now(),
  primary key (tenant_id, purpose, version)
);
${isolate('tenant_keys')}
`,
  },
  {
    version: 20,
    name: 'contact-field-encryption',
    // A contact's email and phone are stored encrypted by the application (envelope.ts),
    // with a blind index for exact lookups by email. The plaintext columns stay only for rows
    // written before this version, until the backfill at start encrypts them (contacts-crypto.ts).
    sql: `
alter table contacts add column email_ct bytea, add column phone_ct bytea, add column email_index bytea;
alter table contacts add constraint contacts_email_once check (email is null or email_ct is null);
alter table contacts add constraint contacts_phone_once check (phone is null or phone_ct is null);
alter table contacts add constraint contacts_email_index check ((email_ct is null) = (email_index is null));
create index contacts_email_index_idx on contacts (tenant_id, email_index) where email_index is not null;
`,
  },
  {
    version: 21,
    name: 'platform-keys-and-secret-fields',
    // Secrets that belong to no tenant (a user's TOTP seed) are encrypted under the platform's
    // data key, wrapped like a tenant's; an SSO client secret under its tenant's. Plaintext
    // columns stay for rows written before, until the backfill at start encrypts them.
    sql: `
create table platform_keys (
  purpose text not null check (purpose in ('data', 'index')),
  version integer not null check (version >= 1),
  kek_id text not null check (length(kek_id) between 1 and 200),
  wrapped bytea not null check (length(wrapped) between 33 and 512),
  created_at timestamptz not null default now(),
  primary key (purpose, version)
);
alter table users add column totp_secret_ct bytea, add column totp_pending_secret_ct bytea;
alter table users add constraint users_totp_secret_once check (totp_secret is null or totp_secret_ct is null);
alter table users add constraint users_totp_pending_once check (totp_pending_secret is null or totp_pending_secret_ct is null);
alter table tenant_sso add column client_secret_ct bytea;
alter table tenant_sso alter column client_secret drop not null;
alter table tenant_sso add constraint tenant_sso_secret_present check ((client_secret is null) <> (client_secret_ct is null));
`,
  },
  {
    version: 22,
    name: 'tenant-deletion',
    // A deleted tenant keeps only a tombstone row (its audit log still references it and stays
    // verifiable until retention removes it); its data and its keys are gone.
    sql: `alter table tenants add column deleted_at timestamptz;`,
  },
  {
    version: 23,
    name: 'legacy-plaintext-indexes',
    // The backfills at start ask "is any plaintext left?" on every boot: these (nearly always
    // empty) partial indexes answer that without reading the tables.
    sql: `
create index contacts_legacy_plaintext_idx on contacts (tenant_id) where email is not null or phone is not null;
create index users_legacy_totp_idx on users (id) where totp_secret is not null or totp_pending_secret is not null;
`,
  },
  {
    version: 24,
    name: 'restore-tests',
    // Evidence of restore drills (backup verify): append-only for the system role.
    sql: `
create table restore_tests (
  id uuid primary key default gen_random_uuid(),
  backup_id text not null check (length(backup_id) between 1 and 64),
  started_at timestamptz not null,
  finished_at timestamptz not null default now(),
  ok boolean not null,
  restore_ms integer not null check (restore_ms >= 0),
  detail jsonb not null
);
create index restore_tests_started_idx on restore_tests (started_at desc);
`,
  },
  {
    version: 25,
    name: 'member-lifecycle-and-policy',
    // Suspension (an admin or SCIM active:false) keeps the membership but ends its access: the
    // entries report a suspended member with no role, so anything that only looks at the role
    // fails closed. The tenant policy center's settings; the IP allow-list travels with the
    // entries (the guard checks it before anything else runs). Invitations can be revoked.
    sql: `
alter table memberships add column suspended_at timestamptz, add column suspended_by uuid references users (id);
alter table tenant_settings
  add column guest_sharing boolean not null default false,
  add column ai_enabled boolean not null default false,
  add column ip_allowlist cidr[] not null default '{}' check (cardinality(ip_allowlist) <= 100),
  add column allowed_email_domains text[] not null default '{}' check (cardinality(allowed_email_domains) <= 100);
alter table invitations add column revoked_at timestamptz, add column resent_at timestamptz;
-- An owner's deletion request: due after the grace period unless cancelled (all three set, or none).
alter table tenants
  add column deletion_requested_at timestamptz,
  add column deletion_requested_by uuid references users (id),
  add column deletion_due_at timestamptz,
  add constraint tenants_deletion_request_check check ((deletion_due_at is null) = (deletion_requested_at is null));

drop function cn_enter_tenant(uuid, bytea, integer);
create function cn_enter_tenant(p_tenant uuid, p_token_hash bytea, p_platform_idle_minutes integer)
returns table (session_id uuid, user_id uuid, email text, name text, role text, mfa_enabled boolean, require_mfa boolean, idle boolean,
               require_sso boolean, sso_tenant_id uuid, suspended boolean, ip_allowlist text[])
language plpgsql volatile security invoker as $$
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  return query
    with ts as (
      select t.require_mfa, t.require_sso, least(p_platform_idle_minutes, t.session_idle_minutes) as idle_minutes, t.ip_allowlist
      from public.tenant_settings t where t.tenant_id = p_tenant
    ), live as (
      select s.id, s.user_id, s.last_seen_at, s.sso_tenant_id, s.idp_mfa,
        s.last_seen_at < now() - make_interval(mins => coalesce((select ts.idle_minutes from ts), p_platform_idle_minutes)) as idle,
        exists (select 1 from public.tenant_session_revocations r
                where r.tenant_id = p_tenant and r.user_id = s.user_id and s.created_at <= r.revoked_before) as signed_out
      from public.sessions s
      where s.token_hash = p_token_hash and s.revoked_at is null and s.expires_at > now()
    ), due as (
      select s2.id from public.sessions s2 join live on live.id = s2.id
      where not live.idle and not live.signed_out and s2.last_seen_at < now() - interval '1 minute'
      for update of s2 skip locked
    ), stamp as (
      update public.sessions s set last_seen_at = now() from due where s.id = due.id
    )
    select live.id, u.id, u.email, u.name, case when m.suspended_at is null then m.role end,
      -- A second factor: our TOTP, or this tenant's IdP saying it asked for more than one.
      u.mfa_enabled or (live.sso_tenant_id = p_tenant and live.idp_mfa),
      coalesce((select ts.require_mfa from ts), false), live.idle,
      coalesce((select ts.require_sso from ts), false), live.sso_tenant_id,
      m.suspended_at is not null,
      coalesce((select ts.ip_allowlist::text[] from ts), '{}')
    from live
    join public.users u on u.id = live.user_id
    left join public.memberships m on m.tenant_id = p_tenant and m.user_id = live.user_id
    -- A session signed out of this tenant (by an admin, or with a removal or suspension) no
    -- longer counts here: unauthenticated while the membership is active, but it still learns
    -- that the membership is gone (404) or suspended (403) on its very next request.
    where not (live.signed_out and m.user_id is not null and m.suspended_at is null);
end $$;
revoke all on function cn_enter_tenant(uuid, bytea, integer) from public;

drop function cn_enter_tenant_key(uuid, bytea);
create function cn_enter_tenant_key(p_tenant uuid, p_key_hash bytea)
returns table (key_id uuid, key_role text, creator_id uuid, creator_email text, creator_name text, creator_role text, ip_allowlist text[])
language plpgsql volatile security invoker as $$
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  -- SKIP LOCKED: a request never queues behind another request's stamp of the same key.
  update public.api_keys k set last_used_at = now()
    where (k.tenant_id, k.id) in (
      select k2.tenant_id, k2.id from public.api_keys k2
      where k2.tenant_id = p_tenant and k2.key_hash = p_key_hash and k2.revoked_at is null
        and (k2.expires_at is null or k2.expires_at > now())
        and (k2.last_used_at is null or k2.last_used_at < now() - interval '1 minute')
      for update skip locked);
  return query
    select k.id, k.role, u.id, u.email, u.name, case when m.suspended_at is null then m.role end,
      coalesce((select t.ip_allowlist::text[] from public.tenant_settings t where t.tenant_id = p_tenant), '{}')
    from public.api_keys k
    join public.users u on u.id = k.created_by
    left join public.memberships m on m.tenant_id = k.tenant_id and m.user_id = k.created_by
    where k.tenant_id = p_tenant and k.key_hash = p_key_hash and k.revoked_at is null
      and (k.expires_at is null or k.expires_at > now());
end $$;
revoke all on function cn_enter_tenant_key(uuid, bytea) from public;
`,
  },
  {
    version: 26,
    name: 'integrations-and-webhooks',
    // Integrations with their third-party credential (field-encrypted, a last-4 hint beside
    // it) and outbound webhooks (signing secret field-encrypted), with a per-delivery log.
    // The app role manages integrations and webhooks and reads the log; the system role (the
    // delivery worker) queues, claims and records attempts.
    sql: `
create table integrations (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  provider text not null check (length(provider) between 1 and 100),
  credential bytea not null,
  credential_hint text not null check (length(credential_hint) <= 8),
  credential_rotated_at timestamptz not null default date_trunc('milliseconds', now()),
  created_by uuid not null references users (id),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, id)
);
${isolate('integrations')}

create table webhooks (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  -- url: shown to admins (origin and the last characters only: some receivers' URLs are
  -- themselves secrets); url_ct: the whole URL, field-encrypted, read only to deliver.
  url text not null check (length(url) between 8 and 300),
  url_ct bytea not null,
  event_types text[] not null check (cardinality(event_types) between 1 and 50),
  secret bytea not null,
  enabled boolean not null default true,
  created_by uuid not null references users (id),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, id)
);
${isolate('webhooks')}

create table webhook_deliveries (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  webhook_id uuid not null,
  event_id uuid not null,
  action text not null,
  status text not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null default now(),
  last_status integer,
  last_error text check (length(last_error) <= 500),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  delivered_at timestamptz,
  primary key (tenant_id, id),
  unique (tenant_id, webhook_id, event_id),
  foreign key (tenant_id, webhook_id) references webhooks (tenant_id, id) on delete cascade
);
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at) where status = 'pending';
create index webhook_deliveries_log_idx on webhook_deliveries (tenant_id, webhook_id, created_at desc, id desc);
${isolate('webhook_deliveries')}

create table webhook_cursors (
  tenant_id uuid not null references tenants (id) on delete cascade,
  last_seq bigint not null default 0,
  primary key (tenant_id)
);
${isolate('webhook_cursors')}
`,
  },
  {
    version: 27,
    name: 'access-reviews',
    // Review campaigns and their entries (a snapshot of who could reach the tenant, with each
    // decision and its outcome), kept as evidence; one open campaign per tenant. The tenant's
    // policy for unanswered entries and how often a review is due.
    sql: `
create table access_reviews (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  status text not null default 'open' check (status in ('open', 'completed')),
  unanswered_action text not null check (unanswered_action in ('revoke', 'flag')),
  deadline timestamptz not null,
  created_by uuid not null references users (id),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  completed_at timestamptz,
  completed_by uuid references users (id),
  summary jsonb not null default '{}',
  primary key (tenant_id, id)
);
create unique index access_reviews_one_open on access_reviews (tenant_id) where status = 'open';
${isolate('access_reviews')}

create table access_review_entries (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  review_id uuid not null,
  position integer not null check (position >= 0),
  subject_kind text not null check (subject_kind in ('user', 'apikey')),
  subject_id uuid not null,
  name text not null,
  email text,
  role text not null,
  mfa_enabled boolean,
  sso boolean,
  last_active_at timestamptz,
  decision text check (decision in ('keep', 'revoke')),
  decided_by uuid references users (id),
  decided_at timestamptz,
  note text check (length(note) <= 1000),
  outcome text check (outcome in ('kept', 'revoked', 'flagged', 'skipped')),
  primary key (tenant_id, id),
  unique (tenant_id, review_id, position),
  foreign key (tenant_id, review_id) references access_reviews (tenant_id, id) on delete cascade
);
${isolate('access_review_entries')}

alter table tenant_settings
  add column access_review_unanswered text not null default 'flag' check (access_review_unanswered in ('flag', 'revoke')),
  add column access_review_interval_days integer not null default 90 check (access_review_interval_days between 7 and 730);
`,
  },
  {
    version: 28,
    name: 'scim',
    // SCIM provisioning: tokens that belong to the tenant (not to their creator) and the SCIM
    // User resources. A resource is linked to a user (user_id) when its address's domain is one
    // the tenant verified, or once the invited person accepts; until then it is pending, with
    // an invitation. The SCIM id of a linked resource is the user's id.
    sql: `
create table scim_tokens (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  token_hash bytea not null,
  created_by uuid not null references users (id),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  last_used_at timestamptz,
  primary key (tenant_id, id),
  unique (tenant_id, token_hash)
);
${isolate('scim_tokens')}

create table scim_users (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  user_name text not null check (length(user_name) between 3 and 254),
  external_id text check (length(external_id) <= 200),
  given_name text check (length(given_name) <= 200),
  family_name text check (length(family_name) <= 200),
  display_name text check (length(display_name) <= 200),
  active boolean not null default true,
  user_id uuid references users (id) on delete cascade,
  invitation_id uuid,
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  updated_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, id),
  unique (tenant_id, user_name),
  unique (tenant_id, user_id)
);
${isolate('scim_users')}

alter table tenant_settings add column scim_default_role text not null default 'member' check (scim_default_role in ('admin', 'member', 'viewer', 'guest'));
`,
  },
  {
    version: 29,
    name: 'scim_groups',
    // SCIM Groups, pushed by the tenant's IdP, and the role an admin maps each one to (never
    // owner). Members are SCIM User ids (a linked member's id is the user's id); no foreign key,
    // since a member who joined without SCIM has no scim_users row.
    sql: `
create table scim_groups (
  tenant_id uuid not null references tenants (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  display_name text not null check (length(display_name) between 1 and 200),
  external_id text check (length(external_id) <= 200),
  role text check (role in ('admin', 'member', 'viewer', 'guest')),
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  updated_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, id)
);
create unique index scim_groups_name_key on scim_groups (tenant_id, lower(display_name));
${isolate('scim_groups')}

create table scim_group_members (
  tenant_id uuid not null,
  group_id uuid not null,
  member_id uuid not null,
  primary key (tenant_id, group_id, member_id),
  foreign key (tenant_id, group_id) references scim_groups (tenant_id, id) on delete cascade
);
create index scim_group_members_member_idx on scim_group_members (tenant_id, member_id);
${isolate('scim_group_members')}
`,
  },
  {
    version: 30,
    name: 'audit-seals',
    // Sealing becomes an insert: an event's place in its chain (seq, hash, the JCS metadata) goes
    // to audit_seals instead of an UPDATE of the event. The UPDATE could never be a HOT update
    // (seq was in four indexes), so each seal wrote a new row version and four index entries
    // and left a dead version for vacuum; an insert into a narrow table costs a third of that.
    // Events are now never updated by anyone. audit_log is the sealed log readers see.
    sql: `
alter table audit_events disable trigger audit_events_append_only;

create table audit_seals (
  tenant_id uuid not null,
  seq bigint not null check (seq > 0),
  position bigint not null,
  -- Copies of the event's action and target, so filtered reads walk one index in seq order;
  -- verification checks they still equal the event's own.
  action text not null,
  target_type text,
  target_id text,
  hash bytea not null check (length(hash) = 32),
  canonical_metadata text not null,
  sealed_at timestamptz not null default date_trunc('milliseconds', now()),
  primary key (tenant_id, seq)
);
-- An event is sealed at most once.
create unique index audit_seals_position_key on audit_seals (position);
create index audit_seals_action_idx on audit_seals (tenant_id, action, seq);
create index audit_seals_target_idx on audit_seals (tenant_id, target_type, target_id, seq) where target_id is not null;
${isolate('audit_seals')}

insert into audit_seals (tenant_id, seq, position, action, target_type, target_id, hash, canonical_metadata, sealed_at)
  select tenant_id, seq, position, action, target_type, target_id, hash, coalesce(canonical_metadata, metadata::text), sealed_at
  from audit_events where seq is not null;

-- Every event at or below this position is sealed: the sealer looks for unsealed events above
-- it only. It moves up only past positions no running transaction can still commit (sealer.ts).
create table audit_seal_watermark (
  id boolean primary key default true check (id),
  position bigint not null default 0
);
insert into audit_seal_watermark (position)
  select coalesce((select min(position) - 1 from audit_events where seq is null), (select max(position) from audit_events), 0);

drop index audit_events_seq_key;
drop index audit_events_unsealed_idx;
drop index audit_events_action_idx;
drop index audit_events_target_idx;
alter table audit_events drop constraint audit_events_sealed_check;
alter table audit_events drop column seq, drop column hash, drop column sealed_at, drop column canonical_metadata;
create unique index audit_events_position_key on audit_events (position);
-- The transaction id first, then the position: whoever holds a position has an xid the sealer's
-- snapshot can see running (the watermark's proof). CASE fixes that order of evaluation.
alter table audit_events alter column position set default (case when pg_current_xact_id() is not null then nextval('audit_event_position') end);
alter table audit_events enable trigger audit_events_append_only;

create view audit_log with (security_invoker = true) as
  select s.tenant_id, s.seq, e.id, e.at, e.actor_type, e.actor_id, e.actor_email, e.action, e.target_type, e.target_id,
    e.outcome, e.ip, e.user_agent, e.request_id, e.metadata, e.position, s.hash, s.sealed_at, s.canonical_metadata,
    s.action as sealed_action, s.target_type as sealed_target_type, s.target_id as sealed_target_id
  from audit_seals s join audit_events e on e.tenant_id = s.tenant_id and e.position = s.position;

create or replace function cn_audit_append_only() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' and current_user = 'cn_audit_purge' and tg_table_name in ('audit_events', 'audit_seals') then
    return old;
  end if;
  -- Sealing a platform event: the system role gives an unsealed event its seq and hash, once.
  -- Its column grant (seq, hash, sealed_at, canonical_metadata) keeps every other column as it was.
  if tg_op = 'UPDATE' and current_user = 'cn_system' and tg_table_name = 'platform_audit_events' then
    if old.seq is null and old.hash is null and new.seq is not null and new.hash is not null then
      return new;
    end if;
  end if;
  raise exception 'audit events are append-only: % on % refused', tg_op, tg_table_name using errcode = '42501';
end $$;
create trigger audit_seals_append_only before update or delete on audit_seals
  for each row execute function cn_audit_append_only();
create trigger audit_seals_no_truncate before truncate on audit_seals
  for each statement execute function cn_audit_append_only();

create or replace function cn_audit_purge(p_tenant uuid, p_through bigint) returns bigint
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  keep_days integer;
  newest timestamptz;
  deleted bigint;
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  select greatest(coalesce(max(audit_retention_days), 365), 90) into keep_days from tenant_settings where tenant_id = p_tenant;
  if not exists (select 1 from audit_checkpoints where tenant_id = p_tenant and seq = p_through and reason = 'retention') then
    raise exception 'no signed retention checkpoint at seq %', p_through using errcode = 'CN409';
  end if;
  select max(e.at) into newest from audit_seals s join audit_events e on e.tenant_id = s.tenant_id and e.position = s.position
    where s.tenant_id = p_tenant and s.seq <= p_through;
  if newest is not null and newest >= now() - make_interval(days => keep_days) then
    raise exception 'events up to seq % are not all older than % days', p_through, keep_days using errcode = 'CN409';
  end if;
  delete from audit_events e using audit_seals s
    where s.tenant_id = p_tenant and s.seq <= p_through and e.tenant_id = s.tenant_id and e.position = s.position;
  get diagnostics deleted = row_count;
  delete from audit_seals where tenant_id = p_tenant and seq <= p_through;
  return deleted;
end $$;
`,
  },
  {
    version: 31,
    name: 'audit-log-serves-sealed-metadata',
    // A sealed event's metadata is read from its seal: the JCS text its hash covers, parsed.
    // What a reader sees is then the hashed text by construction, and verification no longer
    // has to parse that text into jsonb for every event to compare it with a second copy (the
    // event row's, which only the sealer reads now). Same columns, in the same order.
    sql: `
create or replace view audit_log with (security_invoker = true) as
  select s.tenant_id, s.seq, e.id, e.at, e.actor_type, e.actor_id, e.actor_email, e.action, e.target_type, e.target_id,
    e.outcome, e.ip, e.user_agent, e.request_id, s.canonical_metadata::jsonb as metadata, e.position, s.hash, s.sealed_at, s.canonical_metadata,
    s.action as sealed_action, s.target_type as sealed_target_type, s.target_id as sealed_target_id
  from audit_seals s join audit_events e on e.tenant_id = s.tenant_id and e.position = s.position;
`,
  },
  {
    version: 32,
    name: 'audit-chain-in-database',
    // The sealer hashes tenant chains in the database (sealer.ts): the writer now stores each
    // event's metadata as its JCS text (RFC 8785, which the database cannot produce from jsonb),
    // and the chain's SHA-256 runs as a window aggregate over each tenant's batch. Events
    // written before this keep their jsonb metadata and no text: legacy_through is the
    // highest of them still unsealed, and until the watermark passes it the sealer seals in
    // JavaScript as before. The new column is NOT NULL for every new event (NOT VALID: the
    // old rows are not checked); the jsonb column is no longer written.
    sql: `
alter table audit_events add column canonical_metadata text;
alter table audit_events alter column canonical_metadata set default '{}';
alter table audit_events add constraint audit_events_canonical_metadata_check check (canonical_metadata is not null) not valid;
alter table audit_events alter column metadata drop not null, alter column metadata drop default;

alter table audit_seal_watermark add column legacy_through bigint not null default 0;
update audit_seal_watermark set legacy_through = coalesce(
  (select max(e.position) from audit_events e where not exists (select 1 from audit_seals s where s.position = e.position)), 0);

-- hash(n) = SHA-256(hash(n-1) || canonical(n)), from the head's hash: run over a tenant's
-- events in order as a window aggregate (rows unbounded preceding), it gives each its link.
create function cn_audit_chain_step(state bytea, head bytea, canonical bytea) returns bytea
language plpgsql immutable parallel safe as $$
begin
  return sha256(coalesce(state, head) || canonical);
end $$;
create aggregate cn_audit_chain(bytea, bytea) (sfunc = cn_audit_chain_step, stype = bytea);
`,
  },
  {
    version: 33,
    name: 'audit-insert-cost',
    // What recording an event costs in PostgreSQL, measured (perf, pgbench): the foreign key
    // to tenants ran a query and took a KEY SHARE lock on the tenant's row in every audited
    // transaction, about a tenth of the insert; the two CHECK constraints re-parsed their
    // stored expressions on every insert, another tenth; the random event id put each index
    // entry on a random page. Now:
    // - the tenant must exist, checked by a restrictive policy (an index lookup, no lock), and
    //   no role but the owner with the trigger off can delete a tenant (tenants are tombstoned:
    //   deletion.ts), so no event can lose its tenant;
    // - actor_type and outcome are domains, whose checks PostgreSQL keeps compiled;
    // - new event ids are UUIDv7 (RFC 9562: time first, 74 random bits), so a tenant's entries
    //   in the primary key go to the end of its part of the index.
    sql: `
alter table audit_events drop constraint audit_events_tenant_id_fkey;
create policy tenant_exists on audit_events as restrictive for insert
  with check (exists (select 1 from tenants t where t.id = audit_events.tenant_id));

create function cn_refuse_tenant_delete() returns trigger language plpgsql as $$
begin
  raise exception 'tenants are never deleted (their audit logs outlive them): mark them deleted instead' using errcode = '42501';
end $$;
create trigger tenants_never_deleted before delete on tenants for each row execute function cn_refuse_tenant_delete();
create trigger tenants_no_truncate before truncate on tenants for each statement execute function cn_refuse_tenant_delete();

create domain cn_audit_actor_type as text check (value in ('user', 'apikey', 'system', 'scim', 'anonymous'));
create domain cn_audit_outcome as text check (value in ('success', 'denied', 'failure'));
drop view audit_log;
alter table audit_events drop constraint audit_events_actor_type_check, drop constraint audit_events_outcome_check;
alter table audit_events alter column actor_type type cn_audit_actor_type, alter column outcome type cn_audit_outcome;
alter table platform_audit_events drop constraint platform_audit_events_actor_type_check, drop constraint platform_audit_events_outcome_check;
alter table platform_audit_events alter column actor_type type cn_audit_actor_type, alter column outcome type cn_audit_outcome;
create view audit_log with (security_invoker = true) as
  select s.tenant_id, s.seq, e.id, e.at, e.actor_type, e.actor_id, e.actor_email, e.action, e.target_type, e.target_id,
    e.outcome, e.ip, e.user_agent, e.request_id, s.canonical_metadata::jsonb as metadata, e.position, s.hash, s.sealed_at, s.canonical_metadata,
    s.action as sealed_action, s.target_type as sealed_target_type, s.target_id as sealed_target_id
  from audit_seals s join audit_events e on e.tenant_id = s.tenant_id and e.position = s.position;

create function cn_uuid_v7() returns uuid language sql volatile parallel safe as $$
  select encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
    placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3) from 1 for 6), 52, 1), 53, 1), 'hex')::uuid
$$;
alter table audit_events alter column id set default cn_uuid_v7();
`,
  },
];

/**
 * The columns of an audit event its writer may give. Not position (the sealer's watermark
 * relies on the column default taking the transaction id first), id or at (the database's).
 */
const EVENT_CONTENT = 'tenant_id, actor_type, actor_id, actor_email, action, target_type, target_id, outcome, ip, user_agent, request_id';
const AUDIT_EVENT_INSERT = `insert (${EVENT_CONTENT}, canonical_metadata)`;
/**
 * The same for the platform log, whose events are sealed in place: not seq, hash, sealed_at
 * or canonical_metadata either (a writer could otherwise hand in an event already "sealed",
 * which would stop the sealer at a duplicate seq), nor a chosen id, time or position.
 */
const PLATFORM_EVENT_INSERT = `insert (${EVENT_CONTENT}, metadata)`;

/** Functions the application role may execute (re-granted on every migrate). */
export const APP_FUNCTIONS: readonly string[] = [
  'cn_enter_tenant(uuid, bytea, integer)',
  'cn_refuse_strict_entry()',
  'cn_touch_session(uuid)',
  'cn_enter_tenant_key(uuid, bytea)',
];

/**
 * What cn_system may do where it differs from the default (select, insert, update, delete):
 * it appends to audit logs like everyone else and only seals them (a column grant the
 * trigger narrows further); checkpoints are append-only.
 */
export const SYSTEM_GRANTS: Readonly<Record<string, readonly string[]>> = {
  audit_events: [`select, ${AUDIT_EVENT_INSERT}`],
  audit_seals: ['select, insert'],
  audit_log: ['select'],
  audit_seal_watermark: ['select, update'],
  platform_audit_events: [`select, ${PLATFORM_EVENT_INSERT}`, 'update (seq, hash, sealed_at, canonical_metadata)'],
  audit_checkpoints: ['select, insert'],
  platform_audit_checkpoints: ['select, insert'],
  audit_chain_heads: ['select, insert, update'],
  platform_audit_head: ['select, update'],
  restore_tests: ['select, insert'],
};

/** The purge function's owner reads what it checks and deletes old events, nothing else. */
export const PURGE_GRANTS: Readonly<Record<string, string>> = {
  audit_events: 'select, delete',
  audit_seals: 'select, delete',
  audit_checkpoints: 'select',
  tenant_settings: 'select',
};

/**
 * Table privileges of the application role, re-applied on every migrate so they can never
 * drift. Audit tables are INSERT + SELECT only (DESIGN.md invariant 6).
 */
export const APP_GRANTS: Readonly<Record<string, string>> = {
  tenants: 'select, insert, update, delete',
  users: 'select, insert, update, delete',
  sessions: 'select, insert, update, delete',
  memberships: 'select, insert, update, delete',
  invitations: 'select, insert, update, delete',
  accounts: 'select, insert, update, delete',
  contacts: 'select, insert, update, delete',
  audit_events: `select, ${AUDIT_EVENT_INSERT}`,
  audit_seals: 'select',
  audit_log: 'select',
  audit_seal_watermark: 'select',
  platform_audit_events: `select, ${PLATFORM_EVENT_INSERT}`,
  audit_chain_heads: 'select',
  platform_audit_head: 'select',
  audit_checkpoints: 'select',
  platform_audit_checkpoints: 'select',
  api_keys: 'select, insert, update',
  tenant_settings: 'select, insert, update',
  tenant_session_revocations: 'select, insert, update',
  auth_throttles: 'select, insert, update, delete',
  mfa_recovery_codes: 'select, insert, update, delete',
  mfa_challenges: 'select, insert, update, delete',
  auth_failures: 'select, insert, delete',
  user_tokens: 'select, insert, update, delete',
  tenant_sso: 'select, insert, update, delete',
  tenant_domains: 'select, insert, update, delete',
  sso_identities: 'select, insert, delete',
  sso_logins: 'select, insert, update, delete',
  sso_break_glass: 'select, insert',
  security_alerts: 'select, insert, update',
  integrations: 'select, insert, update, delete',
  webhooks: 'select, insert, update, delete',
  webhook_deliveries: 'select',
  webhook_cursors: 'select, insert',
  access_reviews: 'select, insert, update',
  access_review_entries: 'select, insert, update',
  scim_tokens: 'select, insert, update, delete',
  scim_users: 'select, insert, update, delete',
  scim_groups: 'select, insert, update, delete',
  scim_group_members: 'select, insert, delete',
  alert_cursors: 'select, insert, update',
  platform_security_alerts: 'select',
  platform_alert_cursor: 'select',
  tenant_keys: 'select, insert',
  platform_keys: 'select, insert',
  // Operators' evidence, no tenant data; requests never write it.
  restore_tests: 'select',
};
