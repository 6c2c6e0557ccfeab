//! credstore: an embeddable credential store.
//!
//! It keeps customer records, (box_id, customer_key) credential pairs, partner
//! app credentials and expiring password-reset tokens in sled. Every password
//! change is one atomic, durable transaction that also appends to an event
//! log. Nothing secret is stored in the clear: passwords are argon2id with a
//! pepper, customer and app keys are sealed under a key derived from the
//! host's [`StoreSecret`], reset tokens are kept only as keyed digests.
//!
//! # Quick start
//!
//! ```
//! use credstore::{Config, NewCustomer, Password, Store, StoreSecret};
//!
//! # fn main() -> Result<(), credstore::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let secret = StoreSecret::generate()?; // keep it outside the data directory
//! // `Config::default()` uses production argon2 parameters; tests use cheap ones.
//! let store = Store::open(dir.path().join("data"), &secret, Config::for_tests())?;
//!
//! let (customer, key) = store.register(NewCustomer::new(
//!     "johndoe@email.com", "John", "Doe", Password::new("pass12345")?,
//! ))?;
//!
//! let login = store.login("johndoe@email.com", &Password::new("pass12345")?)?;
//! assert_eq!(login.customer.box_id, customer.box_id);
//! assert!(login.key.ct_eq(&key));
//!
//! // The Skypostal-style update: box_id + key + current email + new password.
//! store.update_password(customer.box_id, &key, "johndoe@email.com", &Password::new("new-pass-6789")?)?;
//! assert!(store.login("johndoe@email.com", &Password::new("pass12345")?).is_err());
//! assert!(store.login("johndoe@email.com", &Password::new("new-pass-6789")?).is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! # Reset mail
//!
//! [`Store::request_reset_by_mail`] issues a reset and queues its mail in
//! one transaction, the token sealed; a [`mail::Courier`] delivers the queue
//! through a [`Mailer`] (the bundled [`mail::SmtpMailer`] with the `smtp`
//! feature, or the host's own), retrying temporary failures until the token
//! expires. The SkyERP route of the [`Gateway`] uses it.
//!
//! # Layers
//!
//! `model` (plain types and secrets) → `crypto` (hashing, sealing, randomness)
//! → `store` (typed tables, record encoding, transactions, the event log, over
//! a backend: sled behind the store's own write-ahead log) → operations (the
//! methods of [`Store`]). Dependencies point downwards only; `ARCHITECTURE.md`
//! in the repository says where each part and each invariant lives.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
mod async_store;
pub mod codec;
mod crypto;
pub mod demo;
#[cfg(feature = "tokio")]
mod durable;
mod error;
pub mod gateway;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod http;
#[doc(hidden)]
pub mod internal;
pub mod mail;
pub mod metrics;
mod model;
mod ops;
pub mod readiness;
mod store;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_store::AsyncStore;
/// The axum this crate's router is built with (0.8): use it to build the
/// host's router, so that two axum versions never meet.
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use axum;
pub use crypto::change_password_digest;
pub use crypto::{Argon2Params, PasswordHashInfo, PasswordPolicy, PasswordScheme};
pub use error::{
    Credential, Entity, Error, InputError, InternalError, PolicyViolation, Result, StorageError,
};
pub use gateway::{Gateway, GatewaySettings, Headers, Request, Response};
pub use mail::{MailError, Mailer, RecordingMailer, ResetMail};
pub use model::{
    App, AppKey, BoxId, Clock, Customer, CustomerFlags, CustomerKey, Email, Event, EventKind,
    EventOutcome, FlagsUpdate, ImportedCustomer, Login, MAX_BOX_ID, ManualClock, NewCustomer,
    Password, StoreSecret, SystemClock, Timestamp, UserCode,
};
pub use model::{
    DueMail, DueMails, Lang, MAX_MAIL_SHOP_BYTES, MailFate, MailQueueSummary, MailRequest,
    MailRetry, QueuedMail,
};
pub use model::{
    IssuedReset, MAX_METADATA_BYTES, MAX_OUTSTANDING_RESETS, MAX_REFERENCE_BYTES, RESET_ID_LEN,
    RESET_THROTTLE, Reset, ResetDetails, ResetToken, ResetUpdate, ValidToken, parse_reset_id,
    parse_token,
};
pub use ops::{
    Config, DEFAULT_COMMIT_DELAY, FAILURE_MEMORY, LockoutPolicy, MAX_EVENTS_PER_READ, Store,
};
pub use ops::{MIN_SALT, SignedPasswordChange};
pub use store::{
    CompactPages, Compaction, Durability, FailPoint, Health, IntegrityReport, LogStats,
    LogTruncation, Retries,
};
