//! Password hashing: argon2id with a pepper for every new hash; legacy argon2
//! PHC strings and bcrypt verified as they are and flagged for rehash.
//!
//! The current scheme hashes the NFKC form of the password with the pepper as
//! argon2's secret input. Legacy hashes were made by other systems from the raw
//! bytes, without a pepper, so they are verified that way; bcrypt reads only the
//! first 72 bytes, as the systems that made those hashes did.

mod no_hashing;
mod params;

use std::fmt;

use argon2::{Algorithm, Argon2, PasswordHash, Version};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::policy::normalize;
use super::slots::with_blocks;
use crate::error::{Error, InputError, InternalError};
use crate::model::Password;
pub(crate) use no_hashing::NoHashing;
use no_hashing::assert_not_in_transaction;
pub use params::Argon2Params;
use params::check_bounds;

/// How a stored hash must be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HashScheme {
    /// argon2id over the NFKC password with the store's pepper: every new hash.
    Argon2idPeppered,
    /// An argon2 (i, d or id) PHC string from another system, no pepper.
    LegacyArgon2,
    /// bcrypt `$2a$`, `$2b$`, `$2x$` or `$2y$` from another system.
    LegacyBcrypt,
}

const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;
const PHC_B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;
/// bcrypt costs above this are refused (2^16 rounds is already ~5 s).
const MAX_BCRYPT_COST: u32 = 16;

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verification {
    pub matched: bool,
    /// The hash is not the current scheme with the current parameters.
    pub needs_rehash: bool,
}

/// Hashes and verifies; holds the pepper, so its `Debug` shows nothing of it.
pub(crate) struct Hasher {
    params: Argon2Params,
    /// Shared with the hashing threads' jobs (not copied), zeroized with
    /// its last holder.
    pepper: std::sync::Arc<Zeroizing<[u8; 32]>>,
    slots: super::slots::HashSlots,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher running at most `limit` hashes at once.
    pub fn new(params: Argon2Params, pepper: [u8; 32], limit: usize) -> Self {
        Self {
            params,
            pepper: std::sync::Arc::new(Zeroizing::new(pepper)),
            slots: super::slots::HashSlots::new(limit),
        }
    }

    /// The hashing slots (their limit, how often a hash waited).
    pub fn slots(&self) -> &super::slots::HashSlots {
        &self.slots
    }

    /// argon2 over `pwd` and `salt` into `out`, on one of the store's
    /// hashing threads (`slots.rs`): the inputs go over as copies that are
    /// zeroized after, and so does the output on its way back.
    #[allow(clippy::too_many_arguments)]
    fn compute(
        &self,
        algorithm: Algorithm,
        version: Version,
        params: argon2::Params,
        peppered: bool,
        pwd: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        assert_not_in_transaction();
        #[cfg(test)]
        if let Some(observe) = HASH_OBSERVER.with(std::cell::Cell::get) {
            observe();
        }
        let keep = self.params.to_argon2()?.block_count();
        let count = params.block_count();
        let pepper = peppered.then(|| self.pepper.clone());
        let pwd = Zeroizing::new(pwd.to_vec());
        let salt = salt.to_vec();
        let len = out.len();
        let hashed = self
            .slots
            .run(move |kept| {
                let ctx = match &pepper {
                    // (A 32-byte secret is always accepted.)
                    Some(p) => Argon2::new_with_secret(&p[..], algorithm, version, params)?,
                    None => Argon2::new(algorithm, version, params),
                };
                let mut out = Zeroizing::new(vec![0u8; len]);
                with_blocks(kept, count, keep, |blocks| {
                    ctx.hash_password_into_with_memory(&pwd[..], &salt, &mut out[..], blocks)
                })?;
                Ok::<_, argon2::Error>(out)
            })
            .map_err(|_| hashing_panicked("computing argon2"))?
            .map_err(|e| Error::Internal(InternalError::new("computing argon2", e.to_string())))?;
        out.copy_from_slice(&hashed);
        Ok(())
    }

