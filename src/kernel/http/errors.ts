/**
 * One error type with a stable code. The root handler serialises only code, title and
 * the public detail as RFC 9457 problem+json; causes and stacks go to the log only.
 */

export const ERROR_CODES = {
  'validation.failed': { status: 400, title: 'The request is not valid' },
  'request.malformed': { status: 400, title: 'The request body could not be parsed' },
  'request.too_large': { status: 413, title: 'The request body is too large' },
  'request.unsupported_media_type': { status: 415, title: 'Unsupported content type' },
  'auth.unauthenticated': { status: 401, title: 'Authentication required' },
  'auth.invalid_credentials': { status: 401, title: 'Invalid email or password' },
  'auth.mfa_invalid': { status: 401, title: 'Invalid or expired second-factor code' },
  'auth.mfa_not_enrolled': { status: 409, title: 'Start enrollment first' },
  'auth.mfa_already_enabled': { status: 409, title: 'Two-factor authentication is already on' },
  'auth.mfa_required': { status: 403, title: 'This tenant requires two-factor authentication' },
  'auth.session_expired': { status: 401, title: 'The session has expired' },
  'auth.reauth_required': { status: 403, title: 'Confirm your identity again to do this' },
  'auth.weak_password': { status: 400, title: 'The password is too weak' },
  'auth.email_taken': { status: 409, title: 'An account with this email already exists' },
  'auth.token_invalid': { status: 400, title: 'This link is invalid, expired or already used' },
  'auth.signup_closed': { status: 403, title: 'Signup is closed' },
  'auth.account_session_required': { status: 403, title: 'Sign in with your own password to change account-wide settings' },
  'auth.sso_required': { status: 403, title: 'This tenant requires signing in through its single sign-on' },
  'auth.sso_failed': { status: 401, title: 'Single sign-on did not complete' },
  'auth.sso_link_refused': { status: 403, title: 'This identity provider may not sign in to an existing account with this email' },
  'auth.sso_not_member': { status: 403, title: 'You are not a member of this tenant' },
  'sso.not_configured': { status: 409, title: 'Single sign-on is not configured for this tenant' },
  'sso.in_use': { status: 409, title: 'The tenant requires single sign-on; turn that off first' },
  'sso.no_break_glass': { status: 409, title: 'Requiring SSO needs an owner with two-factor authentication (the break-glass login)' },
  'domain.unverified': { status: 409, title: 'The DNS TXT record was not found' },
  'domain.taken': { status: 409, title: 'Another tenant has verified this domain' },
  'csrf.invalid': { status: 403, title: 'Missing or invalid CSRF token' },
  'access.forbidden': { status: 403, title: 'You do not have permission to do this' },
  'access.ip_blocked': { status: 403, title: "This tenant does not accept requests from your network address" },
  'member.suspended': { status: 403, title: 'Your membership in this tenant is suspended' },
  'member.not_suspended': { status: 409, title: 'The member is not suspended' },
  'member.already_suspended': { status: 409, title: 'The member is already suspended' },
  'invitation.domain_not_allowed': { status: 422, title: "The tenant's policy does not allow invitations to this email domain" },
  'invitation.not_pending': { status: 409, title: 'The invitation was already accepted or revoked' },
  'settings.ip_allowlist_excludes_you': { status: 409, title: 'The IP allow-list would lock you out' },
  'integration.url_not_allowed': { status: 422, title: 'The URL is not an allowed destination' },
  'access_review.already_open': { status: 409, title: 'An access review is already open' },
  'access_review.not_open': { status: 409, title: 'The access review is already completed' },
  'tenant.deletion_scheduled': { status: 409, title: "The tenant's deletion is already scheduled" },
  'tenant.deletion_not_scheduled': { status: 409, title: "The tenant's deletion is not scheduled" },
  'member.last_owner': { status: 409, title: 'A tenant must keep at least one owner' },
  'member.already_member': { status: 409, title: 'That user is already a member' },
  'invitation.expired': { status: 410, title: 'The invitation has expired' },
  'account.has_contacts': { status: 409, title: 'The account still has contacts' },
  not_found: { status: 404, title: 'Not found' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  rate_limited: { status: 429, title: 'Too many requests' },
  unavailable: { status: 503, title: 'Service unavailable' },
  internal: { status: 500, title: 'Internal server error' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class AppError extends Error {
  override name = 'AppError';
  readonly code: ErrorCode;
  readonly status: number;
  /** Safe to show to the caller; never includes internals or secrets. */
  readonly publicDetail: string | undefined;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, options: { detail?: string; cause?: unknown; headers?: Record<string, string>; status?: 409 } = {}) {
    super(options.detail ?? ERROR_CODES[code].title, { cause: options.cause });
    this.code = code;
    // API.md gives auth.mfa_required two statuses: 403 on access, 409 when a setting conflicts.
    this.status = options.status ?? ERROR_CODES[code].status;
    this.publicDetail = options.detail;
    this.headers = options.headers ?? {};
  }
}

/** An error in SCIM's format (RFC 7644 3.12), for SCIM clients at /scim/v2. */
export function scimErrorBody(status: number, detail: string, scimType?: string) {
  return { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: String(status), detail, ...(scimType ? { scimType } : {}) };
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  detail?: string;
}

export function toProblem(error: AppError): Problem {
  const problem: Problem = {
    type: `https://customernode.dev/problems/${error.code}`,
    title: ERROR_CODES[error.code].title,
    status: error.status,
    code: error.code,
  };
  if (error.publicDetail !== undefined) problem.detail = error.publicDetail;
  return problem;
}

export const notFound = (): AppError => new AppError('not_found');
