//! Login by (email, password), with a lock-out that holds under any
//! concurrency, the same work and bookkeeping for unknown emails, and rehash
//! of legacy or outdated hashes.
//!
//! A login is two transactions around one verification:
//!
//! 1. **Reserve** a verification: refused as locked (without hashing) when
//!    the account is locked or when every attempt of the budget is already
//!    counted; otherwise the attempt is counted as a failure at once.
//! 2. Verify (argon2 or bcrypt), outside any transaction.
//! 3. **Settle**: a wrong password keeps its count and locks the account
//!    once the budget is spent; a right one re-checks, inside the
//!    transaction, that no lock was set meanwhile and that the credentials
//!    did not move, then clears the count.
//!
//! So at most `max_failures` wrong passwords are ever verified per lock
//! window, however many arrive at once. Emails that no customer has go
//! through the same steps on a *login guard* (a keyed digest of the email
//! and its own count), against a dummy hash: same answers, same work, same
//! durable writes, same lock-out.

use std::time::Duration;

use super::{LockoutPolicy, Store, steps};
use crate::crypto::password::HashScheme;
use crate::error::{Credential, Error};
use crate::model::{BoxId, Email, EventKind, EventOutcome, Login, Password, Timestamp};
use crate::store::records::{CustomerRecord, GuardRecord};
use crate::store::schema::LOGIN_GUARDS;
use crate::store::{Tx, TxError};

/// Failures are forgotten after this long without one (for customers and
/// login guards alike); idle login guards are then purged.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// A count of failed logins and a lock: a customer's or a login guard's.
#[derive(Debug, Clone, Copy)]
struct Attempts {
    failed: u32,
    locked_until: Option<Timestamp>,
    /// When the count last changed (or the record did).
    since: Timestamp,
}

impl Attempts {
    fn budget(policy: LockoutPolicy) -> u32 {
        policy.max_failures.max(1)
    }

    /// Drops an expired lock, and failures older than [`FAILURE_MEMORY`].
    fn refresh(&mut self, now: Timestamp) {
        if self.locked_until.is_some_and(|u| u <= now) {
            self.locked_until = None;
            self.failed = 0;
        }
        if self.locked_until.is_none() && now >= self.since.plus(FAILURE_MEMORY) {
            self.failed = 0;
        }
    }

    /// Counts one attempt as failed before its verification runs; `Err`
    /// with the lock's end when it may not run.
    fn reserve(&mut self, now: Timestamp, policy: LockoutPolicy) -> Result<(), Timestamp> {
        self.refresh(now);
        if let Some(until) = self.locked_until {
            return Err(until);
        }
        if self.failed >= Self::budget(policy) {
            // Every attempt of the budget is in flight or failed: the lock
            // is being set.
            return Err(now.plus(policy.lock_for));
        }
        self.failed += 1;
        self.since = now;
        Ok(())
    }

    /// A reserved attempt failed (it is counted already). Returns `true`
    /// when this locks the account.
    fn fail(&mut self, now: Timestamp, policy: LockoutPolicy) -> bool {
        if self.locked_until.is_some_and(|u| u > now) {
            return false;
        }
        self.since = now;
        if self.failed >= Self::budget(policy) {
            self.locked_until = Some(now.plus(policy.lock_for));
            self.failed = 0;
            return true;
        }
        false
    }

    fn of_customer(r: &CustomerRecord) -> Self {
        Self {
            failed: r.failed_logins,
            locked_until: r.locked_until,
            since: r.updated_at,
        }
    }

    fn into_customer(self, r: &mut CustomerRecord) {
        r.failed_logins = self.failed;
        r.locked_until = self.locked_until;
        r.updated_at = self.since;
    }

    fn of_guard(g: Option<GuardRecord>) -> Self {
        g.map_or(
            Self {
                failed: 0,
                locked_until: None,
                since: Timestamp(i64::MIN / 2),
            },
            |g| Self {
                failed: g.failed_logins,
                locked_until: g.locked_until,
                since: g.updated_at,
            },
        )
    }

    fn into_guard(self) -> GuardRecord {
        GuardRecord {
            failed_logins: self.failed,
            locked_until: self.locked_until,
            updated_at: self.since,
        }
    }
}

/// What a login's attempt is counted against.
#[derive(Clone, Copy)]
enum Target {
    Customer(BoxId),
    /// The login guard of an email no customer has (its key).
    Guard([u8; 32]),
}

/// How the reservation went.
enum Reserved {
    Locked(Timestamp),
    Customer(Box<CustomerRecord>),
    Unknown,
}

