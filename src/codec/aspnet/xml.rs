//! The XML side of the ASP.NET codec: a structural pre-scan with quick-xml's
//! reader (no DTD, one `ChangePasswordRequest` root, bounded depth, no
//! undeclared entity), then quick-xml's serde deserializer for the members.

use std::fmt;

use quick_xml::Reader;
use quick_xml::events::Event;
use serde::{Deserialize, Serialize};

use super::{
    ChangePasswordRequest, ChangePasswordResponse, DecodeError, Problem, User, XSD_NAMESPACE,
    XSI_NAMESPACE, err, parse_salt,
};
use crate::codec::SecretText;

const ROOT: &str = "ChangePasswordRequest";
const MAX_DEPTH: usize = 32;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why an XML body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmlProblem {
    /// Not UTF-8.
    NotUtf8,
    /// A `<!DOCTYPE>` (and with it any entity declaration): refused unread.
    Dtd,
    /// A reference to an entity other than the five predefined ones.
    UndeclaredEntity,
    /// The root element is not `ChangePasswordRequest`, or there is none,
    /// or more than one.
    WrongRoot,
    /// Elements nested deeper than 32.
    TooDeep,
    /// Not well-formed, or not the request's structure.
    Malformed,
}

impl fmt::Display for XmlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XmlProblem::NotUtf8 => "the XML body is not UTF-8",
            XmlProblem::Dtd => "a DTD is not allowed",
            XmlProblem::UndeclaredEntity => "the XML body refers to an undeclared entity",
            XmlProblem::WrongRoot => {
                "the XML body must have one ChangePasswordRequest root element"
            }
            XmlProblem::TooDeep => "the XML body is nested too deeply",
            XmlProblem::Malformed => "the body is not a well-formed ChangePasswordRequest",
        })
    }
}

fn fail(p: XmlProblem) -> DecodeError {
    err("body", Problem::Xml(p))
}

/// Checks the document's structure before anything is deserialized.
fn prescan(text: &str) -> Result<(), XmlProblem> {
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        let event = reader.read_event().map_err(|_| XmlProblem::Malformed)?;
        match event {
            Event::DocType(_) => return Err(XmlProblem::Dtd),
            Event::Start(ref e) | Event::Empty(ref e) => {
                if depth == 0 {
                    roots += 1;
                    if roots > 1 || e.local_name().as_ref() != ROOT {
                        return Err(XmlProblem::WrongRoot);
                    }
                }
                for a in e.attributes() {
                    a.map_err(|_| XmlProblem::Malformed)?;
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(XmlProblem::TooDeep);
                    }
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(ref t) if depth == 0 && !t.bytes().all(|b| b.is_ascii_whitespace()) => {
                return Err(XmlProblem::Malformed);
            }
            Event::CData(_) if depth == 0 => return Err(XmlProblem::Malformed),
            Event::GeneralRef(ref r) => {
                if depth == 0 {
                    return Err(XmlProblem::Malformed);
                }
                if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(_)) => {}
                        _ => return Err(XmlProblem::Malformed),
                    }
                } else if !matches!(r.as_ref(), "lt" | "gt" | "amp" | "apos" | "quot") {
                    return Err(XmlProblem::UndeclaredEntity);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if roots != 1 {
        return Err(XmlProblem::WrongRoot);
    }
    if depth != 0 {
        return Err(XmlProblem::Malformed);
    }
    Ok(())
}

#[derive(Deserialize)]
struct XmlRequest {
    #[serde(rename = "@UserName", default)]
    user_name: Option<String>,
    #[serde(rename = "@Salt", default)]
    salt: Option<String>,
    #[serde(rename = "@Digest", default)]
    digest: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<XmlUser>,
    #[serde(rename = "UserNewPassword", default)]
    user_new_password: Option<String>,
}

#[derive(Deserialize)]
struct XmlUser {
    #[serde(rename = "UserName", default)]
    user_name: Option<String>,
    #[serde(rename = "Email", default)]
    email: Option<String>,
    #[serde(rename = "Key", default)]
    key: Option<String>,
}

fn required(v: Option<String>, field: &'static str) -> Result<String, DecodeError> {
    v.ok_or(err(field, Problem::Missing))
}

pub(super) fn decode(body: &[u8]) -> Result<ChangePasswordRequest, DecodeError> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|_| fail(XmlProblem::NotUtf8))?;
    prescan(text).map_err(fail)?;
    let raw: XmlRequest = quick_xml::de::from_str(text).map_err(|e| match e {
        quick_xml::de::DeError::Custom(m) if m.starts_with("duplicate field") => {
            err("body", Problem::Duplicate)
        }
        _ => fail(XmlProblem::Malformed),
    })?;
    let user = raw.user.ok_or(err("User", Problem::Missing))?;
    Ok(ChangePasswordRequest {
        user: User {
            user_name: required(user.user_name, "User.UserName")?,
            email: required(user.email, "User.Email")?,
            key: SecretText::new(required(user.key, "User.Key")?),
        },
        user_new_password: SecretText::new(required(raw.user_new_password, "UserNewPassword")?),
        user_name: required(raw.user_name, "UserName")?,
        salt: parse_salt(&required(raw.salt, "Salt")?)?,
        digest: required(raw.digest, "Digest")?,
    })
}

