//! WCF JSON dates: `"/Date(<ms since the epoch, UTC><+|-hhmm>)/"`.
//!
//! The milliseconds are always UTC; the offset only says in which zone the
//! writer would display the time (.NET writes none for UTC values). Parsing
//! accepts the JSON-escaped `\/Date(...)\/` form as text, negative
//! milliseconds, and any offset up to ±23:59.

use std::fmt;

use crate::model::Timestamp;

/// A display zone for WCF dates, such as `-0500`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WcfOffset(i16);

impl WcfOffset {
    /// UTC written explicitly (`+0000`).
    pub const UTC: Self = Self(0);

    /// An offset in minutes east of UTC, at most 23:59 either way.
    pub fn from_minutes(minutes: i32) -> Option<Self> {
        if minutes.abs() > 23 * 60 + 59 {
            return None;
        }
        i16::try_from(minutes).ok().map(Self)
    }

    /// Parses `+hhmm` / `-hhmm` (hh ≤ 23, mm ≤ 59).
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let (&sign, digits) = b.split_first()?;
        if digits.len() != 4 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let num = |i: usize| i32::from(digits.get(i).copied().unwrap_or(b'0') - b'0');
        let (hh, mm) = (num(0) * 10 + num(1), num(2) * 10 + num(3));
        if hh > 23 || mm > 59 {
            return None;
        }
        let minutes = hh * 60 + mm;
        match sign {
            b'+' => Self::from_minutes(minutes),
            b'-' => Self::from_minutes(-minutes),
            _ => None,
        }
    }

    /// Minutes east of UTC.
    pub fn minutes(self) -> i16 {
        self.0
    }
}

impl fmt::Display for WcfOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let m = self.0.unsigned_abs();
        write!(f, "{sign}{:02}{:02}", m / 60, m % 60)
    }
}

/// A decoded WCF date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WcfDate {
    /// Milliseconds since the Unix epoch, UTC.
    pub millis: i64,
    /// The display zone, if one was written.
    pub offset: Option<WcfOffset>,
}

/// Why a text is not a WCF date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WcfDateError;

impl fmt::Display for WcfDateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a WCF date of the form /Date(<milliseconds>[+-hhmm])/")
    }
}

impl std::error::Error for WcfDateError {}

impl WcfDate {
    /// A date at `t`, shown in `offset`.
    pub fn new(t: Timestamp, offset: Option<WcfOffset>) -> Self {
        Self {
            millis: t.as_millis(),
            offset,
        }
    }

    /// The instant (the offset does not change it).
    pub fn timestamp(self) -> Timestamp {
        Timestamp(self.millis)
    }

    /// Parses `/Date(ms[±hhmm])/`, also with the JSON escapes `\/` kept.
    pub fn parse(text: &str) -> Result<Self, WcfDateError> {
        let rest = text
            .strip_prefix("\\/Date(")
            .or_else(|| text.strip_prefix("/Date("))
            .ok_or(WcfDateError)?;
        let inner = rest
            .strip_suffix(")\\/")
            .or_else(|| rest.strip_suffix(")/"))
            .ok_or(WcfDateError)?;
        // The offset is the last 5 characters when they start with + or -,
        // and are not the sign of the milliseconds themselves.
        let (ms, offset) = match inner.len().checked_sub(5) {
            Some(at) if at > 0 && matches!(inner.as_bytes().get(at), Some(b'+' | b'-')) => {
                let (ms, off) = inner.split_at(at);
                (ms, Some(WcfOffset::parse(off).ok_or(WcfDateError)?))
            }
            _ => (inner, None),
        };
        let digits = ms.strip_prefix('-').unwrap_or(ms);
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WcfDateError);
        }
        let millis = ms.parse::<i64>().map_err(|_| WcfDateError)?;
        Ok(Self { millis, offset })
    }

    /// The text form, `/Date(1550761010000-0500)/` (JSON writers escape the
    /// slashes or not; both parse).
    pub fn encode(&self) -> String {
        match self.offset {
            Some(o) => format!("/Date({}{o})/", self.millis),
            None => format!("/Date({})/", self.millis),
        }
    }
}

impl fmt::Display for WcfDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_dates() {
        let d = WcfDate::new(Timestamp(1550761010000), WcfOffset::parse("-0500"));
        assert_eq!(d.encode(), "/Date(1550761010000-0500)/");
        assert_eq!(WcfDate::parse("/Date(1550761010000-0500)/"), Ok(d));
        assert_eq!(WcfDate::parse("\\/Date(1550761010000-0500)\\/"), Ok(d));
        assert_eq!(d.timestamp(), Timestamp(1550761010000));
        assert_eq!(WcfDate::new(Timestamp(5), None).encode(), "/Date(5)/");
    }

    #[test]
    fn negatives_and_offsets() {
        let d = WcfDate::parse("/Date(-1000+0530)/").unwrap();
        assert_eq!(d.millis, -1000);
        assert_eq!(d.offset.unwrap().minutes(), 330);
        assert_eq!(d.encode(), "/Date(-1000+0530)/");
        assert_eq!(WcfDate::parse("/Date(-1000)/").unwrap().offset, None);
        assert_eq!(
            WcfDate::parse("/Date(12-2359)/")
                .unwrap()
                .offset
                .unwrap()
                .minutes(),
            -1439
        );
        assert_eq!(
            WcfDate::parse("/Date(-9223372036854775808)/")
                .unwrap()
                .millis,
            i64::MIN
        );
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "/Date()/",
            "/Date(-)/",
            "/Date(+5)/",
            "/Date(1.5)/",
            "/Date(1+05)/",
            "/Date(1+2400)/",
            "/Date(1+0060)/",
            "/Date(1 )/",
            "Date(1)",
            "/Date(1)",
            "/Date(99999999999999999999)/",
            "/Date(1)/x",
            "/date(1)/",
            "/Date(+0500)/",
        ] {
            assert_eq!(WcfDate::parse(bad), Err(WcfDateError), "{bad}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(WcfOffset::UTC.to_string(), "+0000");
        assert_eq!(WcfOffset::from_minutes(-300).unwrap().to_string(), "-0500");
        assert!(WcfOffset::from_minutes(24 * 60).is_none());
        assert_eq!(WcfOffset::parse("+0000"), Some(WcfOffset::UTC));
        assert_eq!(WcfOffset::parse("-0000"), Some(WcfOffset::UTC));
    }
}
