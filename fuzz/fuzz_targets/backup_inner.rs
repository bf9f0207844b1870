//! Arbitrary plaintext as the decrypted contents of a settings backup: the decoder must refuse
//! it with a reason or return contents that encode and decode to the same facts, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dyad_node::backup::contents::check_decode_round_trip(data);
});
