#![no_main]
//! Decodes arbitrary bytes; whatever is accepted must re-encode and decode
//! to the same request (see `credstore::internal::commerce_layer_request`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| credstore::internal::commerce_layer_request(data));
