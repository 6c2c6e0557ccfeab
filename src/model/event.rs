use serde::{Deserialize, Serialize};

use super::{BoxId, Timestamp, UserCode};

/// One entry of the event log. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, increasing by one per entry.
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// Whether it was granted or refused.
    pub outcome: EventOutcome,
    /// The customer concerned, if any.
    pub box_id: Option<BoxId>,
    /// The app concerned, if any.
    pub user_code: Option<UserCode>,
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// A customer registered.
    CustomerRegistered,
    /// A customer was imported.
    CustomerImported,
    /// A customer's flags changed.
    FlagsChanged,
    /// A password changed (update, reset or signed change).
    PasswordChanged,
    /// A legacy or outdated hash was replaced at login.
    PasswordRehashed,
    /// The email changed and the key rotated.
    EmailChanged,
    /// A successful login cleared earlier failures.
    LoginSucceeded,
    /// A login failed.
    LoginFailed,
    /// A login failure locked the account.
    AccountLocked,
    /// An app was created.
    AppCreated,
    /// An app was imported with a given key.
    AppImported,
    /// An app was enabled.
    AppEnabled,
    /// An app was disabled.
    AppDisabled,
    /// A reset token was issued.
    ResetIssued,
    /// A reset token was consumed.
    ResetConsumed,
    /// A reset was revoked.
    ResetRevoked,
    /// A reset's reference data changed.
    ResetUpdated,
    /// Expired or used resets were purged.
    ResetPurged,
    /// A queued reset mail was handed to the mailer (and left the queue).
    MailDelivered,
    /// A queued reset mail failed for good (a permanent failure, such as an
    /// SMTP 5xx answer): dropped, and its reset revoked.
    MailBounced,
    /// A queued reset mail was dropped undelivered: its token expired.
    MailExpired,
}

/// Whether the event's action was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventOutcome {
    /// Done.
    Granted,
    /// Refused (a failed login, say).
    Refused,
}
