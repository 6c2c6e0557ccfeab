//! The physical schema, declared once: every tree, the encoding of its keys
//! and the type of its values, as redb declares its tables
//! (`const CUSTOMERS: Table<BoxId, CustomerRecord>`). Operations name a
//! [`Table`] and pass typed keys (`tx.get(&CUSTOMERS, box_id)`); only this
//! module turns them into bytes, and only [`super::encoding`] turns values
//! into bytes.
//!
//! Changing a tree's name, a key's bytes or a value's encoding changes the
//! on-disk format (every backend stores exactly these bytes).

use std::marker::PhantomData;

use super::encoding;
use super::records::{AppRecord, CustomerRecord, GuardRecord, MailRecord, ResetRecord, TokenEntry};
use crate::error::Error;
use crate::model::{BoxId, Event, Timestamp, UserCode};

/// The trees, in a fixed order (backends may index by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TreeId {
    /// The store's identity (magic value, format version, secret
    /// fingerprint; [`super::meta`]) and the backend's own rows (counters).
    Meta,
    /// [`CUSTOMERS`].
    Customers,
    /// [`EMAILS`].
    Emails,
    /// [`APPS`].
    Apps,
    /// [`SHOPS`].
    Shops,
    /// [`EVENTS`].
    Events,
    /// [`RESETS`].
    Resets,
    /// [`RESET_TOKENS`].
    ResetTokens,
    /// [`RESET_EXPIRY`].
    ResetExpiry,
    /// [`RESETS_BY_CUSTOMER`].
    ResetsByCustomer,
    /// [`NONCES`].
    Nonces,
    /// [`LOGIN_GUARDS`].
    LoginGuards,
    /// [`MAIL_QUEUE`].
    MailQueue,
    /// [`MAIL_DUE`].
    MailDue,
}

impl TreeId {
    pub const ALL: [TreeId; 14] = [
        TreeId::Meta,
        TreeId::Customers,
        TreeId::Emails,
        TreeId::Apps,
        TreeId::Shops,
        TreeId::Events,
        TreeId::Resets,
        TreeId::ResetTokens,
        TreeId::ResetExpiry,
        TreeId::ResetsByCustomer,
        TreeId::Nonces,
        TreeId::LoginGuards,
        TreeId::MailQueue,
        TreeId::MailDue,
    ];

    /// The tree's name as stored (sled's tree name).
    pub fn name(self) -> &'static str {
        match self {
            TreeId::Meta => "meta",
            TreeId::Customers => "customers",
            TreeId::Emails => "emails",
            TreeId::Apps => "apps",
            TreeId::Shops => "shops",
            TreeId::Events => "events",
            TreeId::Resets => "resets",
            TreeId::ResetTokens => "reset_tokens",
            TreeId::ResetExpiry => "reset_expiry",
            TreeId::ResetsByCustomer => "resets_by_customer",
            TreeId::Nonces => "nonces",
            TreeId::LoginGuards => "login_guards",
            TreeId::MailQueue => "mail_queue",
            TreeId::MailDue => "mail_due",
        }
    }

    /// Its position in [`TreeId::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The store's counters. Backends keep them (sled: rows of the meta tree;
/// a database server: sequences), so that no operation reads or updates
/// them as rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// The next box_id [`crate::Store::register`] tries (imports raise it
    /// past their ids). Starts at the configured first box_id.
    BoxId,
    /// The next event's sequence number. Starts at 1; numbers increase,
    /// and a backend may leave gaps.
    EventSeq,
}

/// A key encoding: what callers pass ([`Key::Arg`]) and its bytes.
pub(crate) trait Key {
    /// The key as operations hold it.
    type Arg<'a>: Copy;
    /// Calls `f` with the key's bytes (built on the stack where possible).
    fn with_bytes<R>(arg: Self::Arg<'_>, f: impl FnOnce(&[u8]) -> R) -> R;
}

/// Big-endian, so that keys sort numerically (box_ids, event sequence numbers).
impl Key for u64 {
    type Arg<'a> = u64;
    fn with_bytes<R>(arg: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&arg.to_be_bytes())
    }
}

/// Big-endian (user_codes).
impl Key for u32 {
    type Arg<'a> = u32;
    fn with_bytes<R>(arg: u32, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&arg.to_be_bytes())
    }
}

