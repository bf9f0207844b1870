//! The one hex codec: lowercase on the way out, either case on the way in, every length checked.

/// Lowercase hex digits of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// The bytes `text` spells in hex (an even number of hex digits).
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("an odd number ({}) of hex digits", text.len()));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => Ok(high << 4 | low),
            _ => Err("a character that is not a hex digit".to_string()),
        })
        .collect()
}

/// Exactly `N` bytes spelled in hex.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], String> {
    if text.len() != N * 2 {
        return Err(format!(
            "expected {} hex digits, found {}",
            N * 2,
            text.len()
        ));
    }
    let bytes = decode(text)?;
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes);
    Ok(out)
}

fn digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_text_is_refused() {
        assert!(decode("abc").is_err());
        assert!(decode("zz").is_err());
        assert!(decode_array::<2>("abcdef").is_err());
        assert_eq!(decode("AbCd").expect("either case"), vec![0xab, 0xcd]);
    }

    proptest! {
        #[test]
        fn encoding_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = encode(&bytes);
            prop_assert_eq!(text.len(), bytes.len() * 2);
            prop_assert_eq!(decode(&text).expect("own output decodes"), bytes);
        }
    }
}
