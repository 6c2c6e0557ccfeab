//! The SMTP mailer: `lettre` over rustls (no OpenSSL).
//!
//! Connection URLs:
//! - `smtps://[user[:password]@]host[:port]`: implicit TLS (port 465);
//! - `smtp://[user[:password]@]host[:port]`: STARTTLS, required (port
//!   587); to a loopback host STARTTLS is used when offered (a local test
//!   server or relay often offers none);
//! - `?tls=required|opportunistic|none` on `smtp://` overrides that.
//!
//! The password may come from the URL (percent-encoded) or, better, from
//! [`SmtpSettings::password`] (the CLI reads `CREDSTORE_SMTP_PASSWORD`), so
//! that it is not on a command line. Credentials are refused over a
//! connection that might not be encrypted, unless the host is loopback.
//! Server certificates are checked against Mozilla's roots (webpki-roots)
//! plus any PEM file given ([`SmtpSettings::ca_file`]).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use zeroize::Zeroizing;

use super::{MailError, Mailer, ResetMail, template};

/// How to reach the SMTP server. `Debug` shows no password.
#[derive(Clone)]
#[non_exhaustive]
pub struct SmtpSettings {
    /// The connection URL (see the module docs). It may hold a password.
    pub url: String,
    /// The `From` address, e.g. `Shop <no-reply@shop.example>`.
    pub from: String,
    /// The AUTH password, when not in the URL (the URL's wins).
    pub password: Option<Zeroizing<String>>,
    /// A PEM file of CA certificates to trust besides Mozilla's roots.
    pub ca_file: Option<PathBuf>,
    /// Connect, command and data timeout (default 10 s).
    pub timeout: Duration,
}

