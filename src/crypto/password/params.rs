//! Argon2 cost parameters for new hashes, validated against sane bounds.

use super::OUTPUT_LEN;
use crate::error::{Error, InputError};

/// Argon2 cost parameters for new hashes, validated against sane bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

impl Argon2Params {
    /// Smallest memory cost in KiB (argon2's own minimum for p = 1).
    pub const MIN_M_COST: u32 = 8;
    /// Largest memory cost in KiB accepted, for new and legacy hashes (256 MiB).
    pub const MAX_M_COST: u32 = 256 * 1024;
    /// Largest number of passes accepted.
    pub const MAX_T_COST: u32 = 16;
    /// Largest parallelism accepted.
    pub const MAX_P_COST: u32 = 16;
    /// Largest memory × passes product accepted (the work a verification costs).
    pub const MAX_WORK: u64 = 1024 * 1024;
    /// The argon2 crate's defaults (RFC 9106 / OWASP): m = 19456 KiB, t = 2, p = 1.
    pub const DEFAULT: Self = Self {
        m_cost: argon2::Params::DEFAULT_M_COST,
        t_cost: argon2::Params::DEFAULT_T_COST,
        p_cost: argon2::Params::DEFAULT_P_COST,
    };

    /// Validated parameters: memory in KiB, passes, lanes.
    pub fn new(m_cost: u32, t_cost: u32, p_cost: u32) -> Result<Self, InputError> {
        check_bounds(m_cost, t_cost, p_cost).map_err(InputError::InvalidParams)?;
        Ok(Self {
            m_cost,
            t_cost,
            p_cost,
        })
    }

    /// Cheap parameters for tests only (m = 8 KiB, t = 1): never in production.
    pub fn insecure_for_tests() -> Self {
        Self {
            m_cost: 8,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Memory cost in KiB.
    pub fn m_cost(&self) -> u32 {
        self.m_cost
    }
    /// Passes.
    pub fn t_cost(&self) -> u32 {
        self.t_cost
    }
    /// Lanes.
    pub fn p_cost(&self) -> u32 {
        self.p_cost
    }

    pub(super) fn to_argon2(self) -> Result<argon2::Params, Error> {
        argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(OUTPUT_LEN))
            .map_err(|_| Error::InvalidInput(InputError::InvalidParams("rejected by argon2")))
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::DEFAULT
    }
}

pub(super) fn check_bounds(m: u32, t: u32, p: u32) -> Result<(), &'static str> {
    if p == 0 || p > Argon2Params::MAX_P_COST {
        return Err("parallelism must be 1 to 16");
    }
    if t == 0 || t > Argon2Params::MAX_T_COST {
        return Err("time cost must be 1 to 16");
    }
    if m < 8 * p || m > Argon2Params::MAX_M_COST {
        return Err("memory cost must be 8*p KiB to 256 MiB");
    }
    if u64::from(m) * u64::from(t) > Argon2Params::MAX_WORK {
        return Err("memory cost times time cost exceeds 1 GiB of passes");
    }
    Ok(())
}
