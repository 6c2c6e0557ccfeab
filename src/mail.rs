//! The reset mail: what the SkyERP flow hands to the host's mailer, the
//! [`Mailer`] trait the host implements, and a recording test double.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use zeroize::Zeroizing;

use crate::model::{ResetToken, Timestamp, parse_token};

/// A password-reset mail to send. The token (and the link, which contains
/// it) are secrets: `Debug` shows neither.
pub struct ResetMail {
    to: String,
    token: ResetToken,
    reset_id: String,
    expires_at: Timestamp,
    link: Zeroizing<String>,
}

impl ResetMail {
    /// A mail to `to` with the token, the reset's id and expiry, and the link
    /// the customer follows.
    pub fn new(
        to: impl Into<String>,
        token: ResetToken,
        reset_id: impl Into<String>,
        expires_at: Timestamp,
        link: impl Into<String>,
    ) -> Self {
        Self {
            to: to.into(),
            token,
            reset_id: reset_id.into(),
            expires_at,
            link: Zeroizing::new(link.into()),
        }
    }

    /// The recipient: the account's email.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// The token (read it with [`ResetToken::expose_secret`]).
    pub fn token(&self) -> &ResetToken {
        &self.token
    }

    /// The reset's id.
    pub fn reset_id(&self) -> &str {
        &self.reset_id
    }

    /// When the token stops working.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// The link to put in the mail. It contains the token: treat it as secret.
    pub fn link_exposing_token(&self) -> &str {
        &self.link
    }

    /// A copy (the token is re-parsed from its text, which cannot fail).
    fn duplicate(&self) -> Option<Self> {
        let token = parse_token(self.token.expose_secret().as_bytes()).ok()?;
        Some(Self {
            to: self.to.clone(),
            token,
            reset_id: self.reset_id.clone(),
            expires_at: self.expires_at,
            link: self.link.clone(),
        })
    }
}

impl fmt::Debug for ResetMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResetMail")
            .field("to", &self.to)
            .field("token", &"[redacted]")
            .field("reset_id", &self.reset_id)
            .field("expires_at", &self.expires_at)
            .field("link", &"[redacted]")
            .finish()
    }
}

/// Why a mail could not be sent. Its text must not contain a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailError(String);

impl MailError {
    /// An error with a description (no token, no link).
    pub fn new(description: impl Into<String>) -> Self {
        Self(description.into())
    }
}

impl fmt::Display for MailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the reset mail could not be sent: {}", self.0)
    }
}

impl std::error::Error for MailError {}

/// Sends reset mails. Called outside any store transaction; a failure makes
/// the caller revoke the reset and report that the mail was not sent.
pub trait Mailer: Send + Sync {
    /// Sends one mail.
    fn send(&self, mail: &ResetMail) -> Result<(), MailError>;
}

impl<M: Mailer + ?Sized> Mailer for Arc<M> {
    fn send(&self, mail: &ResetMail) -> Result<(), MailError> {
        (**self).send(mail)
    }
}

/// A test double: records every mail, and fails on demand. Clones share the
/// same record, so a test keeps one clone and gives the other away.
#[derive(Debug, Clone, Default)]
pub struct RecordingMailer {
    state: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Default)]
struct Recorded {
    mails: Vec<ResetMail>,
    failing: bool,
}

impl RecordingMailer {
    /// A mailer that accepts every mail.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A test that panicked while holding the lock left whole data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, every send fails (`true`) or succeeds (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Copies of the mails sent so far (failed sends are not recorded).
    pub fn mails(&self) -> Vec<ResetMail> {
        self.lock()
            .mails
            .iter()
            .filter_map(ResetMail::duplicate)
            .collect()
    }

    /// The last mail sent, if any.
    pub fn last(&self) -> Option<ResetMail> {
        self.lock().mails.last().and_then(ResetMail::duplicate)
    }

    /// How many mails were sent.
    pub fn count(&self) -> usize {
        self.lock().mails.len()
    }
}

impl Mailer for RecordingMailer {
    fn send(&self, mail: &ResetMail) -> Result<(), MailError> {
        let mut state = self.lock();
        if state.failing {
            return Err(MailError::new("the test mailer is set to fail"));
        }
        let copy = mail
            .duplicate()
            .ok_or_else(|| MailError::new("unreadable token"))?;
        state.mails.push(copy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token_and_link() {
        let token = ResetToken::generate().unwrap();
        let text = token.expose_secret().to_owned();
        let mail = ResetMail::new(
            "johndoe@email.com",
            token,
            "xYZkjABcde",
            Timestamp(0),
            format!("http://x/reset/{text}"),
        );
        let d = format!("{mail:?} {mail:#?}");
        assert!(!d.contains(&text), "{d}");
        assert!(d.contains("xYZkjABcde") && d.contains("johndoe@email.com"));
    }

    #[test]
    fn records_and_fails_on_demand() {
        let m = RecordingMailer::new();
        let keep = m.clone();
        let mail = ResetMail::new(
            "a@b.co",
            ResetToken::generate().unwrap(),
            "id",
            Timestamp(1),
            "l",
        );
        m.send(&mail).unwrap();
        assert_eq!(keep.count(), 1);
        assert_eq!(
            keep.last().unwrap().token().expose_secret(),
            mail.token().expose_secret()
        );
        keep.set_failing(true);
        assert!(m.send(&mail).is_err());
        assert_eq!(keep.count(), 1);
    }
}
