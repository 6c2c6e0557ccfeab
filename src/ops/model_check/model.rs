//! The plain model the store is compared with.

use super::*;

pub(super) fn class(pw: usize) -> usize {
    match pw {
        2 => 1,
        4 => 3,
        p => p,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Ok,
    Locked(i64),
    Credentials(Credential),
    Disabled,
    MustChange,
    Policy,
    Taken(Entity),
    NotFound,
    Throttled,
    InvalidToken,
    Other(String),
}

pub(super) fn outcome<T>(r: &Result<T, Error>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(Error::Locked { until }) => Outcome::Locked(until.0),
        Err(Error::InvalidCredentials(c)) => Outcome::Credentials(*c),
        Err(Error::Disabled) => Outcome::Disabled,
        Err(Error::MustChangePassword) => Outcome::MustChange,
        Err(Error::Policy(PolicyViolation::TooShort { .. })) => Outcome::Policy,
        Err(Error::AlreadyExists(e)) => Outcome::Taken(*e),
        Err(Error::NotFound(Entity::Customer)) => Outcome::NotFound,
        Err(Error::Throttled) => Outcome::Throttled,
        Err(Error::InvalidToken) => Outcome::InvalidToken,
        Err(e) => Outcome::Other(format!("{e:?}")),
    }
}

#[derive(Debug, Clone)]
pub(super) struct MCustomer {
    pub box_id: u64,
    pub email: String,
    pub key: String,
    /// The password's NFKC class (current scheme).
    pub class: usize,
    /// A legacy bcrypt hash of this raw password, until a login rehashes it.
    pub legacy_raw: Option<usize>,
    pub version: u64,
    pub must_change: bool,
    pub enabled: bool,
    pub failed: u32,
    pub locked_until: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub(super) struct MReset {
    pub id: String,
    pub token: String,
    pub box_id: u64,
    pub email: String,
    pub version: u64,
    pub created: i64,
    pub expires: i64,
    pub used_at: Option<i64>,
    /// Outstanding: listed by its customer (unused, not superseded).
    pub listed: bool,
}

#[derive(Default)]
pub(super) struct Model {
    pub customers: Vec<MCustomer>,
    pub resets: Vec<MReset>,
    /// Unknown emails' lock-out: (failed, locked_until, since).
    pub guards: HashMap<String, (u32, Option<i64>, i64)>,
    pub next_box_id: u64,
}

pub(super) fn norm(e: &str) -> String {
    e.trim().to_lowercase()
}

/// Lock-out bookkeeping, as SPEC §5.6 says, on (failed, locked, since).
pub(super) fn refresh(a: &mut (u32, Option<i64>, i64), now: i64) {
    if a.1.is_some_and(|u| u <= now) {
        a.1 = None;
        a.0 = 0;
    }
    if a.1.is_none() && now >= a.2.saturating_add(24 * 3600 * 1000) {
        a.0 = 0;
    }
}

impl Model {
    pub fn by_email(&self, e: &str) -> Option<usize> {
        self.customers
            .iter()
            .position(|c| norm(&c.email) == norm(e))
    }

    /// A credential change: version + 1, the count cleared, outstanding
    /// resets deleted.
    pub fn bump(&mut self, i: usize, now: i64) {
        let c = &mut self.customers[i];
        c.version += 1;
        c.failed = 0;
        c.locked_until = None;
        c.updated_at = now;
        let box_id = c.box_id;
        self.resets.retain(|r| !(r.box_id == box_id && r.listed));
    }

    /// The login; returns the expected outcome.
    pub fn login(&mut self, email: &str, pw: usize, now: i64) -> Outcome {
        let lock_for = LOCK_FOR.as_millis() as i64;
        let Some(i) = self.by_email(email) else {
            let g = self
                .guards
                .entry(norm(email))
                .or_insert((0, None, i64::MIN / 2));
            refresh(g, now);
            if let Some(u) = g.1 {
                return Outcome::Locked(u);
            }
            g.0 += 1;
            g.2 = now;
            if g.0 >= MAX_FAILURES {
                g.1 = Some(now + lock_for);
                g.0 = 0;
            }
            return Outcome::Credentials(Credential::Password);
        };
        let c = &mut self.customers[i];
        let mut a = (c.failed, c.locked_until, c.updated_at);
        refresh(&mut a, now);
        if let Some(u) = a.1 {
            // Refused without a write: the record keeps its old state.
            return Outcome::Locked(u);
        }
        a.0 += 1;
        a.2 = now;
        let matched = match c.legacy_raw {
            Some(raw) => raw == pw,
            None => class(pw) == c.class,
        };
        if !matched {
            if a.0 >= MAX_FAILURES {
                a.1 = Some(now + lock_for);
                a.0 = 0;
            }
            (c.failed, c.locked_until, c.updated_at) = a;
            return Outcome::Credentials(Credential::Password);
        }
        c.failed = 0;
        c.locked_until = None;
        c.updated_at = now;
        if !c.enabled {
            return Outcome::Disabled;
        }
        if c.legacy_raw.take().is_some() {
            c.class = class(pw);
        }
        if c.must_change {
            return Outcome::MustChange;
        }
        Outcome::Ok
    }

    pub fn request_reset(&mut self, email: &str, now: i64) -> Outcome {
        let Some(i) = self.by_email(email) else {
            return Outcome::NotFound;
        };
        let c = &self.customers[i];
        if !c.enabled {
            return Outcome::Disabled;
        }
        let box_id = c.box_id;
        let listed: Vec<&MReset> = self
            .resets
            .iter()
            .filter(|r| r.box_id == box_id && r.listed)
            .collect();
        if listed.iter().any(|r| now < r.created + 60_000) {
            return Outcome::Throttled;
        }
        Outcome::Ok
    }

    /// After the store issued `new` for the customer: expired outstanding
    /// resets deleted, then the oldest until there is room.
    pub fn issued(&mut self, new: MReset, now: i64) {
        let box_id = new.box_id;
        self.resets
            .retain(|r| !(r.box_id == box_id && r.listed && r.expires <= now));
        let mut keep: Vec<(i64, String)> = self
            .resets
            .iter()
            .filter(|r| r.box_id == box_id && r.listed)
            .map(|r| (r.created, r.id.clone()))
            .collect();
        keep.sort();
        while keep.len() >= 3 {
            let (_, id) = keep.remove(0);
            self.resets.retain(|r| r.id != id);
        }
        self.resets.push(new);
    }

    /// Whether a token consumption (or check) would find the reset live.
    pub fn live(&self, token: &str, now: i64) -> Option<usize> {
        let r = self
            .resets
            .iter()
            .position(|r| r.token == token && r.listed && now < r.expires)?;
        let c = self
            .customers
            .iter()
            .find(|c| c.box_id == self.resets[r].box_id)?;
        (c.version == self.resets[r].version && c.enabled).then_some(r)
    }
}
