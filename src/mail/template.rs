//! The reset mail's text: a subject, a plain-text part and an HTML part, in
//! Spanish or English ([`crate::Lang`], from the request's
//! `Accept-Language`), with the link and the time the token expires (UTC).

use std::fmt;

use zeroize::Zeroizing;

use super::ResetMail;
use crate::model::{Lang, Timestamp};

/// A rendered reset mail. The parts contain the link (and so the token):
/// `Debug` shows the subject only, and the parts are zeroized on drop.
pub struct RenderedMail {
    subject: &'static str,
    text: Zeroizing<String>,
    html: Zeroizing<String>,
}

impl RenderedMail {
    /// The subject line.
    pub fn subject(&self) -> &str {
        self.subject
    }

    /// The plain-text part (it contains the link: treat it as secret).
    pub fn text_exposing_token(&self) -> &str {
        &self.text
    }

    /// The HTML part (it contains the link: treat it as secret).
    pub fn html_exposing_token(&self) -> &str {
        &self.html
    }
}

impl fmt::Debug for RenderedMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedMail")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

struct Words {
    subject: &'static str,
    greeting: &'static str,
    asked: &'static str,
    follow: &'static str,
    button: &'static str,
    expires: &'static str,
    once: &'static str,
    ignore: &'static str,
}

fn words(lang: Lang) -> Words {
    match lang {
        Lang::Es => Words {
            subject: "Restablecer la clave de acceso",
            greeting: "Hola:",
            asked: "Hemos recibido una solicitud para restablecer la clave de acceso de la cuenta",
            follow: "Para elegir una clave nueva, abra este enlace:",
            button: "Elegir una clave nueva",
            expires: "El enlace caduca el",
            once: "y solo puede usarse una vez.",
            ignore: "Si no ha solicitado este cambio, ignore este mensaje: su clave actual sigue siendo válida.",
        },
        Lang::En => Words {
            subject: "Reset your password",
            greeting: "Hello,",
            asked: "We received a request to reset the password of the account",
            follow: "To choose a new password, open this link:",
            button: "Choose a new password",
            expires: "The link expires on",
            once: "and works only once.",
            ignore: "If you did not ask for this, ignore this message: your current password still works.",
        },
    }
}

/// `2026-01-01 01:00 UTC`.
fn expiry_text(t: Timestamp) -> String {
    let nanos = i128::from(t.as_millis()) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
            t.format(&fmt).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// Escapes text for HTML content and double-quoted attributes.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders `mail` in its language.
pub fn render(mail: &ResetMail) -> RenderedMail {
    let w = words(mail.lang());
    let link = mail.link_exposing_token();
    let expires = expiry_text(mail.expires_at());
    let to = mail.to();
    let text = format!(
        "{greeting}\n\n{asked} {to}.\n\n{follow}\n\n{link}\n\n{expires_words} {expires} {once}\n\n{ignore}\n",
        greeting = w.greeting,
        asked = w.asked,
        follow = w.follow,
        expires_words = w.expires,
        once = w.once,
        ignore = w.ignore,
    );
    let (elink, eto) = (Zeroizing::new(html_escape(link)), html_escape(to));
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head><meta charset=\"utf-8\"><title>{subject}</title></head>\n\
         <body>\n<p>{greeting}</p>\n<p>{asked} <strong>{eto}</strong>.</p>\n<p>{follow}</p>\n\
         <p><a href=\"{elink}\">{button}</a></p>\n<p><a href=\"{elink}\">{elink}</a></p>\n\
         <p>{expires_words} {expires} {once}</p>\n<p>{ignore}</p>\n</body>\n</html>\n",
        lang = mail.lang().locale(),
        subject = w.subject,
        greeting = w.greeting,
        asked = w.asked,
        follow = w.follow,
        elink = elink.as_str(),
        button = w.button,
        expires_words = w.expires,
        once = w.once,
        ignore = w.ignore,
    );
    RenderedMail {
        subject: w.subject,
        text: Zeroizing::new(text),
        html: Zeroizing::new(html),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResetToken;

    fn mail(lang: Lang) -> (ResetMail, String) {
        let token = ResetToken::generate().unwrap();
        let text = token.expose_secret().to_owned();
        let link = format!("https://shop.example/r?t={text}&x=<1>");
        let m = ResetMail::new(
            "John.Doe@Email.com",
            token,
            "xYZkjABcde",
            Timestamp(1_767_229_200_000),
            link,
        )
        .with_lang(lang);
        (m, text)
    }

    #[test]
    fn spanish_and_english_with_link_and_expiry() {
        let (es, token) = mail(Lang::Es);
        let r = render(&es);
        assert_eq!(r.subject(), "Restablecer la clave de acceso");
        let text = r.text_exposing_token();
        assert!(text.contains(&format!("https://shop.example/r?t={token}&x=<1>")));
        assert!(text.contains("El enlace caduca el 2026-01-01 01:00 UTC"));
        assert!(text.contains("John.Doe@Email.com"));
        let html = r.html_exposing_token();
        assert!(html.contains(&format!(
            "href=\"https://shop.example/r?t={token}&amp;x=&lt;1&gt;\""
        )));
        assert!(html.contains("lang=\"es\""));
        assert!(!format!("{r:?}").contains(&token));

        let (en, _) = mail(Lang::En);
        let r = render(&en);
        assert_eq!(r.subject(), "Reset your password");
        assert!(
            r.text_exposing_token()
                .contains("The link expires on 2026-01-01 01:00 UTC")
        );
        assert!(r.html_exposing_token().contains("lang=\"en\""));
    }
}
