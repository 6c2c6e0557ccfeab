//! Plain types: identifiers, records as callers see them, time, and secrets.

mod clock;
mod email;
mod event;
mod input;
mod mail;
mod reset;
pub(crate) mod secret;

use serde::{Deserialize, Serialize};

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use email::Email;
pub use event::{Event, EventKind, EventOutcome};
pub use input::InputError;
pub use mail::{
    DueMail, DueMails, Lang, MAX_MAIL_SHOP_BYTES, MailFate, MailQueueSummary, MailRequest,
    MailRetry, QueuedMail,
};
pub use reset::{
    IssuedReset, MAX_METADATA_BYTES, MAX_OUTSTANDING_RESETS, MAX_REFERENCE_BYTES, RESET_ID_LEN,
    RESET_THROTTLE, Reset, ResetDetails, ResetToken, ResetUpdate, ValidToken, parse_reset_id,
    parse_token,
};
pub(crate) use reset::{check_reference, metadata_text};
pub use secret::{AppKey, CustomerKey, Password, StoreSecret};

/// A customer's number, assigned by the store or given on import: 1 to
/// [`MAX_BOX_ID`].
pub type BoxId = u64;

/// The largest box_id: 2^53 − 1, the largest integer every JSON client
/// (JavaScript's numbers included) reads exactly.
pub const MAX_BOX_ID: BoxId = (1 << 53) - 1;

/// Refuses a box_id outside 1 to [`MAX_BOX_ID`].
pub(crate) fn check_box_id(box_id: BoxId) -> Result<(), InputError> {
    if (1..=MAX_BOX_ID).contains(&box_id) {
        Ok(())
    } else {
        Err(InputError::BoxIdOutOfRange { max: MAX_BOX_ID })
    }
}

/// A partner app's number (`user_code`).
pub type UserCode = u32;

/// The flags a customer record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerFlags {
    /// The account is active.
    pub is_active: bool,
    /// The account is enabled.
    pub is_enable: bool,
    /// A business account.
    pub is_business: bool,
    /// A VIP account.
    pub is_vip: bool,
    /// The customer must change the password before logging in.
    pub must_change_password: bool,
}

impl Default for CustomerFlags {
    fn default() -> Self {
        Self {
            is_active: true,
            is_enable: true,
            is_business: false,
            is_vip: false,
            must_change_password: false,
        }
    }
}

/// A change to some of a customer's flags; `None` leaves a flag as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagsUpdate {
    /// New `is_active`.
    pub is_active: Option<bool>,
    /// New `is_enable`.
    pub is_enable: Option<bool>,
    /// New `is_business`.
    pub is_business: Option<bool>,
    /// New `is_vip`.
    pub is_vip: Option<bool>,
    /// New `must_change_password`.
    pub must_change_password: Option<bool>,
}

impl FlagsUpdate {
    pub(crate) fn apply(&self, flags: &mut CustomerFlags) {
        let set = |dst: &mut bool, v: Option<bool>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut flags.is_active, self.is_active);
        set(&mut flags.is_enable, self.is_enable);
        set(&mut flags.is_business, self.is_business);
        set(&mut flags.is_vip, self.is_vip);
        set(&mut flags.must_change_password, self.must_change_password);
    }
}

/// A customer as the store hands it out: no hash, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Customer {
    /// The customer's number.
    pub box_id: BoxId,
    /// The email as given at registration (compare with [`Email::normalized`]).
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Flags.
    pub flags: CustomerFlags,
    /// When the customer enrolled.
    pub enrolment_date: Timestamp,
    /// When the account was activated, if it was.
    pub activation_date: Option<Timestamp>,
    /// Increases with every credential change (password, email/key).
    pub credential_version: u64,
    /// Consecutive failed logins since the last success or lock.
    pub failed_logins: u32,
    /// Locked until this time, if locked.
    pub locked_until: Option<Timestamp>,
    /// Record creation time.
    pub created_at: Timestamp,
    /// Last change time.
    pub updated_at: Timestamp,
}

/// A new customer for [`crate::Store::register`].
#[derive(Debug)]
pub struct NewCustomer {
    /// Email address (must be unique).
    pub email: String,
    /// First name (up to 255 bytes).
    pub first_name: String,
    /// Last name (up to 255 bytes).
    pub last_name: String,
    /// Password, checked against the policy.
    pub password: Password,
    /// Flags.
    pub flags: CustomerFlags,
    /// Enrolment date; `None` means now.
    pub enrolment_date: Option<Timestamp>,
    /// Activation date; `None` means not activated... unless `is_active`, then now.
    pub activation_date: Option<Timestamp>,
}

impl NewCustomer {
    /// A customer with default flags and dates.
    pub fn new(
        email: impl Into<String>,
        first_name: impl Into<String>,
        last_name: impl Into<String>,
        password: Password,
    ) -> Self {
        Self {
            email: email.into(),
            first_name: first_name.into(),
            last_name: last_name.into(),
            password,
            flags: CustomerFlags::default(),
            enrolment_date: None,
            activation_date: None,
        }
    }
}

/// A customer brought over from another system, for [`crate::Store::import_customer`].
#[derive(Debug)]
pub struct ImportedCustomer {
    /// The customer's number in the old system.
    pub box_id: BoxId,
    /// Email address (must be unique).
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// The old system's hash: an argon2 PHC string or bcrypt `$2a$/$2b$/$2y$`.
    pub password_hash: String,
    /// The customer's existing key; `None` generates one.
    pub key: Option<CustomerKey>,
    /// Flags.
    pub flags: CustomerFlags,
    /// Enrolment date; `None` means now.
    pub enrolment_date: Option<Timestamp>,
    /// Activation date.
    pub activation_date: Option<Timestamp>,
}

/// A successful login: the customer and their key, to hand back to the client.
#[derive(Debug)]
pub struct Login {
    /// The customer after the login's bookkeeping.
    pub customer: Customer,
    /// The customer's key.
    pub key: CustomerKey,
}

/// A partner app.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct App {
    /// The app's number.
    pub user_code: UserCode,
    /// Optional shop key for path-scoped formats (such as `acme12aa`).
    pub shop_key: Option<String>,
    /// Display name.
    pub name: String,
    /// Whether the app may authenticate.
    pub enabled: bool,
    /// Creation time.
    pub created_at: Timestamp,
}
