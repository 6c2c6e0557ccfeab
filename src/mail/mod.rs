//! Reset mail delivery (SPEC §12).
//!
//! The SkyERP POST queues its reset mail in the store, in the transaction
//! that issues the reset ([`crate::Store::request_reset_by_mail`]); it never
//! waits for a mail to leave. A [`Courier`] delivers the queue: it hands
//! each due mail to a [`Mailer`] (the host's own transport, the
//! [`SmtpMailer`] over SMTP, or a test double such as [`RecordingMailer`]),
//! deletes it once delivered, retries temporary failures with jittered
//! exponential backoff until the token expires, and drops permanent ones.
//! [`template`] renders the mail (Spanish or English, text and HTML).

mod courier;
#[cfg(feature = "smtp")]
mod smtp;
pub mod template;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use zeroize::Zeroizing;

pub use crate::model::Lang;
use crate::model::{ResetToken, Timestamp, parse_token};
pub use courier::{Courier, CourierHandle, CourierSettings, DeliveryReport};
#[cfg(feature = "smtp")]
pub use smtp::{SmtpError, SmtpMailer, SmtpSettings};

/// The link a reset mail carries: with `{token}` (and optionally `{shop}`)
/// in `base`, those are substituted; otherwise the link is
/// `<base>/api/v1/<shop>/customers/reset-password/<token>` (the SkyERP
/// route that checks and consumes the token). The link contains the token:
/// treat it as secret.
pub fn reset_link(base: &str, shop: &str, token: &str) -> String {
    if base.contains("{token}") {
        base.replace("{shop}", shop).replace("{token}", token)
    } else {
        format!(
            "{}/api/v1/{shop}/customers/reset-password/{token}",
            base.trim_end_matches('/')
        )
    }
}

/// A password-reset mail to send. The token (and the link, which contains
/// it) are secrets: `Debug` shows neither.
pub struct ResetMail {
    to: String,
    token: ResetToken,
    reset_id: String,
    expires_at: Timestamp,
    link: Zeroizing<String>,
    lang: Lang,
}

impl ResetMail {
    /// A mail to `to` with the token, the reset's id and expiry, and the link
    /// the customer follows; in Spanish unless [`ResetMail::with_lang`] says
    /// otherwise.
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
            lang: Lang::default(),
        }
    }

    /// The same mail in `lang`.
    pub fn with_lang(mut self, lang: Lang) -> Self {
        self.lang = lang;
        self
    }

    /// The mail's language.
    pub fn lang(&self) -> Lang {
        self.lang
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
            lang: self.lang,
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
            .field("lang", &self.lang)
            .finish()
    }
}

/// Why a mail could not be sent. Its text must not contain a secret (it
/// is logged, and kept with the queued mail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailError {
    description: String,
    permanent: bool,
}

impl MailError {
    /// A temporary failure (the courier tries again later, until the token
    /// expires), with a description (no token, no link).
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            permanent: false,
        }
    }

    /// A permanent failure (an SMTP 5xx answer, an address the transport
    /// cannot take): the courier drops the mail and revokes its reset.
    pub fn permanent(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            permanent: true,
        }
    }

    /// Whether trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl fmt::Display for MailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.permanent {
            "permanently"
        } else {
            "for now"
        };
        write!(
            f,
            "the reset mail could not be sent ({kind}): {}",
            self.description
        )
    }
}

impl std::error::Error for MailError {}

/// Sends reset mails: the host's plug for its own transport.
///
/// A [`Courier`] calls `send` on one of its worker threads (at most
/// [`CourierSettings::concurrency`] at once), never on a request's path and
/// never inside a store transaction, so `send` may block on the network.
/// [`Courier::deliver_due`] calls it on the calling thread instead. `Ok`
/// means the mail was handed over for good: the courier then deletes it
/// from the queue. An error keeps it queued for another try
/// ([`MailError::new`]) or drops it ([`MailError::permanent`]). A mail
/// handed over just before the process died, and not yet deleted, is sent
/// again after a restart: delivery is at least once.
pub trait Mailer: Send + Sync {
    /// Sends one mail.
    fn send(&self, mail: &ResetMail) -> Result<(), MailError>;
}

impl<M: Mailer + ?Sized> Mailer for Arc<M> {
    fn send(&self, mail: &ResetMail) -> Result<(), MailError> {
        (**self).send(mail)
    }
}

impl<M: Mailer + ?Sized> Mailer for Box<M> {
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
    failure: Option<MailError>,
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

    /// From now on, every send fails for now (`true`) or succeeds (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.lock().failure = failing.then(|| MailError::new("the test mailer is set to fail"));
    }

    /// From now on, every send fails with `failure` (`None`: succeeds).
    pub fn fail_with(&self, failure: Option<MailError>) {
        self.lock().failure = failure;
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
        if let Some(e) = &state.failure {
            return Err(e.clone());
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
        assert!(!m.send(&mail).unwrap_err().is_permanent());
        keep.fail_with(Some(MailError::permanent("550 no such user")));
        let e = m.send(&mail).unwrap_err();
        assert!(e.is_permanent() && e.to_string().contains("550 no such user"));
        assert_eq!(keep.count(), 1);
    }

    #[test]
    fn links() {
        assert_eq!(
            reset_link("http://skyerp.local/", "acme12aa", "TOK"),
            "http://skyerp.local/api/v1/acme12aa/customers/reset-password/TOK"
        );
        assert_eq!(
            reset_link(
                "https://shop.example/{shop}/reset?t={token}",
                "acme12aa",
                "TOK"
            ),
            "https://shop.example/acme12aa/reset?t=TOK"
        );
    }
}
