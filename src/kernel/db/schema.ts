/** Kysely table types. Tenant-owned tables start with tenant_id; global ones are in GLOBAL_TABLES. */
import type { ColumnType, Generated } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type CreatedAt = ColumnType<Date, Date | string | undefined, never>;

export interface TenantsTable {
  id: Generated<string>;
  name: string;
  created_at: CreatedAt;
  /** Set when the tenant was deleted: only this tombstone and its audit log remain. */
  deleted_at: ColumnType<Date | null, null | undefined, Date | string>;
  deletion_requested_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  deletion_requested_by: string | null;
  deletion_due_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface UsersTable {
  id: Generated<string>;
  email: string;
  name: string;
  password_hash: string;
  mfa_enabled: Generated<boolean>;
  /** Plaintext of seeds stored before migration 21, until the backfill encrypts them; written only as null. */
  totp_secret: ColumnType<string | null, null | undefined, null>;
  totp_pending_secret: ColumnType<string | null, null | undefined, null>;
  /** TOTP seeds encrypted under the platform data key (kernel/crypto/envelope.ts). */
  totp_secret_ct: ColumnType<Buffer | null, Buffer | null | undefined, Buffer | null>;
  totp_pending_secret_ct: ColumnType<Buffer | null, Buffer | null | undefined, Buffer | null>;
  totp_last_step: ColumnType<string | number | null, number | null | undefined, number | null>;
  created_at: CreatedAt;
  last_login_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  email_verified_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface SessionsTable {
  id: Generated<string>;
  token_hash: Buffer;
  user_id: string;
  created_at: CreatedAt;
  last_seen_at: Timestamp;
  expires_at: Timestamp;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  authenticated_at: Timestamp;
  sso_tenant_id: ColumnType<string | null, string | null | undefined, string | null>;
  idp_mfa: Generated<boolean>;
  ip: string | null;
  user_agent: string | null;
}

export type Role = 'owner' | 'admin' | 'member' | 'viewer' | 'guest';

export interface TenantKeysTable {
  tenant_id: string;
  purpose: 'data' | 'index';
  version: number;
  kek_id: string;
  wrapped: Buffer;
  created_at: CreatedAt;
}

/** A recorded restore drill (backup verify): the operators' evidence that backups restore. */
export interface RestoreTestsTable {
  id: Generated<string>;
  backup_id: string;
  started_at: Date;
  finished_at: Generated<Date>;
  ok: boolean;
  restore_ms: number;
  detail: unknown;
}

export interface PlatformKeysTable {
  purpose: 'data' | 'index';
  version: number;
  kek_id: string;
  wrapped: Buffer;
  created_at: CreatedAt;
}

export interface MembershipsTable {
  tenant_id: string;
  user_id: string;
  role: Role;
  created_at: CreatedAt;
  /** A copy of tenant_session_revocations.revoked_before, kept by triggers (migration 18). */
  signed_out_before: ColumnType<Date | null, never, never>;
  suspended_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  suspended_by: string | null;
}

export interface InvitationsTable {
  tenant_id: string;
  id: Generated<string>;
  email: string;
  role: Role;
  token_hash: Buffer;
  invited_by: string;
  created_at: CreatedAt;
  expires_at: Timestamp;
  accepted_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  accepted_by: string | null;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  resent_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface AccountsTable {
  tenant_id: string;
  id: Generated<string>;
  name: string;
  domain: string | null;
  description: string | null;
  created_at: CreatedAt;
  updated_at: Timestamp;
}

export interface ContactsTable {
  tenant_id: string;
  id: Generated<string>;
  account_id: string;
  name: string;
  /** Plaintext of rows written before migration 20, until the backfill encrypts them; new rows: null. */
  email: ColumnType<string | null, null | undefined, null>;
  phone: ColumnType<string | null, null | undefined, null>;
  /** Field ciphertexts (kernel/crypto/envelope.ts) and the email's blind index. */
  email_ct: Buffer | null;
  phone_ct: Buffer | null;
  email_index: Buffer | null;
  created_at: CreatedAt;
  updated_at: Timestamp;
}

export type ActorType = 'user' | 'apikey' | 'system' | 'scim' | 'anonymous';
export type Outcome = 'success' | 'denied' | 'failure';

interface AuditColumns {
  id: Generated<string>;
  at: CreatedAt;
  actor_type: ActorType;
  actor_id: string | null;
  actor_email: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  outcome: Outcome;
  ip: string | null;
  user_agent: string | null;
  request_id: string | null;
}

/** Sealing columns of a platform event: null until the sealer gives it its place in the chain. */
interface SealColumns {
  position: Generated<string>;
  seq: ColumnType<string | null, never, never>;
  hash: ColumnType<Buffer | null, never, never>;
  sealed_at: ColumnType<Date | null, never, never>;
  canonical_metadata: ColumnType<string | null, never, never>;
}

/** A tenant's events as written: never updated; their seals live in audit_seals. */
export interface AuditEventsTable extends AuditColumns {
  tenant_id: string;
  position: Generated<string>;
  /** The metadata as JCS text (RFC 8785): what the sealer hashes and the seal keeps. */
  canonical_metadata: ColumnType<string | null, string | undefined, never>;
  /** Only events written before migration 32 have this (and no canonical_metadata). */
  metadata: ColumnType<Record<string, unknown> | null, never, never>;
}

/** An event's place in its tenant's chain, written once by the sealer. */
export interface AuditSealsTable {
  tenant_id: string;
  seq: ColumnType<string, number | string, never>;
  position: ColumnType<string, string, never>;
  action: ColumnType<string, string, never>;
  target_type: ColumnType<string | null, string | null, never>;
  target_id: ColumnType<string | null, string | null, never>;
  hash: ColumnType<Buffer, Buffer, never>;
  canonical_metadata: ColumnType<string, string, never>;
  sealed_at: ColumnType<Date, Date | undefined, never>;
}

/**
 * The sealed log (a view: events joined with their seals), what every reader of a tenant's
 * log reads. sealed_action/sealed_target_*: the seal's copies, which the filter indexes cover.
 */
export interface AuditLogView {
  tenant_id: ColumnType<string, never, never>;
  seq: ColumnType<string, never, never>;
  id: ColumnType<string, never, never>;
  at: ColumnType<Date, never, never>;
  actor_type: ColumnType<ActorType, never, never>;
  actor_id: ColumnType<string | null, never, never>;
  actor_email: ColumnType<string | null, never, never>;
  action: ColumnType<string, never, never>;
  target_type: ColumnType<string | null, never, never>;
  target_id: ColumnType<string | null, never, never>;
  outcome: ColumnType<Outcome, never, never>;
  ip: ColumnType<string | null, never, never>;
  user_agent: ColumnType<string | null, never, never>;
  request_id: ColumnType<string | null, never, never>;
  metadata: ColumnType<Record<string, unknown>, never, never>;
  position: ColumnType<string, never, never>;
  hash: ColumnType<Buffer, never, never>;
  sealed_at: ColumnType<Date, never, never>;
  canonical_metadata: ColumnType<string, never, never>;
  sealed_action: ColumnType<string, never, never>;
  sealed_target_type: ColumnType<string | null, never, never>;
  sealed_target_id: ColumnType<string | null, never, never>;
}

export interface AuditSealWatermarkTable {
  id: Generated<boolean>;
  position: ColumnType<string, never, string>;
  /** The highest event written before migration 32 that was unsealed then (0: none). */
  legacy_through: ColumnType<string, never, never>;
}

export interface PlatformAuditEventsTable extends AuditColumns, SealColumns {
  tenant_id: string | null;
  metadata: ColumnType<Record<string, unknown>, string, never>;
}

export interface AuditChainHeadsTable {
  tenant_id: string;
  seq: ColumnType<string, number | string | undefined, number | string>;
  hash: ColumnType<Buffer, Buffer | undefined, Buffer>;
  sealed_at: ColumnType<Date | null, Date | undefined, Date>;
}

export interface PlatformAuditHeadTable {
  id: Generated<boolean>;
  seq: ColumnType<string, never, number | string>;
  hash: ColumnType<Buffer, never, Buffer>;
  sealed_at: ColumnType<Date | null, never, Date>;
}

export interface AuditCheckpointColumns {
  seq: ColumnType<string, number | string, never>;
  hash: ColumnType<Buffer, Buffer, never>;
  at: ColumnType<Date, Date | undefined, never>;
  key_id: ColumnType<string, string, never>;
  signature: ColumnType<Buffer, Buffer, never>;
  reason: ColumnType<'interval' | 'retention', 'interval' | 'retention', never>;
}

export interface AuditCheckpointsTable extends AuditCheckpointColumns {
  tenant_id: string;
}

export interface AuthThrottlesTable {
  key: string;
  failures: number;
  window_started_at: Timestamp;
  locked_until: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  lockouts: number;
  updated_at: Timestamp;
}

export interface AuthFailuresTable {
  ip: string;
  account_key: string;
  at: CreatedAt;
}

export interface ApiKeysTable {
  tenant_id: string;
  id: Generated<string>;
  name: string;
  role: Role;
  key_hash: Buffer;
  created_by: string;
  created_at: CreatedAt;
  expires_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  last_used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface MfaRecoveryCodesTable {
  user_id: string;
  code_hash: Buffer;
  used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface MfaChallengesTable {
  id: Generated<string>;
  token_hash: Buffer;
  user_id: string;
  created_at: CreatedAt;
  expires_at: Timestamp;
  consumed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface TenantSettingsTable {
  tenant_id: string;
  require_mfa: Generated<boolean>;
  require_sso: Generated<boolean>;
  session_idle_minutes: Generated<number>;
  audit_retention_days: Generated<number>;
  guest_sharing: Generated<boolean>;
  ai_enabled: Generated<boolean>;
  /** cidr[]: read as text (ip_allowlist::text[]), written as a text array literal cast by the column. */
  ip_allowlist: ColumnType<string[], string[] | undefined, string[]>;
  allowed_email_domains: ColumnType<string[], string[] | undefined, string[]>;
  access_review_unanswered: ColumnType<'flag' | 'revoke', 'flag' | 'revoke' | undefined, 'flag' | 'revoke'>;
  access_review_interval_days: Generated<number>;
  scim_default_role: Generated<Role>;
  updated_at: Generated<Date>;
}

export interface IntegrationsTable {
  tenant_id: string;
  id: Generated<string>;
  name: string;
  provider: string;
  /** Field ciphertext (envelope.ts) of the third party's credential. */
  credential: Buffer;
  credential_hint: string;
  credential_rotated_at: ColumnType<Date, Date | string | undefined, Date | string>;
  created_by: string;
  created_at: CreatedAt;
}

export interface WebhooksTable {
  tenant_id: string;
  id: Generated<string>;
  /** The URL as admins see it (origin and last characters); url_ct holds it whole, encrypted. */
  url: string;
  url_ct: Buffer;
  event_types: string[];
  /** Field ciphertext of the signing secret. */
  secret: Buffer;
  enabled: Generated<boolean>;
  created_by: string;
  created_at: CreatedAt;
}

export interface WebhookDeliveriesTable {
  tenant_id: string;
  id: Generated<string>;
  webhook_id: string;
  event_id: string;
  action: string;
  status: ColumnType<'pending' | 'succeeded' | 'failed', 'pending' | 'succeeded' | 'failed' | undefined, 'pending' | 'succeeded' | 'failed'>;
  attempts: Generated<number>;
  next_attempt_at: ColumnType<Date, Date | string | undefined, Date | string>;
  last_status: number | null;
  last_error: string | null;
  created_at: CreatedAt;
  delivered_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface AccessReviewsTable {
  tenant_id: string;
  id: Generated<string>;
  name: string;
  status: ColumnType<'open' | 'completed', 'open' | 'completed' | undefined, 'open' | 'completed'>;
  unanswered_action: 'revoke' | 'flag';
  deadline: ColumnType<Date, Date | string, Date | string>;
  created_by: string;
  created_at: CreatedAt;
  completed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  completed_by: string | null;
  summary: ColumnType<unknown, string | undefined, string>;
}

export interface AccessReviewEntriesTable {
  tenant_id: string;
  id: Generated<string>;
  review_id: string;
  position: number;
  subject_kind: 'user' | 'apikey';
  subject_id: string;
  name: string;
  email: string | null;
  role: string;
  mfa_enabled: boolean | null;
  sso: boolean | null;
  last_active_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  decision: 'keep' | 'revoke' | null;
  decided_by: string | null;
  decided_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  note: string | null;
  outcome: 'kept' | 'revoked' | 'flagged' | 'skipped' | null;
}

export interface ScimTokensTable {
  tenant_id: string;
  id: Generated<string>;
  name: string;
  token_hash: Buffer;
  created_by: string;
  created_at: CreatedAt;
  last_used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ScimUsersTable {
  tenant_id: string;
  id: Generated<string>;
  user_name: string;
  external_id: string | null;
  given_name: string | null;
  family_name: string | null;
  display_name: string | null;
  active: Generated<boolean>;
  user_id: string | null;
  invitation_id: string | null;
  created_at: CreatedAt;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

export interface ScimGroupsTable {
  tenant_id: string;
  id: Generated<string>;
  display_name: string;
  external_id: string | null;
  role: Role | null;
  created_at: CreatedAt;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

export interface ScimGroupMembersTable {
  tenant_id: string;
  group_id: string;
  member_id: string;
}

export interface WebhookCursorsTable {
  tenant_id: string;
  last_seq: ColumnType<number, number | undefined, number>;
}

export interface TenantSessionRevocationsTable {
  tenant_id: string;
  user_id: string;
  revoked_before: Date;
}

export interface UserTokensTable {
  token_hash: Buffer;
  user_id: string;
  purpose: 'password_reset' | 'email_verification';
  email: string;
  created_at: CreatedAt;
  expires_at: Date;
  used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface TenantSsoTable {
  tenant_id: string;
  issuer: string;
  client_id: string;
  /** Plaintext of secrets stored before migration 21, until the backfill encrypts them; written only as null. */
  client_secret: ColumnType<string | null, null | undefined, null>;
  /** The client secret encrypted under the tenant's data key. */
  client_secret_ct: ColumnType<Buffer | null, Buffer | null | undefined, Buffer | null>;
  allowed_domains: string[];
  default_role: 'admin' | 'member' | 'viewer';
  jit_provisioning: boolean;
  enabled: boolean;
  updated_at: Generated<Date>;
}

export interface TenantDomainsTable {
  tenant_id: string;
  id: Generated<string>;
  domain: string;
  challenge: string;
  created_at: CreatedAt;
  verified_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface SsoIdentitiesTable {
  issuer: string;
  subject: string;
  user_id: string;
  tenant_id: string;
  created_at: CreatedAt;
}

export interface SsoLoginsTable {
  tenant_id: string;
  state_hash: Buffer;
  code_verifier: string;
  nonce: string;
  created_at: CreatedAt;
  expires_at: Date;
  consumed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface SsoBreakGlassTable {
  tenant_id: string;
  session_id: string;
  at: CreatedAt;
}

/** An alert, a tenant's or the platform's (same shape; tenant alerts carry their tenant). */
export interface AlertColumns {
  id: Generated<string>;
  rule: string;
  severity: 'low' | 'medium' | 'high';
  subject: string;
  evidence: ColumnType<string[], string[] | undefined, string[]>;
  details: ColumnType<Record<string, unknown>, string | undefined, string>;
  status: ColumnType<'open' | 'acknowledged' | 'resolved', 'open' | 'acknowledged' | 'resolved' | undefined, 'open' | 'acknowledged' | 'resolved'>;
  at: CreatedAt;
  updated_at: Timestamp;
}

export interface SecurityAlertsTable extends AlertColumns {
  tenant_id: string;
}

export interface AlertCursorsTable {
  tenant_id: string;
  last_seq: ColumnType<string | number, number | undefined, number>;
}


export interface PlatformAlertCursorTable {
  id: Generated<boolean>;
  last_seq: ColumnType<string, never, number>;
}

export interface DB {
  platform_security_alerts: AlertColumns;
  platform_alert_cursor: PlatformAlertCursorTable;
  security_alerts: SecurityAlertsTable;
  alert_cursors: AlertCursorsTable;
  tenant_sso: TenantSsoTable;
  tenant_domains: TenantDomainsTable;
  sso_identities: SsoIdentitiesTable;
  sso_logins: SsoLoginsTable;
  sso_break_glass: SsoBreakGlassTable;
  user_tokens: UserTokensTable;
  tenant_session_revocations: TenantSessionRevocationsTable;
  tenant_settings: TenantSettingsTable;
  integrations: IntegrationsTable;
  webhooks: WebhooksTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_cursors: WebhookCursorsTable;
  access_reviews: AccessReviewsTable;
  access_review_entries: AccessReviewEntriesTable;
  scim_tokens: ScimTokensTable;
  scim_users: ScimUsersTable;
  scim_groups: ScimGroupsTable;
  scim_group_members: ScimGroupMembersTable;
  mfa_recovery_codes: MfaRecoveryCodesTable;
  mfa_challenges: MfaChallengesTable;
  api_keys: ApiKeysTable;
  auth_throttles: AuthThrottlesTable;
  auth_failures: AuthFailuresTable;
  tenants: TenantsTable;
  users: UsersTable;
  sessions: SessionsTable;
  memberships: MembershipsTable;
  tenant_keys: TenantKeysTable;
  restore_tests: RestoreTestsTable;
  platform_keys: PlatformKeysTable;
  invitations: InvitationsTable;
  accounts: AccountsTable;
  contacts: ContactsTable;
  audit_events: AuditEventsTable;
  audit_seals: AuditSealsTable;
  audit_log: AuditLogView;
  audit_seal_watermark: AuditSealWatermarkTable;
  audit_chain_heads: AuditChainHeadsTable;
  platform_audit_head: PlatformAuditHeadTable;
  audit_checkpoints: AuditCheckpointsTable;
  platform_audit_checkpoints: AuditCheckpointColumns;
  platform_audit_events: PlatformAuditEventsTable;
}