    /// A new hash of an already policy-checked, normalised password.
    pub fn hash_normalized(&self, normalized: &str) -> Result<String, Error> {
        let mut salt = [0u8; SALT_LEN];
        super::random::fill(&mut salt)?;
        let mut out = [0u8; OUTPUT_LEN];
        let p = self.params;
        self.compute(
            Algorithm::Argon2id,
            Version::V0x13,
            p.to_argon2()?,
            true,
            normalized.as_bytes(),
            &salt,
            &mut out,
        )?;
        let phc = format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            p.m_cost(),
            p.t_cost(),
            p.p_cost(),
            PHC_B64.encode(salt),
            PHC_B64.encode(out)
        );
        out.zeroize();
        Ok(phc)
    }

    /// Spends the same work as a verification, for unknown accounts (no user
    /// enumeration by timing).
    pub fn dummy_verify(&self, password: &Password) {
        let normalized = normalize(password);
        let mut out = [0u8; OUTPUT_LEN];
        if let Ok(p) = self.params.to_argon2() {
            let _ = self.compute(
                Algorithm::Argon2id,
                Version::V0x13,
                p,
                true,
                normalized.as_bytes(),
                b"credstore-dummy-salt",
                &mut out,
            );
        }
    }

    /// Checks `password` against a stored hash of the given scheme.
    pub fn verify(
        &self,
        scheme: HashScheme,
        stored: &str,
        password: &Password,
    ) -> Result<Verification, Error> {
        match scheme {
            HashScheme::Argon2idPeppered | HashScheme::LegacyArgon2 => {
                let parsed = parse_argon2(stored)?;
                let peppered = scheme == HashScheme::Argon2idPeppered;
                let normalized;
                let pwd: &[u8] = if peppered {
                    normalized = normalize(password);
                    normalized.as_bytes()
                } else {
                    password.expose_secret().as_bytes()
                };
                let expected = parsed.hash.as_slice();
                let mut out = vec![0u8; expected.len()];
                self.compute(
                    parsed.algorithm,
                    parsed.version,
                    parsed.params.clone(),
                    peppered,
                    pwd,
                    &parsed.salt,
                    &mut out,
                )?;
                let matched = super::ct_eq(&out, expected);
                out.zeroize();
                let current = peppered
                    && parsed.algorithm == Algorithm::Argon2id
                    && parsed.version == Version::V0x13
                    && parsed.params.m_cost() == self.params.m_cost()
                    && parsed.params.t_cost() == self.params.t_cost()
                    && parsed.params.p_cost() == self.params.p_cost()
                    && expected.len() == OUTPUT_LEN;
                Ok(Verification {
                    matched,
                    needs_rehash: !current,
                })
            }
            HashScheme::LegacyBcrypt => {
                check_bcrypt(stored).map_err(Error::InvalidInput)?;
                assert_not_in_transaction();
                let pwd = Zeroizing::new(password.expose_secret().as_bytes().to_vec());
                let stored = stored.to_owned();
                // bcrypt::verify reads the first 72 bytes, like PHP and the C libraries.
                let matched = self
                    .slots
                    .run(move |_| bcrypt::verify(&pwd[..], &stored).ok())
                    .map_err(|_| hashing_panicked("verifying bcrypt"))?
                    .ok_or(Error::InvalidInput(InputError::MalformedHash("bcrypt")))?;
                Ok(Verification {
                    matched,
                    needs_rehash: true,
                })
            }
        }
    }
}

fn hashing_panicked(what: &'static str) -> Error {
    Error::Internal(InternalError::new(what, "the hashing thread panicked"))
}

