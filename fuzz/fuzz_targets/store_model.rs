#![no_main]
//! The whole store against a plain model, crashes included (see
//! `credstore::internal::store_model`): long runs of the CI proptest.

libfuzzer_sys::fuzz_target!(|data: &[u8]| credstore::internal::store_model(data));
