#![no_main]
//! The reset token and reset id parsers take arbitrary bytes: they accept
//! exactly the documented shape, return it unchanged, and never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let alnum = |len: usize| data.len() == len && data.iter().all(u8::is_ascii_alphanumeric);
    match credstore::parse_token(data) {
        Ok(token) => {
            assert!(alnum(64));
            assert_eq!(token.expose_secret().as_bytes(), data);
        }
        Err(e) => {
            assert!(!alnum(64));
            assert_eq!(e, credstore::InputError::MalformedToken);
        }
    }
    match credstore::parse_reset_id(data) {
        Ok(id) => assert!(alnum(10) && id.as_bytes() == data),
        Err(e) => {
            assert!(!alnum(10));
            assert_eq!(e, credstore::InputError::MalformedResetId);
        }
    }
});
