/** Invitations, shared by the invitation routes and SCIM: one lifetime, one token shape, one mail. */
import { generateToken } from '../../kernel/crypto/tokens.ts';
import { runAfterCommit, type Tx } from '../../kernel/db/database.ts';
import type { Mailer } from '../../kernel/mail/mailer.ts';

export const INVITATION_TTL_MS = 7 * 24 * 3_600_000;

/**
 * Invitation tokens name their tenant so acceptance can open that tenant's context directly
 * (no cross-tenant lookup); the secret part is 256 random bits, stored hashed.
 */
export const newInvitationToken = (tenantId: string) => `${tenantId}.${generateToken()}`;

export const invitationExpiry = () => new Date(Date.now() + INVITATION_TTL_MS);

function invitationMail(appUrl: string, to: string, tenantName: string, inviter: string, token: string, expiresAt: Date) {
  return {
    to,
    subject: `You are invited to ${tenantName.slice(0, 100)} on CustomerNode`,
    // The token rides in the fragment: browsers never send it to a server or in a Referer.
    text: `${inviter} invited you to join ${tenantName} on CustomerNode.\n\nAccept (sign in or sign up with this address first):\n\n${appUrl}/invitations/accept#token=${token}\n\nThe link works once, until ${expiresAt.toISOString()}. If you did not expect this invitation, ignore this mail.\n`,
  };
}

/**
 * Mails the link once the transaction has committed (never a link that does not work), in the
 * background: a slow or failing mail server never blocks the caller; the failure is logged.
 */
export async function mailInvitation(
  options: { mailer: Mailer; appUrl: string },
  tx: Tx,
  invitation: { tenantId: string; inviter: string; email: string; token: string; expiresAt: Date },
  log: Parameters<Mailer['sendInBackground']>[1],
): Promise<void> {
  const tenant = await tx.selectFrom('tenants').select('name').where('id', '=', invitation.tenantId).executeTakeFirstOrThrow();
  const mail = invitationMail(options.appUrl, invitation.email, tenant.name, invitation.inviter, invitation.token, invitation.expiresAt);
  runAfterCommit(() => options.mailer.sendInBackground(mail, log));
}