/// Escapes text for element content; `\r` as a reference so that it survives
/// line-end normalisation.
fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// Escapes an attribute value; whitespace other than spaces as references
/// so that it survives attribute-value normalisation.
fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            c => escape_text(c.encode_utf8(&mut [0u8; 4]), out),
        }
    }
}

pub(super) fn encode_request(req: &ChangePasswordRequest) -> Vec<u8> {
    let mut s = String::new();
    s.push_str(&format!(
        "<ChangePasswordRequest xmlns:xsd=\"{XSD_NAMESPACE}\" xmlns:xsi=\"{XSI_NAMESPACE}\""
    ));
    for (name, value) in [
        ("UserName", req.user_name.as_str()),
        ("Salt", &req.salt.to_string()),
        ("Digest", req.digest.as_str()),
    ] {
        s.push_str(&format!(" {name}=\""));
        escape_attr(value, &mut s);
        s.push('"');
    }
    s.push_str(">\n  <User>\n");
    for (name, value) in [
        ("UserName", req.user.user_name.as_str()),
        ("Email", req.user.email.as_str()),
        ("Key", req.user.key.expose_secret()),
    ] {
        s.push_str(&format!("    <{name}>"));
        escape_text(value, &mut s);
        s.push_str(&format!("</{name}>\n"));
    }
    s.push_str("  </User>\n  <UserNewPassword>");
    escape_text(req.user_new_password.expose_secret(), &mut s);
    s.push_str("</UserNewPassword>\n</ChangePasswordRequest>");
    let bytes = s.as_bytes().to_vec();
    zeroize::Zeroize::zeroize(&mut s);
    bytes
}

#[derive(Serialize)]
#[serde(rename = "ChangePasswordResponse")]
struct XmlResponse<'a> {
    #[serde(rename = "@xmlns:xsd")]
    xsd: &'static str,
    #[serde(rename = "@xmlns:xsi")]
    xsi: &'static str,
    #[serde(rename = "Success")]
    success: bool,
    #[serde(rename = "Message")]
    message: &'a str,
    #[serde(rename = "Extra1", skip_serializing_if = "Option::is_none")]
    extra1: Option<&'a str>,
    #[serde(rename = "Extra2", skip_serializing_if = "Option::is_none")]
    extra2: Option<&'a str>,
    #[serde(rename = "Extra3", skip_serializing_if = "Option::is_none")]
    extra3: Option<&'a str>,
}