/// UTF-8 as is (normalised emails, shop keys, reset ids).
impl Key for str {
    type Arg<'a> = &'a str;
    fn with_bytes<R>(arg: &str, f: impl FnOnce(&[u8]) -> R) -> R {
        f(arg.as_bytes())
    }
}

/// Bytes as is: keyed digests (32 bytes), and the index keys built by
/// [`ExpiryKey`] and [`CustomerResetKey`] (or read back by a scan).
impl Key for [u8] {
    type Arg<'a> = &'a [u8];
    fn with_bytes<R>(arg: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
        f(arg)
    }
}

/// A stored value's encoding.
pub(crate) trait Value: Sized {
    fn encode(&self) -> Vec<u8>;
    /// Decodes the value of `key` in `tree`; a value that does not decode
    /// is [`Error::CorruptRecord`] naming both.
    fn decode(tree: TreeId, key: &[u8], bytes: &[u8]) -> Result<Self, Error>;
}

/// Records: a format version byte, then bincode ([`encoding`]).
macro_rules! records {
    ($($t:ty),* $(,)?) => {$(
        impl Value for $t {
            fn encode(&self) -> Vec<u8> {
                encoding::encode(self)
            }
            fn decode(tree: TreeId, key: &[u8], bytes: &[u8]) -> Result<Self, Error> {
                encoding::decode(tree, key, bytes)
            }
        }
    )*};
}

records!(
    CustomerRecord,
    AppRecord,
    Event,
    ResetRecord,
    TokenEntry,
    GuardRecord,
    MailRecord,
    Timestamp
);

/// An index entry's target as 8 bytes big-endian (a box_id).
impl Value for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(tree: TreeId, key: &[u8], bytes: &[u8]) -> Result<Self, Error> {
        fixed(tree, key, bytes).map(u64::from_be_bytes)
    }
}

/// An index entry's target as 4 bytes big-endian (a user_code).
impl Value for u32 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(tree: TreeId, key: &[u8], bytes: &[u8]) -> Result<Self, Error> {
        fixed(tree, key, bytes).map(u32::from_be_bytes)
    }
}

/// An index entry whose key says everything: an empty value (any bytes
/// read back are ignored).
impl Value for () {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: TreeId, _: &[u8], _: &[u8]) -> Result<Self, Error> {
        Ok(())
    }
}

/// Exactly `N` bytes, else a corrupt record: the one place that parses a
/// fixed-width number (index targets, the store's counters).
pub(crate) fn fixed<const N: usize>(
    tree: TreeId,
    key: &[u8],
    bytes: &[u8],
) -> Result<[u8; N], Error> {
    bytes.try_into().map_err(|_| encoding::corrupt(tree, key))
}

/// The types a [`Table`] ties together (variance only).
type Types<K, V> = PhantomData<(fn(&K), fn() -> V)>;

/// A table: a tree, its key encoding `K` and its value type `V`.
pub(crate) struct Table<K: ?Sized, V> {
    pub tree: TreeId,
    _types: Types<K, V>,
}

impl<K: ?Sized, V> Table<K, V> {
    const fn new(tree: TreeId) -> Self {
        Self {
            tree,
            _types: PhantomData,
        }
    }
}

impl<K: Key + ?Sized, V> Table<K, V> {
    /// [`Error::CorruptRecord`] for the row at `key`: found, but not what
    /// the store wrote (a dangling index entry, a key that does not unseal).
    pub fn corrupt(&self, key: K::Arg<'_>) -> Error {
        K::with_bytes(key, |k| encoding::corrupt(self.tree, k))
    }
}

