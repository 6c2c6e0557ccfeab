#![no_main]
//! The sled backend's packed blocks (the email index and the event log of
//! format version 2 stores) read from arbitrary bytes: never a panic; a
//! block that decodes keeps its rows through encoding and cutting.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    credstore::internal::packed_block(data);
});
