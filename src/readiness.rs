//! Readiness (SPEC §14): whether an instance should get traffic, for a
//! load balancer's checks (`GET /health/ready` on the admin port,
//! [`crate::http::admin`]).
//!
//! Not ready when the store cannot take writes ([`Store::health`]: the
//! failed state of SPEC §11; a storage backend that can be unreachable
//! reports it there too), or when the reset mail queue is stuck: a mail
//! has been due for longer than a threshold without being delivered, which
//! means that no courier runs or that it is wedged (a restart helps). An
//! SMTP server that refuses or is down is not this instance's fault: its
//! mails wait for a retry (not due meanwhile), and the metrics show it
//! (`credstore_mail_deliveries_total{outcome="retried"}`, the queue's
//! depth and age).

use std::fmt;
use std::time::Duration;

use crate::Health;
use crate::ops::Store;

/// A mail due for longer than this means a stuck queue, by default.
pub const DEFAULT_MAIL_STUCK_AFTER: Duration = Duration::from_secs(10 * 60);

/// The readiness check over a store. A cheap `Clone`.
#[derive(Debug, Clone)]
pub struct Readiness {
    store: Store,
    mail_stuck_after: Option<Duration>,
}

impl Readiness {
    /// Checks `store`, the mail queue with [`DEFAULT_MAIL_STUCK_AFTER`].
    pub fn new(store: Store) -> Self {
        Self {
            store,
            mail_stuck_after: Some(DEFAULT_MAIL_STUCK_AFTER),
        }
    }

    /// A mail due for longer than `after` makes the instance not ready;
    /// `None` leaves the mail queue out (a host that runs no
    /// [`crate::mail::Courier`] and drains the queue elsewhere).
    pub fn mail_stuck_after(mut self, after: Option<Duration>) -> Self {
        self.mail_stuck_after = after;
        self
    }

    /// The store checked.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `Ok` when the instance can serve; else every reason why not. Blocks
    /// briefly (it reads the mail queue): call it off the async executor.
    pub fn check(&self) -> Result<(), NotReady> {
        let mut reasons = Vec::new();
        // Any state but writable (today: the failed state; a backend that
        // can be unreachable adds its own) takes the instance out.
        match self.store.health() {
            Health::Writable => {}
            other => reasons.push(("store", one_line(&other.to_string()))),
        }
        if let Some(limit) = self.mail_stuck_after {
            match crate::metrics::mail_overdue(&self.store) {
                Ok(overdue) if overdue > limit => reasons.push((
                    "mail_queue",
                    format!(
                        "a reset mail has been due for {} s without being delivered \
                         (threshold {} s): is the courier running?",
                        overdue.as_secs(),
                        limit.as_secs()
                    ),
                )),
                Ok(_) => {}
                Err(e) => reasons.push((
                    "mail_queue",
                    one_line(&format!("cannot read the mail queue: {e}")),
                )),
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(NotReady { reasons })
        }
    }
}

/// Why an instance is not ready: one reason per failed check, each a line
/// without a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    reasons: Vec<(&'static str, String)>,
}

impl NotReady {
    /// `(check, reason)` pairs: check `store` or `mail_queue`.
    pub fn reasons(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.reasons.iter().map(|(c, r)| (*c, r.as_str()))
    }

    /// The answer's body, one line of JSON:
    /// `{"status":"unavailable","reason":"store: …","errors":{"store":"…"}}`.
    pub fn to_json(&self) -> String {
        let errors: serde_json::Map<String, serde_json::Value> = self
            .reasons
            .iter()
            .map(|(c, r)| ((*c).to_owned(), serde_json::Value::from(r.as_str())))
            .collect();
        serde_json::json!({
            "status": "unavailable",
            "reason": self.to_string(),
            "errors": errors,
        })
        .to_string()
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (check, reason)) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{check}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NotReady {}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Lang, MailRequest};
    use crate::{Config, ManualClock, NewCustomer, Password, ResetDetails, StoreSecret, Timestamp};
    use std::sync::Arc;

    #[test]
    fn a_mail_due_too_long_makes_the_instance_not_ready_until_it_is_taken() {
        let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
        let store = Store::temporary(
            &StoreSecret::from_bytes([3; 32]),
            Config::for_tests().with_clock(clock.clone()),
        )
        .unwrap();
        let r = Readiness::new(store.clone()).mail_stuck_after(Some(Duration::from_secs(60)));
        assert_eq!(r.check(), Ok(()));
        store
            .register(NewCustomer::new(
                "ready@example.com",
                "R",
                "D",
                Password::new("ready-password-1").unwrap(),
            ))
            .unwrap();
        store
            .request_reset_by_mail(
                "ready@example.com",
                ResetDetails::default(),
                &MailRequest {
                    lang: Lang::En,
                    shop: "shop".into(),
                },
            )
            .unwrap();
        clock.advance(Duration::from_secs(59));
        assert_eq!(r.check(), Ok(()), "due for 59 s: not stuck yet");
        clock.advance(Duration::from_secs(2));
        let e = r.check().unwrap_err();
        let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(json["status"], "unavailable");
        assert!(
            json["errors"]["mail_queue"]
                .as_str()
                .unwrap()
                .contains("due for 61 s"),
            "{json}"
        );
        assert!(!e.to_json().contains('\n'));
        assert!(!e.to_json().contains("ready@example.com"));
        // Without the mail check, the same store is ready.
        assert_eq!(r.clone().mail_stuck_after(None).check(), Ok(()));
        // Taken and delivered: ready again.
        let due = store.mail_due(10).unwrap();
        assert_eq!(due.mails.len(), 1);
        store.mail_delivered(&due.mails[0].entry.reset_id).unwrap();
        assert_eq!(r.check(), Ok(()));
    }
}