/// box_id -> the customer.
pub(crate) const CUSTOMERS: Table<BoxId, CustomerRecord> = Table::new(TreeId::Customers);
/// Normalised email ([`crate::model::Email::normalized`]) -> box_id.
pub(crate) const EMAILS: Table<str, BoxId> = Table::new(TreeId::Emails);
/// user_code -> the app.
pub(crate) const APPS: Table<UserCode, AppRecord> = Table::new(TreeId::Apps);
/// Shop key -> the user_code of the app that owns it.
pub(crate) const SHOPS: Table<str, UserCode> = Table::new(TreeId::Shops);
/// Sequence number -> the event.
pub(crate) const EVENTS: Table<u64, Event> = Table::new(TreeId::Events);
/// Reset id -> the reset (used ones too, until a purge).
pub(crate) const RESETS: Table<str, ResetRecord> = Table::new(TreeId::Resets);
/// Keyed token digest -> what a token check needs ([`TokenEntry`]), while
/// the reset is unused and its customer's credentials have not moved.
pub(crate) const RESET_TOKENS: Table<[u8], TokenEntry> = Table::new(TreeId::ResetTokens);
/// [`ExpiryKey`] -> (): every reset by when it dies, for purges.
pub(crate) const RESET_EXPIRY: Table<[u8], ()> = Table::new(TreeId::ResetExpiry);
/// [`CustomerResetKey`] -> (): every reset by customer.
pub(crate) const RESETS_BY_CUSTOMER: Table<[u8], ()> = Table::new(TreeId::ResetsByCustomer);
/// [`NonceKey`] -> when the salt was first used (signed change-password
/// nonces, kept for good; older stores hold that time plus 24 hours).
pub(crate) const NONCES: Table<NonceKey, Timestamp> = Table::new(TreeId::Nonces);
/// Keyed digest of a normalised email no customer has -> its lock-out
/// state, so that unknown emails lock out like known ones.
pub(crate) const LOGIN_GUARDS: Table<[u8], GuardRecord> = Table::new(TreeId::LoginGuards);
/// Reset id -> its queued reset mail (the token sealed), until delivered.
pub(crate) const MAIL_QUEUE: Table<str, MailRecord> = Table::new(TreeId::MailQueue);
/// [`DueKey`] -> (): every queued mail by its next attempt, so that a
/// courier reads the mails due now without reading the whole queue.
pub(crate) const MAIL_DUE: Table<[u8], ()> = Table::new(TreeId::MailDue);

/// [`NONCES`] keys: user_code BE ++ salt BE (12 bytes; sorts by app, then salt).
pub(crate) enum NonceKey {}

impl Key for NonceKey {
    type Arg<'a> = (UserCode, i64);
    fn with_bytes<R>((user_code, salt): (UserCode, i64), f: impl FnOnce(&[u8]) -> R) -> R {
        let mut k = [0u8; 12];
        k[..4].copy_from_slice(&user_code.to_be_bytes());
        k[4..].copy_from_slice(&salt.to_be_bytes());
        f(&k)
    }
}

/// [`RESET_EXPIRY`] keys: when the reset's token stopped (or will stop)
/// being usable ([`ResetRecord::dead_at`]) as 8 bytes that sort like the
/// number, then the reset id; a purge finds expired and used resets with
/// one range scan.
pub(crate) struct ExpiryKey;

impl ExpiryKey {
    pub fn of(rec: &ResetRecord) -> Vec<u8> {
        let mut k = sortable_time(rec.dead_at()).to_vec();
        k.extend_from_slice(rec.id.as_bytes());
        k
    }

    /// A key above every key of a reset dead by `now` (ids are ASCII
    /// alphanumerics) and below every later one.
    pub fn dead_by(now: Timestamp) -> Vec<u8> {
        let mut k = sortable_time(now).to_vec();
        k.push(0xff);
        k
    }

    /// The reset id an entry names.
    pub fn reset_id(key: &[u8]) -> &[u8] {
        key.get(8..).unwrap_or_default()
    }
}

/// [`MAIL_DUE`] keys: the mail's next attempt as 8 bytes that sort like the
/// number, then its reset id. An entry's next attempt always comes before
/// its token expires, so the mails due by a time (to send, or to drop as
/// expired) are one range scan.
pub(crate) struct DueKey;

impl DueKey {
    pub fn of(rec: &MailRecord) -> Vec<u8> {
        let mut k = sortable_time(rec.next_attempt_at).to_vec();
        k.extend_from_slice(rec.reset_id.as_bytes());
        k
    }

    /// A key above every key of a mail due by `now` (reset ids are ASCII
    /// alphanumerics) and below every later one.
    pub fn due_by(now: Timestamp) -> Vec<u8> {
        let mut k = sortable_time(now).to_vec();
        k.push(0xff);
        k
    }

