//! Queued reset mails as callers see them (SPEC §12): the language of a
//! mail, what an entry of the queue shows (never its token), and a mail due
//! for delivery (with its token, unsealed for the mailer).

use std::fmt;

use super::{BoxId, ResetToken, Timestamp};

/// The language of a reset mail (and of a SkyERP answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Lang {
    /// Spanish, locale `"es"` (the default).
    #[default]
    Es,
    /// English, locale `"en"`.
    En,
}

impl Lang {
    /// The locale tag: `"es"` or `"en"`.
    pub fn locale(self) -> &'static str {
        match self {
            Lang::Es => "es",
            Lang::En => "en",
        }
    }

    /// The language of a locale tag (`"en"`, `"en-GB"`); Spanish for
    /// anything else.
    pub fn from_locale(tag: &str) -> Self {
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("en") {
            Lang::En
        } else {
            Lang::Es
        }
    }
}

/// What a reset mail needs besides the reset itself: its language, and the
/// shop whose link it carries ([`crate::Store::request_reset_by_mail`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailRequest {
    /// The mail's language.
    pub lang: Lang,
    /// The shop key the reset link names (the SkyERP path's `{shopKey}`).
    pub shop: String,
}

/// Longest shop key a queued mail keeps, in bytes.
pub const MAX_MAIL_SHOP_BYTES: usize = 255;

/// An entry of the mail queue, as listed: everything but the token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueuedMail {
    /// The reset the mail carries the token of (the entry's key).
    pub reset_id: String,
    /// The customer.
    pub box_id: BoxId,
    /// The recipient: the account's stored email when the reset was issued.
    pub to: String,
    /// The mail's language.
    pub lang: Lang,
    /// The shop the link names.
    pub shop: String,
    /// When the mail was queued (the reset issued).
    pub created_at: Timestamp,
    /// When the token expires: an undelivered mail is dropped then.
    pub expires_at: Timestamp,
    /// Delivery attempts that failed so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Timestamp,
    /// Why the last attempt failed (the mailer's words, never a secret).
    pub last_error: Option<String>,
}

/// A mail due for delivery ([`crate::Store::mail_due`]): the entry and its
/// token, unsealed and checked against the reset's digest. `Debug` shows
/// no token.
pub struct DueMail {
    /// The queue entry.
    pub entry: QueuedMail,
    /// The token to send (read it with [`ResetToken::expose_secret`]).
    pub token: ResetToken,
}

impl fmt::Debug for DueMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DueMail")
            .field("entry", &self.entry)
            .field("token", &self.token)
            .finish()
    }
}

/// The mails due now ([`crate::Store::mail_due`]) and when the next one
/// that is not due yet will be.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct DueMails {
    /// Due now, the longest-waiting first.
    pub mails: Vec<DueMail>,
    /// The earliest `next_attempt_at` among the entries not returned
    /// (not due yet, or beyond the limit); `None` when there are none.
    pub next_due: Option<Timestamp>,
}

/// When a failed mail is tried again ([`crate::Store::mail_failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MailRetry {
    /// A temporary failure: try again at this time (dropped as expired if
    /// the token dies first).
    At(Timestamp),
    /// A permanent failure: drop the mail and revoke its reset.
    Never,
}

/// What became of a mail whose delivery failed ([`crate::Store::mail_failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MailFate {
    /// Kept; the next attempt is due at this time.
    Retry(Timestamp),
    /// Dropped for good (a permanent failure): the reset is revoked and a
    /// `MailBounced` event written.
    Bounced,
    /// Dropped: the token expires before the next attempt would be made
    /// (a `MailExpired` event).
    Expired,
    /// No such entry (delivered, dropped, or its reset gone meanwhile).
    Gone,
}

/// Counts of the mail queue ([`crate::Store::mail_queue_summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MailQueueSummary {
    /// Entries queued.
    pub queued: u64,
    /// Of which due now.
    pub due: u64,
    /// Of which already failed at least once.
    pub retrying: u64,
    /// When the oldest entry was queued.
    pub oldest: Option<Timestamp>,
}
