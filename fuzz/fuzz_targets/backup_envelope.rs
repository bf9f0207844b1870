//! Arbitrary bytes as a backup or certificate-export file: the envelope parser must refuse
//! them with a reason or accept exactly what it re-encodes, and never panic or allocate beyond
//! its limits. No decryption is needed to reach the parser's branches; the KDF is not run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dyad_node::backup::envelope::check_parse_round_trip(data);
});