    /// The time an entry names (`None` for a key too short to hold one).
    pub fn time(key: &[u8]) -> Option<Timestamp> {
        let b: [u8; 8] = key.get(..8)?.try_into().ok()?;
        Some(Timestamp((u64::from_be_bytes(b) ^ (1 << 63)) as i64))
    }

    /// The reset id an entry names.
    pub fn reset_id(key: &[u8]) -> &[u8] {
        key.get(8..).unwrap_or_default()
    }
}

/// [`RESETS_BY_CUSTOMER`] keys: box_id big-endian, then the reset id.
pub(crate) struct CustomerResetKey;

impl CustomerResetKey {
    pub fn of(rec: &ResetRecord) -> Vec<u8> {
        let mut k = rec.box_id.to_be_bytes().to_vec();
        k.extend_from_slice(rec.id.as_bytes());
        k
    }

    /// The reset id an entry names.
    pub fn reset_id(key: &[u8]) -> &[u8] {
        key.get(8..).unwrap_or_default()
    }
}

/// A timestamp as 8 bytes that sort like the number.
fn sortable_time(t: Timestamp) -> [u8; 8] {
    ((t.0 as u64) ^ (1 << 63)).to_be_bytes()
}

/// The key bytes of `arg` in table `K` (for error messages and tests).
pub(crate) fn key_bytes<K: Key + ?Sized>(arg: K::Arg<'_>) -> Vec<u8> {
    K::with_bytes(arg, <[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_bytes_older_stores_hold() {
        assert_eq!(key_bytes::<u64>(811_111), 811_111u64.to_be_bytes());
        assert_eq!(key_bytes::<u32>(396), 396u32.to_be_bytes());
        assert_eq!(key_bytes::<str>("a@b.co"), b"a@b.co");
        let mut nonce = 396u32.to_be_bytes().to_vec();
        nonce.extend_from_slice(&123_456_789i64.to_be_bytes());
        assert_eq!(key_bytes::<NonceKey>((396, 123_456_789)), nonce);
        let names: Vec<&str> = TreeId::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "meta",
                "customers",
                "emails",
                "apps",
                "shops",
                "events",
                "resets",
                "reset_tokens",
                "reset_expiry",
                "resets_by_customer",
                "nonces",
                "login_guards",
                "mail_queue",
                "mail_due"
            ]
        );
    }

    #[test]
    fn nonce_keys_sort_by_app_then_salt() {
        let k = |u, s| key_bytes::<NonceKey>((u, s));
        assert!(k(1, 900_000_000) < k(2, 100_000_000));
        assert!(k(1, 100_000_000) < k(1, 100_000_001));
    }

    #[test]
    fn expiry_keys_sort_by_time_and_name_their_reset() {
        let rec = |id: &str, at: i64| ResetRecord {
            id: id.into(),
            box_id: 7,
            email: "a@b.co".into(),
            token_digest: [0; 32],
            credential_version: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            expires_at: Timestamp(at),
            used_at: None,
            reference: None,
            reference_origin: None,
            metadata: None,
        };
        let (a, b) = (rec("zzzzzzzzzz", -5), rec("AAAAAAAAAA", 3));
        assert!(ExpiryKey::of(&a) < ExpiryKey::of(&b));
        assert!(ExpiryKey::of(&b) < ExpiryKey::dead_by(Timestamp(3)));
        assert!(ExpiryKey::dead_by(Timestamp(2)) < ExpiryKey::of(&b));
        assert_eq!(ExpiryKey::reset_id(&ExpiryKey::of(&a)), b"zzzzzzzzzz");
        assert_eq!(
            CustomerResetKey::reset_id(&CustomerResetKey::of(&b)),
            b"AAAAAAAAAA"
        );
        assert_eq!(&CustomerResetKey::of(&b)[..8], &7u64.to_be_bytes());
    }

    #[test]
    fn fixed_width_values_refuse_other_lengths() {
        assert_eq!(
            u64::decode(TreeId::Emails, b"k", &5u64.to_be_bytes()).unwrap(),
            5
        );
        assert!(u64::decode(TreeId::Emails, b"k", &[0; 7]).is_err());
        assert!(u32::decode(TreeId::Shops, b"k", &[0; 8]).is_err());
        assert!(<()>::decode(TreeId::ResetExpiry, b"k", b"anything").is_ok());
    }
}