struct ParsedArgon2 {
    algorithm: Algorithm,
    version: Version,
    params: argon2::Params,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

fn parse_argon2(s: &str) -> Result<ParsedArgon2, InputError> {
    let h = PasswordHash::new(s).map_err(|_| InputError::MalformedHash("not a PHC string"))?;
    let algorithm = Algorithm::try_from(h.algorithm.as_str())
        .map_err(|_| InputError::MalformedHash("not an argon2 algorithm"))?;
    let version = match h.version {
        Some(v) => {
            Version::try_from(v).map_err(|_| InputError::MalformedHash("unknown argon2 version"))?
        }
        None => Version::V0x10,
    };
    // Bounds first, from the raw parameter string, before argon2 sees them.
    let get = |name: &str| h.params.get_decimal(name);
    let (m, t, p) = match (get("m"), get("t"), get("p")) {
        (Some(m), Some(t), Some(p)) => (m, t, p),
        _ => return Err(InputError::MalformedHash("missing m, t or p")),
    };
    check_bounds(m, t, p).map_err(InputError::HashParamsOutOfBounds)?;
    let params =
        argon2::Params::try_from(&h).map_err(|_| InputError::MalformedHash("argon2 parameters"))?;
    let salt = h
        .salt
        .as_ref()
        .ok_or(InputError::MalformedHash("no salt"))?;
    let hash = h
        .hash
        .as_ref()
        .ok_or(InputError::MalformedHash("no hash"))?;
    if salt.len() < 8 || salt.len() > 64 || hash.len() < 4 || hash.len() > 64 {
        return Err(InputError::MalformedHash("salt or hash length"));
    }
    Ok(ParsedArgon2 {
        algorithm,
        version,
        params,
        salt: salt.to_vec(),
        hash: hash.as_bytes().to_vec(),
    })
}

#[cfg(test)]
thread_local! {
    /// Tests: called on this thread as each hash begins.
    static HASH_OBSERVER: std::cell::Cell<Option<fn()>> = const { std::cell::Cell::new(None) };
}

/// Tests: `observe` runs on the calling thread as each of its hashes
/// begins (`None`: nothing runs).
#[cfg(test)]
pub(crate) fn observe_hashes(observe: Option<fn()>) {
    HASH_OBSERVER.with(|o| o.set(observe));
}

fn check_bcrypt(s: &str) -> Result<(), InputError> {
    let b = s.as_bytes();
    if b.len() != 60 || !s.is_ascii() || b[0] != b'$' || b[3] != b'$' || b[6] != b'$' {
        return Err(InputError::MalformedHash(
            "bcrypt strings are 60 characters",
        ));
    }
    if !matches!(&s[1..3], "2a" | "2b" | "2x" | "2y") {
        return Err(InputError::MalformedHash("unknown bcrypt prefix"));
    }
    let cost: u32 = s[4..6]
        .parse()
        .map_err(|_| InputError::MalformedHash("bcrypt cost"))?;
    if !(4..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(InputError::HashParamsOutOfBounds(
            "bcrypt cost must be 4 to 16",
        ));
    }
    Ok(())
}

/// Classifies a hash given for import, refusing malformed strings and
/// parameters that would make verification a memory or time bomb.
pub(crate) fn classify_import(s: &str) -> Result<HashScheme, InputError> {
    if s.len() > 512 {
        return Err(InputError::MalformedHash("longer than 512 bytes"));
    }
    if s.starts_with("$2") {
        check_bcrypt(s)?;
        return Ok(HashScheme::LegacyBcrypt);
    }
    if s.starts_with("$argon2") {
        parse_argon2(s)?;
        return Ok(HashScheme::LegacyArgon2);
    }
    Err(InputError::MalformedHash("neither argon2 nor bcrypt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        Hasher::new(Argon2Params::insecure_for_tests(), [3u8; 32], 2)
    }

    #[test]
    fn new_hashes_verify_and_are_current() {
        let h = hasher();
        let phc = h.hash_normalized("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
        let ok = h
            .verify(
                HashScheme::Argon2idPeppered,
                &phc,
                &Password::new("correct horse").unwrap(),
            )
            .unwrap();
        assert_eq!(
            ok,
            Verification {
                matched: true,
                needs_rehash: false
            }
        );
        let bad = h
            .verify(
                HashScheme::Argon2idPeppered,
                &phc,
                &Password::new("correct horsf").unwrap(),
            )
            .unwrap();
        assert!(!bad.matched);
    }

    #[test]
    fn pepper_matters() {
        let phc = hasher().hash_normalized("pw12345678").unwrap();
        let other = Hasher::new(Argon2Params::insecure_for_tests(), [4u8; 32], 2);
        let v = other
            .verify(
                HashScheme::Argon2idPeppered,
                &phc,
                &Password::new("pw12345678").unwrap(),
            )
            .unwrap();
        assert!(!v.matched);
    }

    #[test]
    fn changed_params_need_rehash() {
        let phc = hasher().hash_normalized("pw12345678").unwrap();
        let other = Hasher::new(Argon2Params::new(16, 1, 1).unwrap(), [3u8; 32], 2);
        let v = other
            .verify(
                HashScheme::Argon2idPeppered,
                &phc,
                &Password::new("pw12345678").unwrap(),
            )
            .unwrap();
        assert_eq!(
            v,
            Verification {
                matched: true,
                needs_rehash: true
            }
        );
    }

    #[test]
    fn memory_bombs_are_refused_before_hashing() {
        let bomb = "$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert_eq!(
            classify_import(bomb),
            Err(InputError::HashParamsOutOfBounds(
                "memory cost must be 8*p KiB to 256 MiB"
            ))
        );
        let slow = "$argon2id$v=19$m=1024,t=100000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(matches!(
            classify_import(slow),
            Err(InputError::HashParamsOutOfBounds(_))
        ));
        let lanes = "$argon2id$v=19$m=65536,t=1,p=255$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(matches!(
            classify_import(lanes),
            Err(InputError::HashParamsOutOfBounds(_))
        ));
        let slow_bcrypt = "$2b$31$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS";
        assert!(matches!(
            classify_import(slow_bcrypt),
            Err(InputError::HashParamsOutOfBounds(_))
        ));
        // and verification re-checks, should such a record exist
        let h = hasher();
        assert!(
            h.verify(HashScheme::LegacyArgon2, bomb, &Password::new("x").unwrap())
                .is_err()
        );
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "",
            "plain",
            "$1$abc",
            "$argon2id$",
            "$2b$04$short",
            "$scrypt$ln=1,r=1,p=1$c2FsdA$aGFzaA",
        ] {
            assert!(classify_import(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_bounds() {
        assert!(Argon2Params::new(0, 1, 1).is_err());
        assert!(Argon2Params::new(19456, 0, 1).is_err());
        assert!(Argon2Params::new(19456, 2, 0).is_err());
        assert!(Argon2Params::new(1 << 20, 1, 1).is_err());
        assert!(Argon2Params::new(19456, 2, 1).is_ok());
        assert_eq!(
            Argon2Params::default(),
            Argon2Params::new(19456, 2, 1).unwrap()
        );
    }
}

/// How a customer's password is currently stored (no hash bytes), so operators
/// can see who is still on a legacy scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashInfo {
    /// The scheme.
    pub scheme: PasswordScheme,
    /// Argon2 (memory KiB, passes, lanes), or the bcrypt cost as `(0, cost, 0)`.
    pub params: (u32, u32, u32),
}

/// The public name of a stored hash's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordScheme {
    /// argon2id with the store's pepper: the current scheme.
    Argon2idPeppered,
    /// An imported argon2 hash, not yet replaced.
    LegacyArgon2,
    /// An imported bcrypt hash, not yet replaced.
    LegacyBcrypt,
}

pub(crate) fn hash_info(scheme: HashScheme, stored: &str) -> PasswordHashInfo {
    let params = match scheme {
        HashScheme::LegacyBcrypt => (
            0,
            stored.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(0),
            0,
        ),
        _ => parse_argon2(stored)
            .map(|p| (p.params.m_cost(), p.params.t_cost(), p.params.p_cost()))
            .unwrap_or((0, 0, 0)),
    };
    let scheme = match scheme {
        HashScheme::Argon2idPeppered => PasswordScheme::Argon2idPeppered,
        HashScheme::LegacyArgon2 => PasswordScheme::LegacyArgon2,
        HashScheme::LegacyBcrypt => PasswordScheme::LegacyBcrypt,
    };
    PasswordHashInfo { scheme, params }
}
