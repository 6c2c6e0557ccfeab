#![no_main]
//! Arbitrary requests (method, path, headers, body) through the whole
//! gateway over a store with the demo parties (see
//! `credstore::internal::gateway_request`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| credstore::internal::gateway_request(data));
