#![no_main]
//! Decodes arbitrary bytes; whatever is accepted must re-encode and decode
//! to the same request (see `credstore::internal::wcf_date`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| credstore::internal::wcf_date(data));
