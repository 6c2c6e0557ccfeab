//! Media types, `Accept` and `Accept-Language`: just enough of RFC 9110 to
//! choose a codec's input and output format.

/// A parsed `Content-Type`: the lower-cased essence (`type/subtype`) and the
/// charset parameter, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentType {
    pub essence: String,
    pub charset: Option<String>,
}

impl ContentType {
    pub fn parse(header: &str) -> Self {
        let mut parts = header.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let charset = parts.find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
        });
        Self { essence, charset }
    }

    /// Whether the body can be read as UTF-8 (no charset, or a UTF-8/ASCII one).
    pub fn utf8(&self) -> bool {
        matches!(
            self.charset.as_deref(),
            None | Some("utf-8" | "utf8" | "us-ascii")
        )
    }

    pub fn is(&self, essence: &str) -> bool {
        self.essence == essence
    }
}

/// One entry of an `Accept` or `Accept-Language` header, with its weight in
/// thousandths.
fn weighted(header: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for item in header.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let mut q = 1000u16;
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = parse_q(v.trim()).unwrap_or(0);
            }
        }
        out.push((name, q));
    }
    // Stable: equal weights keep the sender's order.
    out.sort_by_key(|e| std::cmp::Reverse(e.1));
    out
}

/// `q` values: `0`, `1`, `0.xyz`, `1.000`.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1].get(i).copied().unwrap_or(0);
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The first of `wanted` (by weight, then by order in the header) that the
/// `Accept` header names explicitly with a non-zero weight; wildcards express
/// no preference and give `None`.
pub(crate) fn preferred<'a>(accept: &str, wanted: &[&'a str]) -> Option<&'a str> {
    weighted(accept)
        .into_iter()
        .filter(|(_, q)| *q > 0)
        .find_map(|(name, _)| wanted.iter().find(|w| **w == name).copied())
}

/// The primary language subtag the header prefers among `supported`.
pub(crate) fn preferred_language<'a>(header: &str, supported: &[&'a str]) -> Option<&'a str> {
    weighted(header)
        .into_iter()
        .filter(|(_, q)| *q > 0)
        .find_map(|(tag, _)| {
            let primary = tag.split('-').next().unwrap_or_default();
            supported.iter().find(|s| **s == primary).copied()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ct = ContentType::parse("Application/JSON; charset=\"UTF-8\"");
        assert!(ct.is("application/json") && ct.utf8());
        assert!(!ContentType::parse("text/xml; charset=utf-16").utf8());
        assert_eq!(ContentType::parse("").essence, "");
    }

    #[test]
    fn accept_negotiation() {
        let x = &[
            "application/xml",
            "text/xml",
            "application/json",
            "text/json",
        ][..];
        assert_eq!(preferred("application/xml", x), Some("application/xml"));
        assert_eq!(
            preferred("application/json;q=0.5, text/xml", x),
            Some("text/xml")
        );
        assert_eq!(preferred("*/*", x), None);
        assert_eq!(
            preferred("text/xml;q=0, application/json;q=0.1", x),
            Some("application/json")
        );
        assert_eq!(preferred("text/xml;q=2", x), None);
    }

    #[test]
    fn languages() {
        let s = &["es", "en"][..];
        assert_eq!(preferred_language("en-US,en;q=0.9,es;q=0.8", s), Some("en"));
        assert_eq!(preferred_language("es-ES, en;q=0.5", s), Some("es"));
        assert_eq!(preferred_language("fr, en;q=0.5", s), Some("en"));
        assert_eq!(preferred_language("fr", s), None);
        assert_eq!(preferred_language("en;q=0, es", s), Some("es"));
    }
}