impl SmtpSettings {
    /// Settings for `url`, sending from `from`.
    pub fn new(url: impl Into<String>, from: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            from: from.into(),
            password: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets [`SmtpSettings::password`].
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Zeroizing::new(password.into()));
        self
    }

    /// Sets [`SmtpSettings::ca_file`].
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets [`SmtpSettings::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &redacted_url(&self.url))
            .field("from", &self.from)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why an [`SmtpMailer`] could not be made. Its text holds no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpError(String);

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SMTP settings: {}", self.0)
    }
}

impl std::error::Error for SmtpError {}

fn err(text: impl Into<String>) -> SmtpError {
    SmtpError(text.into())
}

/// The URL without user information or query (for logs and errors).
fn redacted_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// How TLS is used on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Implicit,
    StartTlsRequired,
    StartTlsIfOffered,
    None,
}

impl TlsMode {
    fn describe(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::StartTlsRequired => "STARTTLS required",
            TlsMode::StartTlsIfOffered => "STARTTLS if offered",
            TlsMode::None => "no TLS",
        }
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        // smtp:// is not a special scheme to the URL parser: an IP address
        // arrives as a domain.
        url::Host::Domain(d) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        url::Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

fn decode(part: &str, what: &str) -> Result<Zeroizing<String>, SmtpError> {
    percent_decode(part).map(Zeroizing::new).ok_or_else(|| {
        err(format!(
            "the URL's {what} is not valid percent-encoded UTF-8"
        ))
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Delivers reset mails over SMTP: a text and an HTML part (see
/// [`template`]), from the configured address to the account's stored
/// email. 4xx answers and connection failures are temporary (the courier
/// retries), 5xx answers and unusable addresses permanent.
pub struct SmtpMailer {
    transport: SmtpTransport,
    from: Mailbox,
    endpoint: String,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for `settings`. Nothing connects yet: a server that is
    /// down now is the courier's temporary failure later.
    pub fn new(settings: &SmtpSettings) -> Result<Self, SmtpError> {
        let url = url::Url::parse(&settings.url)
            .map_err(|e| err(format!("the URL does not parse ({e})")))?;
        let host = url.host().ok_or_else(|| err("the URL names no host"))?;
        let host_text = match &host {
            url::Host::Ipv6(ip) => ip.to_string(),
            other => other.to_string(),
        };
        let loopback = is_loopback(&host);
        let mut requested = None;
        for (k, v) in url.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("tls", "required") => requested = Some(TlsMode::StartTlsRequired),
                ("tls", "opportunistic") => requested = Some(TlsMode::StartTlsIfOffered),
                ("tls", "none") => requested = Some(TlsMode::None),
                (k, _) => {
                    return Err(err(format!(
                        "unknown URL parameter {k:?} (only tls=required|opportunistic|none)"
                    )));
                }
            }
        }
        let (mode, default_port) = match url.scheme() {
            "smtps" if requested.is_none() => (TlsMode::Implicit, 465),
            "smtps" => {
                return Err(err(
                    "smtps:// takes no tls= parameter (it is TLS from the start)",
                ));
            }
            "smtp" => (
                requested.unwrap_or(if loopback {
                    TlsMode::StartTlsIfOffered
                } else {
                    TlsMode::StartTlsRequired
                }),
                587,
            ),
            other => {
                return Err(err(format!(
                    "unknown scheme {other:?} (use smtp:// or smtps://)"
                )));
            }
        };
        let port = url.port().unwrap_or(default_port);
        let user = decode(url.username(), "user name")?;
        let password = match url.password() {
            Some(p) => Some(decode(p, "password")?),
            None => settings.password.clone(),
        };
        let credentials = match (user.is_empty(), password) {
            (true, None) => None,
            (true, Some(_)) => {
                return Err(err(
                    "a password is given but the URL names no user (smtp://USER@host)",
                ));
            }
            (false, None) => {
                return Err(err(
                    "the URL names a user but no password is given (CREDSTORE_SMTP_PASSWORD)",
                ));
            }
            (false, Some(p)) => Some(Credentials::new(user.to_string(), p.to_string())),
        };
        let encrypted = matches!(mode, TlsMode::Implicit | TlsMode::StartTlsRequired);
        if credentials.is_some() && !encrypted && !loopback {
            return Err(err(format!(
                "refusing to send a password over a connection that may not be encrypted ({}) to {host_text}: use smtps:// or tls=required",
                mode.describe()
            )));
        }
        let tls = if mode == TlsMode::None {
            Tls::None
        } else {
            let mut b = TlsParameters::builder(host_text.clone());
            if let Some(path) = &settings.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    err(format!(
                        "{} holds no usable certificate ({e})",
                        path.display()
                    ))
                })?;
                b = b.add_root_certificate(cert);
            }
            let params = b
                .build_rustls()
                .map_err(|e| err(format!("TLS setup failed ({e})")))?;
            match mode {
                TlsMode::Implicit => Tls::Wrapper(params),
                TlsMode::StartTlsRequired => Tls::Required(params),
                _ => Tls::Opportunistic(params),
            }
        };
        let mut builder = SmtpTransport::builder_dangerous(host_text.as_str())
            .port(port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let Some(c) = credentials {
            builder = builder.credentials(c);
        }
        let from: Mailbox = settings.from.parse().map_err(|e| {
            err(format!(
                "the From address {:?} does not parse ({e})",
                settings.from
            ))
        })?;
        Ok(Self {
            transport: builder.build(),
            from,
            endpoint: format!(
                "{}://{host_text}:{port} ({}{})",
                url.scheme(),
                mode.describe(),
                if url.username().is_empty() {
                    ""
                } else {
                    ", AUTH"
                }
            ),
        })
    }

    /// Where mail goes, without credentials (for logs).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The message for `mail`: multipart/alternative, text then HTML.
    fn message(&self, mail: &ResetMail) -> Result<Message, MailError> {
        let to: Mailbox = mail
            .to()
            .parse()
            .map_err(|_| MailError::permanent("the recipient address cannot be used in SMTP"))?;
        let rendered = template::render(mail);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject())
            .multipart(MultiPart::alternative_plain_html(
                rendered.text_exposing_token().to_owned(),
                rendered.html_exposing_token().to_owned(),
            ))
            .map_err(|e| MailError::permanent(format!("the message cannot be built ({e})")))
    }
}

/// An SMTP failure as a [`MailError`]: its kind, reply code and the
/// server's words (a reply never carries the message, which holds the
/// token).
fn classify(e: &lettre::transport::smtp::Error) -> MailError {
    let code = e.status().map(|c| format!(" {c}")).unwrap_or_default();
    if e.is_permanent() {
        MailError::permanent(format!("SMTP permanent failure{code}: {e}"))
    } else if e.is_transient() {
        MailError::new(format!("SMTP temporary failure{code}: {e}"))
    } else if e.is_timeout() {
        MailError::new("SMTP timeout")
    } else if e.is_tls() {
        MailError::new(format!("SMTP TLS failure: {e}"))
    } else {
        MailError::new(format!("SMTP connection failure: {e}"))
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: &ResetMail) -> Result<(), MailError> {
        let message = self.message(mail)?;
        self.transport
            .send(&message)
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(url: &str) -> Result<SmtpMailer, SmtpError> {
        SmtpMailer::new(&SmtpSettings::new(url, "Shop <no-reply@shop.example>"))
    }

    #[test]
    fn urls_and_tls_modes() {
        let m = make("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(m.endpoint(), "smtp://127.0.0.1:2525 (STARTTLS if offered)");
        let m = make("smtp://mail.example").unwrap();
        assert_eq!(m.endpoint(), "smtp://mail.example:587 (STARTTLS required)");
        let m = make("smtps://user:p%40ss@mail.example").unwrap();
        assert_eq!(
            m.endpoint(),
            "smtps://mail.example:465 (implicit TLS, AUTH)"
        );
        let m = make("smtp://mail.example:25?tls=none").unwrap();
        assert_eq!(m.endpoint(), "smtp://mail.example:25 (no TLS)");
        for bad in [
            "http://mail.example",
            "smtp://",
            "smtps://mail.example?tls=none",
            "smtp://mail.example?foo=bar",
            "smtp://user@mail.example",
            "smtp://user:pw@mail.example?tls=opportunistic",
            "smtp://user:pw@mail.example?tls=none",
        ] {
            assert!(make(bad).is_err(), "{bad}");
        }
        // Loopback may authenticate without TLS (a local relay).
        assert!(make("smtp://user:pw@127.0.0.1:2525?tls=none").is_ok());
        assert!(make("smtp://user:pw@localhost:2525?tls=opportunistic").is_ok());
        assert!(make("smtp://user:pw@[::1]:2525?tls=none").is_ok());
        // A password from the settings, not the URL.
        let s = SmtpSettings::new("smtps://user@mail.example", "a@b.co").with_password("pw");
        assert!(SmtpMailer::new(&s).is_ok());
        assert!(make("smtp://mail.example").is_ok());
        assert!(
            SmtpMailer::new(&SmtpSettings::new("smtp://mail.example", "not an address")).is_err()
        );
    }

    #[test]
    fn no_password_in_debug_or_errors() {
        let s = SmtpSettings::new("smtps://user:hunter2@mail.example", "a@b.co")
            .with_password("hunter3");
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && !d.contains("hunter3"), "{d}");
        let e = make("smtp://user:hunter2@mail.example?tls=none").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let m = make("smtps://user:hunter2@mail.example").unwrap();
        assert!(!format!("{m:?}").contains("hunter2"));
    }
}
