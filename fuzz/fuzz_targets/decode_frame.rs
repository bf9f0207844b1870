//! Arbitrary bytes as one read buffer: the decoder must never panic, and whatever it accepts
//! must re-encode to exactly the bytes it consumed.
#![no_main]

use bytes::BytesMut;
use dyad_wire::{decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match decode_frame(&mut buf) {
            Ok(message) => {
                let consumed = before.len() - buf.len();
                let mut again = BytesMut::new();
                encode_frame(&message, &mut again).expect("a decoded message is encodable");
                assert_eq!(&again[..], &before[..consumed], "decode/encode must round-trip");
            }
            Err(_) => {
                assert_eq!(buf, before, "a failed decode must not consume bytes");
                break;
            }
        }
    }
});