pub(super) fn encode_response(r: &ChangePasswordResponse) -> Vec<u8> {
    let body = XmlResponse {
        xsd: XSD_NAMESPACE,
        xsi: XSI_NAMESPACE,
        success: r.success,
        message: &r.message,
        extra1: r.extra1.as_deref(),
        extra2: r.extra2.as_deref(),
        extra3: r.extra3.as_deref(),
    };
    let mut out = String::new();
    let mut ser = quick_xml::se::Serializer::new(&mut out);
    ser.indent(' ', 2);
    match body.serialize(ser) {
        Ok(_) => out.into_bytes(),
        // Plain data always serializes; keep the shape if it ever did not.
        Err(_) => format!(
            "<ChangePasswordResponse xmlns:xsd=\"{XSD_NAMESPACE}\" xmlns:xsi=\"{XSI_NAMESPACE}\">\
             <Success>false</Success><Message>Internal error</Message></ChangePasswordResponse>"
        )
        .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 004's XML sample, exactly as written.
    const SEED_XML: &str = r#"<ChangePasswordRequest xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" UserName="sample string 2" Salt="3" Digest="sample string 4">
  <User>
    <UserName>sample string 1</UserName>
    <Email>sample string 2</Email>
    <Key>sample string 3</Key>
  </User>
  <UserNewPassword>sample string 1</UserNewPassword>
</ChangePasswordRequest>"#;

    #[test]
    fn parses_the_seed_sample_as_written() {
        let r = decode(SEED_XML.as_bytes()).unwrap();
        assert_eq!(r.user_name, "sample string 2");
        assert_eq!(r.salt, 3);
        assert_eq!(r.digest, "sample string 4");
        assert_eq!(r.user.user_name, "sample string 1");
        assert_eq!(r.user.email, "sample string 2");
        assert_eq!(r.user.key.expose_secret(), "sample string 3");
        assert_eq!(r.user_new_password.expose_secret(), "sample string 1");
        let with_bom = [BOM, SEED_XML.as_bytes()].concat();
        assert_eq!(decode(&with_bom).unwrap(), r);
        let with_decl = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{SEED_XML}");
        assert_eq!(decode(with_decl.as_bytes()).unwrap(), r);
    }

    #[test]
    fn xsi_nil_is_null_and_order_is_free() {
        let nil = SEED_XML.replace(
            "<UserNewPassword>sample string 1</UserNewPassword>",
            "<UserNewPassword xsi:nil=\"true\" />",
        );
        let e = decode(nil.as_bytes()).unwrap_err();
        assert_eq!((e.field, e.problem), ("UserNewPassword", Problem::Missing));
        let reordered = r#"<ChangePasswordRequest Digest="d" Salt=" 123456789 " UserName="396"><Unknown><a><b/></a></Unknown><UserNewPassword>p &amp; q</UserNewPassword><User><Key>k</Key><Email>e</Email><UserName>u</UserName></User></ChangePasswordRequest>"#;
        let r = decode(reordered.as_bytes()).unwrap();
        assert_eq!((r.salt, r.user.email.as_str()), (123456789, "e"));
        assert_eq!(r.user_new_password.expose_secret(), "p & q");
    }

    #[test]
    fn refuses_dtds_and_entities_without_expanding() {
        let xxe = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
            SEED_XML.replace("sample string 3", "&x;")
        );
        assert_eq!(
            decode(xxe.as_bytes()).unwrap_err().problem,
            Problem::Xml(XmlProblem::Dtd)
        );
        let bomb = "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;\">]><ChangePasswordRequest/>";
        assert_eq!(
            decode(bomb.as_bytes()).unwrap_err().problem,
            Problem::Xml(XmlProblem::Dtd)
        );
        let undeclared = SEED_XML.replace("sample string 3", "&x;");
        assert_eq!(
            decode(undeclared.as_bytes()).unwrap_err().problem,
            Problem::Xml(XmlProblem::UndeclaredEntity)
        );
    }

    #[test]
    fn refuses_other_structures() {
        for (doc, p) in [
            ("<Other/>", XmlProblem::WrongRoot),
            ("", XmlProblem::WrongRoot),
            (
                "<ChangePasswordRequest/><ChangePasswordRequest/>",
                XmlProblem::WrongRoot,
            ),
            ("<ChangePasswordRequest>", XmlProblem::Malformed),
            ("<ChangePasswordRequest/>junk", XmlProblem::Malformed),
            (
                "<ChangePasswordRequest a=\"1\" a=\"2\"/>",
                XmlProblem::Malformed,
            ),
        ] {
            assert_eq!(
                decode(doc.as_bytes()).unwrap_err().problem,
                Problem::Xml(p),
                "{doc}"
            );
        }
        let deep = format!(
            "<ChangePasswordRequest>{}{}</ChangePasswordRequest>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert_eq!(
            decode(deep.as_bytes()).unwrap_err().problem,
            Problem::Xml(XmlProblem::TooDeep)
        );
        assert_eq!(
            decode(b"<ChangePasswordRequest>\xff</ChangePasswordRequest>")
                .unwrap_err()
                .problem,
            Problem::Xml(XmlProblem::NotUtf8)
        );
        let twice = SEED_XML.replace(
            "<UserNewPassword>",
            "<UserNewPassword>a</UserNewPassword><UserNewPassword>",
        );
        assert_eq!(
            decode(twice.as_bytes()).unwrap_err().problem,
            Problem::Duplicate
        );
    }

    #[test]
    fn awkward_text_round_trips() {
        let mut r = decode(SEED_XML.as_bytes()).unwrap();
        r.user_new_password = SecretText::new("  a\r\nb\t<&>\"' ");
        r.digest = "x\ty\nz\r\"<&".into();
        assert_eq!(decode(&encode_request(&r)).unwrap(), r);
    }
}
