//! Arbitrary bytes through every decoder of the store's database records: none may panic,
//! and whatever decodes must re-encode to exactly the same bytes (one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dyad_store::records::check_decoders_roundtrip(data);
});
