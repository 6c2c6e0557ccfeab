//! SkyERP's texts: the seed's Spanish messages and Laravel's Spanish
//! validation wording, with English twins.

use super::super::media;

pub use crate::model::Lang;

impl Lang {
    /// English when `Accept-Language` prefers `en` over `es`; else Spanish.
    pub fn from_accept_language(header: Option<&str>) -> Self {
        match header.and_then(|h| media::preferred_language(h, &["es", "en"])) {
            Some("en") => Lang::En,
            _ => Lang::Es,
        }
    }
}

/// Envelope messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Msg {
    Sent,
    SendFailed,
    TokenValid,
    TokenInvalid,
    Changed,
    ChangeFailed,
    InvalidUpdate,
    InvalidRequest,
    ShopNotFound,
    TooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    Internal,
}

impl Msg {
    pub fn text(self, lang: Lang) -> &'static str {
        use Lang::*;
        match (self, lang) {
            (Msg::Sent, Es) => "Enviado email para restablecer la clave de acceso",
            (Msg::Sent, En) => "Password reset email sent",
            (Msg::SendFailed, Es) => "Fallo al enviar email para restablecer la clave de acceso",
            (Msg::SendFailed, En) => "Failed to send the password reset email",
            (Msg::TokenValid, Es) => "Token válido",
            (Msg::TokenValid, En) => "Valid token",
            (Msg::TokenInvalid, Es) => "Token inválido (no encontrado o caducado)",
            (Msg::TokenInvalid, En) => "Invalid token (not found or expired)",
            (Msg::Changed, Es) => "Contraseña actualizada",
            (Msg::Changed, En) => "Password updated",
            (Msg::ChangeFailed, Es) => "Error cambiando contraseña de la cuenta",
            (Msg::ChangeFailed, En) => "Error changing the account password",
            (Msg::InvalidUpdate, Es) => "Datos no válidos para guardar la nueva contraseña",
            (Msg::InvalidUpdate, En) => "Invalid data to save the new password",
            (Msg::InvalidRequest, Es) => "Datos no válidos para restablecer la clave de acceso",
            (Msg::InvalidRequest, En) => "Invalid data to reset the password",
            (Msg::ShopNotFound, Es) => "Tienda no encontrada",
            (Msg::ShopNotFound, En) => "Shop not found",
            (Msg::TooLarge, Es) => "La petición es demasiado grande (máximo 65536 bytes)",
            (Msg::TooLarge, En) => "The request is too large (at most 65536 bytes)",
            (Msg::UnsupportedMediaType, Es) => {
                "Tipo de contenido no admitido (use application/json o \
                 application/x-www-form-urlencoded)"
            }
            (Msg::UnsupportedMediaType, En) => {
                "Unsupported content type (use application/json or \
                 application/x-www-form-urlencoded)"
            }
            (Msg::MethodNotAllowed, Es) => "Método no permitido",
            (Msg::MethodNotAllowed, En) => "Method not allowed",
            (Msg::Internal, Es) => "Error interno del servidor",
            (Msg::Internal, En) => "Internal server error",
        }
    }
}

/// Laravel validation rules, worded as Laravel's `es` and `en` language files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    Required,
    String,
    Email,
    Exists,
    Min,
    Max,
    Same,
    Invalid,
    Body,
}

impl Rule {
    /// The message for `field`; `n` is the limit of `Min`/`Max`.
    pub fn text(self, lang: Lang, field: &str, n: usize) -> String {
        use Lang::*;
        match (self, lang) {
            (Rule::Required, Es) => format!("El campo {field} es obligatorio."),
            (Rule::Required, En) => format!("The {field} field is required."),
            (Rule::String, Es) => format!("El campo {field} debe ser una cadena de caracteres."),
            (Rule::String, En) => format!("The {field} must be a string."),
            (Rule::Email, Es) => format!("{field} no es un correo válido."),
            (Rule::Email, En) => format!("The {field} must be a valid email address."),
            (Rule::Exists, Es) => format!("El campo {field} seleccionado es inválido."),
            (Rule::Exists, En) => format!("The selected {field} is invalid."),
            (Rule::Min, Es) => format!("{field} debe contener al menos {n} caracteres."),
            (Rule::Min, En) => format!("The {field} must be at least {n} characters."),
            (Rule::Max, Es) => format!("{field} no debe ser mayor que {n} caracteres."),
            (Rule::Max, En) => format!("The {field} must not be greater than {n} characters."),
            (Rule::Same, Es) => format!("{field} y password deben coincidir."),
            (Rule::Same, En) => format!("The {field} and password must match."),
            (Rule::Invalid, Es) => format!("El campo {field} contiene caracteres no válidos."),
            (Rule::Invalid, En) => format!("The {field} contains invalid characters."),
            (Rule::Body, Es) => {
                "El cuerpo de la petición no es JSON ni un formulario válido.".to_owned()
            }
            (Rule::Body, En) => {
                "The request body is neither valid JSON nor a valid form.".to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_wording() {
        assert_eq!(
            Rule::Required.text(Lang::Es, "email", 0),
            "El campo email es obligatorio."
        );
        assert_eq!(
            Rule::Email.text(Lang::Es, "email", 0),
            "email no es un correo válido."
        );
        assert_eq!(
            Rule::Exists.text(Lang::Es, "email", 0),
            "El campo email seleccionado es inválido."
        );
        assert_eq!(
            Rule::Min.text(Lang::Es, "password", 8),
            "password debe contener al menos 8 caracteres."
        );
        assert_eq!(
            Rule::Max.text(Lang::Es, "password", 255),
            "password no debe ser mayor que 255 caracteres."
        );
        assert_eq!(
            Rule::Same.text(Lang::Es, "password2", 0),
            "password2 y password deben coincidir."
        );
        assert_eq!(
            Rule::Required.text(Lang::Es, "token", 0),
            "El campo token es obligatorio."
        );
    }

    #[test]
    fn language_choice() {
        assert_eq!(Lang::from_accept_language(None), Lang::Es);
        assert_eq!(Lang::from_accept_language(Some("en-GB,en;q=0.8")), Lang::En);
        assert_eq!(Lang::from_accept_language(Some("es-ES,en;q=0.9")), Lang::Es);
        assert_eq!(Lang::from_accept_language(Some("de")), Lang::Es);
    }
}
