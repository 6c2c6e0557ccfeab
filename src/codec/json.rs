//! Strict JSON for every codec: UTF-8 (an optional BOM is skipped), one value,
//! a member name at most once per object (serde_json alone keeps the last),
//! serde_json's nesting limit (128). Errors say where, never echo the input.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// What went wrong.
    pub kind: JsonErrorKind,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
}

/// The kind of a [`JsonError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonErrorKind {
    /// Not JSON (syntax, invalid UTF-8, trailing characters, numbers out of
    /// range, nesting too deep).
    Syntax,
    /// The body ends in the middle of a value.
    Truncated,
    /// An object names the same member twice.
    DuplicateMember,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            JsonErrorKind::Syntax => "the body is not valid JSON",
            JsonErrorKind::Truncated => "the body ends in the middle of a JSON value",
            JsonErrorKind::DuplicateMember => "an object names the same member twice",
        };
        write!(f, "{what} (line {}, column {})", self.line, self.column)
    }
}

impl std::error::Error for JsonError {}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses a whole body as one JSON value.
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut de).map_err(convert)?;
    de.end().map_err(convert)?;
    Ok(value)
}

/// Parses a body that must be a JSON object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Option<Map<String, Value>>, JsonError> {
    match parse(bytes)? {
        Value::Object(m) => Ok(Some(m)),
        _ => Ok(None),
    }
}

fn convert(e: serde_json::Error) -> JsonError {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Eof => JsonErrorKind::Truncated,
        // The only data errors StrictValue raises are duplicates.
        Category::Data => JsonErrorKind::DuplicateMember,
        Category::Syntax | Category::Io => JsonErrorKind::Syntax,
    };
    JsonError {
        kind,
        line: e.line(),
        column: e.column(),
    }
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate member"));
            }
            let v = map.next_value_seed(StrictValue)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_json_and_a_bom() {
        let v = parse(b"\xEF\xBB\xBF{\"a\":[1,-2,3.5,true,null,\"x\"]}").unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, -2, 3.5, true, null, "x"]}));
    }

    #[test]
    fn refuses_duplicates_at_any_depth() {
        for bad in [
            &b"{\"a\":1,\"a\":2}"[..],
            b"{\"x\":{\"a\":1,\"a\":1}}",
            b"[{\"a\":1,\"a\":1}]",
        ] {
            assert_eq!(parse(bad).unwrap_err().kind, JsonErrorKind::DuplicateMember);
        }
        // distinct names are fine, even equal ignoring case
        assert!(parse(b"{\"a\":1,\"A\":2}").is_ok());
    }

    #[test]
    fn refuses_broken_input_with_a_position() {
        let e = parse(b"{\"a\":1,}").unwrap_err();
        assert_eq!((e.kind, e.line), (JsonErrorKind::Syntax, 1));
        assert_eq!(
            parse(b"{\"a\":").unwrap_err().kind,
            JsonErrorKind::Truncated
        );
        assert_eq!(parse(b"{} {}").unwrap_err().kind, JsonErrorKind::Syntax);
        assert_eq!(parse(b"\"\xff\"").unwrap_err().kind, JsonErrorKind::Syntax);
        assert_eq!(parse(b"1e999").unwrap_err().kind, JsonErrorKind::Syntax);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err().kind,
            JsonErrorKind::Syntax
        );
        // the message says where, not what was sent
        let e = parse(b"{\"password\": hunter2}").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
