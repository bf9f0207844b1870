//! Arbitrary bytes fed to the decoder in arbitrary pieces, as socket reads would arrive: the
//! messages decoded must not depend on where the reads split the stream.
#![no_main]

use bytes::BytesMut;
use dyad_wire::{decode_frame, DecodeError, Message};
use libfuzzer_sys::fuzz_target;

fn decode_whole(data: &[u8]) -> (Vec<Message>, bool) {
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    loop {
        match decode_frame(&mut buf) {
            Ok(message) => out.push(message),
            Err(DecodeError::Incomplete { .. }) => return (out, false),
            Err(DecodeError::Malformed(_)) => return (out, true),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte says how many split points follow (two bytes each); the rest is the stream.
    let Some((&split_count, rest)) = input.split_first() else {
        return;
    };
    let split_bytes = (split_count as usize % 16) * 2;
    if rest.len() < split_bytes {
        return;
    }
    let (split_spec, stream) = rest.split_at(split_bytes);
    let mut cuts: Vec<usize> = split_spec
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]) as usize % (stream.len() + 1))
        .collect();
    cuts.push(stream.len());
    cuts.sort_unstable();

    let (expected, expected_malformed) = decode_whole(stream);
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    let mut malformed = false;
    let mut fed = 0;
    'feed: for cut in cuts {
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        loop {
            match decode_frame(&mut buf) {
                Ok(message) => decoded.push(message),
                Err(DecodeError::Incomplete { needed }) => {
                    assert!(needed > 0);
                    break;
                }
                Err(DecodeError::Malformed(_)) => {
                    malformed = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(decoded, expected);
    assert_eq!(malformed, expected_malformed);
});