impl Store {
    /// Logs a customer in. The password is checked against the stored hash
    /// whatever the current policy says (the policy applies when a password is
    /// set). Unknown emails cost the same argon2 work and the same durable
    /// writes as known ones, and lock out the same way.
    ///
    /// Errors: [`Error::InvalidCredentials`] (`Credential::Password`, the same
    /// for an unknown email and a wrong password), [`Error::Locked`] while the
    /// account is locked or its attempts are spent (the password is not
    /// checked then), [`Error::Disabled`] when the password was right but
    /// the account is disabled, and [`Error::MustChangePassword`] when the
    /// password was right but must be changed first.
    pub fn login(&self, email: &str, password: &Password) -> Result<Login, Error> {
        let email = Email::parse(email)?;
        let policy = self.config().lockout;
        let guard = self.login_guard_key(&email);

        let now = self.now();
        let reserved = self.engine().transact(|tx| {
            let Some(box_id) = steps::box_id_by_email(tx, &email)? else {
                let key = Target::Guard(guard);
                let mut a = Attempts::of_guard(load_guard(tx, &guard)?);
                if let Err(until) = a.reserve(now, policy) {
                    return Ok(Reserved::Locked(until));
                }
                save(tx, key, a, None)?;
                return Ok(Reserved::Unknown);
            };
            let mut rec = steps::load_customer(tx, box_id)?;
            let mut a = Attempts::of_customer(&rec);
            if let Err(until) = a.reserve(now, policy) {
                return Ok(Reserved::Locked(until));
            }
            a.into_customer(&mut rec);
            save(tx, Target::Customer(box_id), a, Some(&rec))?;
            Ok(Reserved::Customer(Box::new(rec)))
        })?;

        let rec = match reserved {
            Reserved::Locked(until) => return Err(Error::Locked { until }),
            Reserved::Unknown => {
                self.hasher().dummy_verify(password);
                self.login_failed(Target::Guard(guard))?;
                return Err(Error::InvalidCredentials(Credential::Password));
            }
            Reserved::Customer(rec) => rec,
        };
        let v = self
            .hasher()
            .verify(rec.scheme, &rec.password_hash, password)?;
        self.fail_point("login:verified")?;
        if !v.matched {
            self.login_failed(Target::Customer(rec.box_id))?;
            return Err(Error::InvalidCredentials(Credential::Password));
        }

        let new_hash = if v.needs_rehash && rec.flags.is_enable {
            // The current scheme hashes the NFKC form; legacy hashes were
            // verified on the raw bytes. The policy does not apply here.
            let normalized = crate::crypto::policy::normalize(password);
            Some(self.hasher().hash_normalized(&normalized)?)
        } else {
            None
        };
        let (box_id, expected) = (rec.box_id, rec.credential_version);
        let now = self.now();
        let rec = self.engine().transact(|tx| {
            let mut r = steps::load_customer(tx, box_id)?;
            // Re-checked here: a lock set while this verification ran wins.
            if let Some(until) = r.locked_until
                && until > now
            {
                return Err(Error::Locked { until }.into());
            }
            if r.credential_version != expected {
                // The password changed (or the account was disabled) while
                // the old one was verified.
                return Err(Error::Conflict.into());
            }
            r.failed_logins = 0;
            r.locked_until = None;
            r.updated_at = now;
            let (kind, outcome) = if !r.flags.is_enable {
                (EventKind::LoginFailed, EventOutcome::Refused)
            } else if let Some(h) = &new_hash {
                r.scheme = HashScheme::Argon2idPeppered;
                r.password_hash = h.clone();
                (EventKind::PasswordRehashed, EventOutcome::Granted)
            } else {
                (EventKind::LoginSucceeded, EventOutcome::Granted)
            };
            steps::put_customer(tx, &r)?;
            tx.append_event(now, kind, outcome, Some(box_id), None)?;
            Ok(r)
        })?;
        if !rec.flags.is_enable {
            return Err(Error::Disabled);
        }
        if rec.flags.must_change_password {
            return Err(Error::MustChangePassword);
        }
        let key = self.unseal_customer_key(&rec)?;
        Ok(Login {
            customer: rec.to_public(),
            key,
        })
    }

    /// Settles a reserved attempt whose password was wrong (or whose email
    /// is unknown): locks once the budget is spent, appends one event.
    fn login_failed(&self, target: Target) -> Result<(), Error> {
        let policy = self.config().lockout;
        let now = self.now();
        let locked = self.engine().transact(|tx| {
            let (locks, box_id) = match target {
                Target::Customer(box_id) => {
                    let mut rec = steps::load_customer(tx, box_id)?;
                    let mut a = Attempts::of_customer(&rec);
                    let locks = a.fail(now, policy);
                    a.into_customer(&mut rec);
                    save(tx, target, a, Some(&rec))?;
                    (locks, Some(box_id))
                }
                Target::Guard(key) => {
                    let mut a = Attempts::of_guard(load_guard(tx, &key)?);
                    let locks = a.fail(now, policy);
                    save(tx, target, a, None)?;
                    (locks, None)
                }
            };
            let kind = if locks {
                EventKind::AccountLocked
            } else {
                EventKind::LoginFailed
            };
            tx.append_event(now, kind, EventOutcome::Refused, box_id, None)?;
            Ok(locks)
        })?;
        super::counters::login_failed(locked);
        Ok(())
    }

