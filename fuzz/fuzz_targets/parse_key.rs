//! Arbitrary text as an inter-appliance key (what an operator pastes into `dyad key set`, or a
//! key file's content): parsing must never panic, and an accepted key must print back to a text
//! that parses to the same key.
#![no_main]

use dyad_node::transport::InterApplianceKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = InterApplianceKey::parse(text) {
        let again = InterApplianceKey::parse(&key.reveal_printable())
            .expect("a key's own printable form parses");
        assert_eq!(again, key, "parse/print must round-trip");
    }
});