    /// Removes login guards that hold nothing any more (no lock in force, no
    /// failure within [`FAILURE_MEMORY`]); returns how many. A removed
    /// guard and an absent one behave the same.
    pub fn purge_login_guards(&self) -> Result<usize, Error> {
        const BATCH: usize = 256;
        let now = self.now();
        let mut removed = 0;
        let mut start: Vec<u8> = Vec::new();
        loop {
            let rows = self.engine().scan_from(&LOGIN_GUARDS, &start, 1024)?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            start = last.to_vec();
            start.push(0);
            let mut idle = Vec::new();
            for (k, g) in &rows {
                if is_idle(g, now) {
                    idle.push(k.to_vec());
                }
            }
            for chunk in idle.chunks(BATCH) {
                removed += self.engine().transact(|tx| {
                    let mut n = 0;
                    for k in chunk {
                        // Re-checked: a login may have used it since the scan.
                        if let Some(g) = tx.get(&LOGIN_GUARDS, k)?
                            && is_idle(&g, now)
                        {
                            tx.delete(&LOGIN_GUARDS, k)?;
                            n += 1;
                        }
                    }
                    Ok(n)
                })?;
            }
            if rows.len() < 1024 {
                break;
            }
        }
        Ok(removed)
    }

    /// The login guard key of an email: keyed BLAKE3 of its normalised form.
    fn login_guard_key(&self, email: &Email) -> [u8; 32] {
        self.keys().login_guard_key(email)
    }
}

fn is_idle(g: &GuardRecord, now: Timestamp) -> bool {
    g.locked_until.is_none_or(|u| u <= now) && now >= g.updated_at.plus(FAILURE_MEMORY)
}

fn load_guard(tx: &Tx<'_>, key: &[u8; 32]) -> Result<Option<GuardRecord>, TxError> {
    tx.get(&LOGIN_GUARDS, key)
}

/// Writes the attempts back: into the customer record `rec` (already
/// updated by the caller), or as the login guard's record.
fn save(
    tx: &Tx<'_>,
    target: Target,
    a: Attempts,
    rec: Option<&CustomerRecord>,
) -> Result<(), TxError> {
    match (target, rec) {
        (Target::Customer(_), Some(rec)) => steps::put_customer(tx, rec),
        (Target::Guard(key), _) => tx.put(&LOGIN_GUARDS, &key, &a.into_guard()),
        (Target::Customer(_), None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 3,
            lock_for: Duration::from_secs(60),
        }
    }

    fn fresh() -> Attempts {
        Attempts::of_guard(None)
    }

    #[test]
    fn reservations_spend_the_budget_before_any_verification() {
        let now = Timestamp(1_000_000);
        let mut a = fresh();
        for _ in 0..3 {
            a.reserve(now, policy()).unwrap();
        }
        // All three in flight: a fourth may not even be verified.
        assert_eq!(a.reserve(now, policy()), Err(now.plus(policy().lock_for)));
        // The first failure to settle locks.
        assert!(a.fail(now, policy()));
        assert_eq!(a.locked_until, Some(now.plus(policy().lock_for)));
        // Later failures of the same window do not move the lock.
        assert!(!a.fail(now.plus(Duration::from_secs(1)), policy()));
        assert_eq!(a.locked_until, Some(now.plus(policy().lock_for)));
        assert!(
            a.reserve(now.plus(Duration::from_secs(59)), policy())
                .is_err()
        );
        // After the lock, a fresh budget.
        let later = now.plus(Duration::from_secs(60));
        a.reserve(later, policy()).unwrap();
        assert_eq!((a.failed, a.locked_until), (1, None));
    }

    #[test]
    fn failures_below_the_budget_do_not_lock_and_are_forgotten() {
        let now = Timestamp(0);
        let mut a = fresh();
        a.reserve(now, policy()).unwrap();
        assert!(!a.fail(now, policy()));
        a.reserve(now, policy()).unwrap();
        assert!(!a.fail(now, policy()));
        assert_eq!(a.failed, 2);
        let much_later = now.plus(FAILURE_MEMORY);
        a.reserve(much_later, policy()).unwrap();
        assert_eq!(a.failed, 1);
        let g = a.into_guard();
        assert!(!is_idle(&g, much_later));
        assert!(is_idle(&g, much_later.plus(FAILURE_MEMORY)));
    }

    #[test]
    fn a_zero_budget_still_allows_one_attempt() {
        let p = LockoutPolicy {
            max_failures: 0,
            ..policy()
        };
        let mut a = fresh();
        a.reserve(Timestamp(0), p).unwrap();
        assert!(a.reserve(Timestamp(0), p).is_err());
    }
}
