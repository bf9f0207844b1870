//! The inter-appliance pre-shared key: making one, writing it down, reading it back, and
//! showing operators a fingerprint they can compare without revealing the key.
//!
//! Only machine-generated 256-bit keys are accepted. An operator-chosen passphrase would have to
//! be stretched with a slow KDF to resist offline guessing (an observer of one handshake can test
//! guesses against the key proof), and even then a short passphrase stays guessable; refusing
//! everything but the generated form removes the problem instead of slowing it down. The text
//! form carries a checksum so that a typo made while copying the key from one appliance to the
//! other is caught at `key set`, not later as a puzzling key mismatch. See `docs/security.md`.

use std::fmt;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

use super::files::{self, FileError, SECRET_FILE_MODE};

/// Length of the key, in bytes (256 bits).
pub const KEY_BYTES: usize = 32;

/// Prefix of the printable form; the `1` is the format version.
pub const KEY_TEXT_PREFIX: &str = "dyad-psk-1:";

/// Longest key text we look at; anything longer is refused before it is parsed.
pub const MAX_KEY_TEXT_BYTES: usize = 256;

/// Bytes of checksum appended to the key in its printable form.
const CHECKSUM_BYTES: usize = 4;

/// Characters of base32 in the printable form: 36 bytes = 288 bits = 57 full characters plus one
/// carrying the last 3 bits.
const KEY_TEXT_CHARS: usize = ((KEY_BYTES + CHECKSUM_BYTES) * 8).div_ceil(5);

/// Characters per dash-separated group in the printable form, for reading aloud and comparing.
const GROUP_CHARS: usize = 5;

/// A key whose bytes take fewer distinct values than this is refused as not random. A uniformly
/// random 32-byte key has about 30 distinct values; the chance that one has fewer than 16 is far
/// below 2^-64.
const MIN_DISTINCT_BYTE_VALUES: usize = 16;

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

// Domain separation: each use of the key derives its own subkey, so no two uses can be confused
// and none of them reveals the key.
const CHECKSUM_CONTEXT: &str = "dyad 2026-11 inter-appliance key text checksum v1";
const FINGERPRINT_CONTEXT: &str = "dyad 2026-11 inter-appliance key fingerprint v1";
const PROOF_CONTEXT: &str = "dyad 2026-11 inter-appliance key proof mac key v1";

/// Bytes of the keyed hash shown as the fingerprint (64 bits: ample to tell two keys apart by
/// eye, and a fingerprint reveals nothing usable about the key).
pub const FINGERPRINT_BYTES: usize = 8;

/// The inter-appliance pre-shared key.
///
/// It has no `Display`, and its `Debug` shows only the fingerprint, so it cannot end up in a log
/// by accident; [`InterApplianceKey::reveal_printable`] is the one way to see it.
#[derive(Clone, PartialEq, Eq)]
pub struct InterApplianceKey {
    bytes: [u8; KEY_BYTES],
}

impl fmt::Debug for InterApplianceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InterApplianceKey(fingerprint {}, key redacted)",
            self.fingerprint()
        )
    }
}

/// A keyed hash of the key that operators compare across appliances.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyFingerprint(pub [u8; FINGERPRINT_BYTES]);

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, pair) in self.0.chunks(2).enumerate() {
            if index > 0 {
                f.write_str("-")?;
            }
            for byte in pair {
                write!(f, "{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({self})")
    }
}

/// Why a key text or key file was refused. The operator's to fix.
#[derive(Debug)]
pub enum KeyError {
    TooLong {
        len: usize,
    },
    MissingPrefix,
    BadCharacter {
        character: char,
        position: usize,
    },
    WrongLength {
        chars: usize,
    },
    /// The text decodes, but the checksum does not match: a typo.
    BadChecksum,
    /// The key is well-formed but clearly not random (hand-made).
    NotRandom,
    File(FileError),
    Random,
}

const GENERATE_HINT: &str = "generate a key with `dyad keygen` on one appliance and set the same \
                             text on both with `dyad key set`";

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::TooLong { len } => write!(
                f,
                "the key text is {len} bytes long, more than any Dyad key ({MAX_KEY_TEXT_BYTES}); \
                 {GENERATE_HINT}"
            ),
            KeyError::MissingPrefix => write!(
                f,
                "this is not a Dyad inter-appliance key (it must start with `{KEY_TEXT_PREFIX}`); \
                 chosen passphrases are not accepted because they can be guessed offline; \
                 {GENERATE_HINT}"
            ),
            KeyError::BadCharacter {
                character,
                position,
            } => write!(
                f,
                "the key text has the character {character:?} at position {position}, which no \
                 Dyad key contains (letters a-z and digits 2-7 only): check for a typo"
            ),
            KeyError::WrongLength { chars } => write!(
                f,
                "the key text has {chars} key characters instead of {KEY_TEXT_CHARS}: part of it \
                 is missing or doubled; copy it again"
            ),
            KeyError::BadChecksum => write!(
                f,
                "the key text's checksum does not match: it contains a typo; copy it again from \
                 the appliance where it was generated"
            ),
            KeyError::NotRandom => write!(
                f,
                "the key is well-formed but not random (hand-made keys are easy to guess); \
                 {GENERATE_HINT}"
            ),
            KeyError::File(error) => write!(f, "inter-appliance key file: {error}"),
            KeyError::Random => write!(
                f,
                "the operating system's random number generator failed; a key cannot be \
                 generated safely on this machine right now"
            ),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::File(error) => Some(error),
            _ => None,
        }
    }
}

impl From<FileError> for KeyError {
    fn from(error: FileError) -> Self {
        KeyError::File(error)
    }
}

/// Makes a new random key from the operating system's generator.
pub fn keygen() -> Result<InterApplianceKey, KeyError> {
    let rng = SystemRandom::new();
    loop {
        let mut bytes = [0u8; KEY_BYTES];
        rng.fill(&mut bytes).map_err(|_| KeyError::Random)?;
        // Practically never loops; it only keeps keygen from producing a key parse would refuse.
        if let Ok(key) = InterApplianceKey::from_bytes(bytes) {
            return Ok(key);
        }
    }
}

impl InterApplianceKey {
    /// A key from raw bytes (a generator the caller trusts, such as the simulator's seeded one).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Result<InterApplianceKey, KeyError> {
        let mut seen = [false; 256];
        for byte in bytes {
            seen[usize::from(byte)] = true;
        }
        if seen.iter().filter(|seen| **seen).count() < MIN_DISTINCT_BYTE_VALUES {
            return Err(KeyError::NotRandom);
        }
        Ok(InterApplianceKey { bytes })
    }

    /// Parses the printable form. Case, surrounding whitespace, dashes and whitespace between
    /// groups are ignored; everything else must be exact, checksum included.
    pub fn parse(text: &str) -> Result<InterApplianceKey, KeyError> {
        if text.len() > MAX_KEY_TEXT_BYTES {
            return Err(KeyError::TooLong { len: text.len() });
        }
        let text = text.trim();
        let prefix_len = KEY_TEXT_PREFIX.len();
        let body = match (text.get(..prefix_len), text.get(prefix_len..)) {
            (Some(prefix), Some(body)) if prefix.eq_ignore_ascii_case(KEY_TEXT_PREFIX) => body,
            _ => return Err(KeyError::MissingPrefix),
        };
        let mut decoded = [0u8; KEY_BYTES + CHECKSUM_BYTES];
        let mut accumulator: u32 = 0;
        let mut bits: u32 = 0;
        let mut chars = 0usize;
        let mut out = 0usize;
        for (position, character) in body.char_indices() {
            if character == '-' || character.is_ascii_whitespace() {
                continue;
            }
            let lower = character.to_ascii_lowercase();
            let value = BASE32_ALPHABET
                .iter()
                .position(|candidate| char::from(*candidate) == lower)
                .ok_or(KeyError::BadCharacter {
                    character,
                    position: prefix_len + position,
                })?;
            chars += 1;
            if chars > KEY_TEXT_CHARS {
                continue; // keep counting for the error message, decode nothing more
            }
            accumulator =
                (accumulator << 5) | u32::try_from(value).expect("a base32 digit is below 32");
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                decoded[out] = (accumulator >> bits) as u8;
                out += 1;
                accumulator &= (1 << bits) - 1;
            }
        }
        if chars != KEY_TEXT_CHARS {
            return Err(KeyError::WrongLength { chars });
        }
        // The last character carries padding bits; a canonical text has them zero. A set bit is
        // a typo the checksum could not see.
        if accumulator != 0 {
            return Err(KeyError::BadChecksum);
        }
        let (key_bytes, checksum) = decoded.split_at(KEY_BYTES);
        let bytes: [u8; KEY_BYTES] = key_bytes
            .try_into()
            .expect("split_at(KEY_BYTES) leaves KEY_BYTES bytes");
        if checksum != checksum_of(&bytes) {
            return Err(KeyError::BadChecksum);
        }
        InterApplianceKey::from_bytes(bytes)
    }

    /// The printable form: `dyad-psk-1:` then base32 in dash-separated groups. This is the key:
    /// show it only to the operator who asked for it, never log it.
    pub fn reveal_printable(&self) -> String {
        let mut payload = [0u8; KEY_BYTES + CHECKSUM_BYTES];
        payload[..KEY_BYTES].copy_from_slice(&self.bytes);
        payload[KEY_BYTES..].copy_from_slice(&checksum_of(&self.bytes));
        let mut digits = String::with_capacity(KEY_TEXT_CHARS);
        let mut accumulator: u32 = 0;
        let mut bits: u32 = 0;
        for byte in payload {
            accumulator = (accumulator << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                digits.push(char::from(
                    BASE32_ALPHABET[(accumulator >> bits) as usize & 31],
                ));
            }
            accumulator &= (1 << bits) - 1;
        }
        if bits > 0 {
            digits.push(char::from(
                BASE32_ALPHABET[(accumulator << (5 - bits)) as usize & 31],
            ));
        }
        let mut text = String::from(KEY_TEXT_PREFIX);
        for (index, character) in digits.chars().enumerate() {
            if index > 0 && index % GROUP_CHARS == 0 {
                text.push('-');
            }
            text.push(character);
        }
        text
    }

    /// The fingerprint operators compare: a keyed hash with its own context, never the key.
    pub fn fingerprint(&self) -> KeyFingerprint {
        let hash = blake3::derive_key(FINGERPRINT_CONTEXT, &self.bytes);
        let mut fingerprint = [0u8; FINGERPRINT_BYTES];
        fingerprint.copy_from_slice(&hash[..FINGERPRINT_BYTES]);
        KeyFingerprint(fingerprint)
    }

    /// The key of the MAC that proves possession of this key during the handshake.
    pub(crate) fn proof_mac_key(&self) -> [u8; 32] {
        blake3::derive_key(PROOF_CONTEXT, &self.bytes)
    }

    /// Reads a key file written by [`InterApplianceKey::save`] (or by hand, with mode 0600).
    pub fn load(path: &Path) -> Result<InterApplianceKey, KeyError> {
        let contents = files::read_limited(path, MAX_KEY_TEXT_BYTES as u64, true)?;
        let text = std::str::from_utf8(&contents).map_err(|_| KeyError::MissingPrefix)?;
        InterApplianceKey::parse(text)
    }

    /// Writes the key file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let mut text = self.reveal_printable();
        text.push('\n');
        files::write_atomically(path, text.as_bytes(), SECRET_FILE_MODE)?;
        Ok(())
    }
}

fn checksum_of(bytes: &[u8; KEY_BYTES]) -> [u8; CHECKSUM_BYTES] {
    let hash = blake3::derive_key(CHECKSUM_CONTEXT, bytes);
    let mut checksum = [0u8; CHECKSUM_BYTES];
    checksum.copy_from_slice(&hash[..CHECKSUM_BYTES]);
    checksum
}

/// `dyad key show`: the fingerprint of the key stored at `path`.
pub fn key_show(path: &Path) -> Result<KeyFingerprint, KeyError> {
    Ok(InterApplianceKey::load(path)?.fingerprint())
}

/// `dyad key set`: checks `text` and replaces the key file with it. Returns the new fingerprint
/// for the operator to compare with the other appliance's. Until both appliances hold the same
/// key, their connections fail with the key-mismatch reason.
pub fn key_set(path: &Path, text: &str) -> Result<KeyFingerprint, KeyError> {
    let key = InterApplianceKey::parse(text)?;
    key.save(path)?;
    Ok(key.fingerprint())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample_key() -> InterApplianceKey {
        let mut bytes = [0u8; KEY_BYTES];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = (index as u8).wrapping_mul(37).wrapping_add(11);
        }
        InterApplianceKey::from_bytes(bytes).expect("32 distinct values")
    }

    #[test]
    fn generated_keys_round_trip_through_text() {
        let key = keygen().expect("the OS generator works in tests");
        let text = key.reveal_printable();
        assert!(text.starts_with(KEY_TEXT_PREFIX));
        assert_eq!(
            InterApplianceKey::parse(&text).expect("own output parses"),
            key
        );
        assert_ne!(keygen().expect("generator"), key, "two keys differ");
    }

    #[test]
    fn parsing_forgives_case_spacing_and_dashes() {
        let key = sample_key();
        let text = key.reveal_printable();
        let body = &text[KEY_TEXT_PREFIX.len()..];
        let messy = format!(
            "  {}{}\n",
            KEY_TEXT_PREFIX.to_uppercase(),
            body.to_uppercase().replace('-', " ")
        );
        assert_eq!(InterApplianceKey::parse(&messy).expect("messy parses"), key);
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let text = sample_key().reveal_printable();
        let body_start = KEY_TEXT_PREFIX.len();
        for position in body_start..text.len() {
            let original = text.as_bytes()[position];
            if original == b'-' {
                continue;
            }
            for replacement in BASE32_ALPHABET.iter().copied() {
                if replacement == original {
                    continue;
                }
                let mut typo = text.clone().into_bytes();
                typo[position] = replacement;
                let typo = String::from_utf8(typo).expect("ascii");
                assert!(
                    InterApplianceKey::parse(&typo).is_err(),
                    "typo at {position} accepted"
                );
            }
        }
    }

    #[test]
    fn malformed_texts_are_refused_with_their_reason() {
        let text = sample_key().reveal_printable();
        assert!(matches!(
            InterApplianceKey::parse("correct horse battery staple"),
            Err(KeyError::MissingPrefix)
        ));
        assert!(matches!(
            InterApplianceKey::parse(&text[..text.len() - 3]),
            Err(KeyError::WrongLength { .. })
        ));
        assert!(matches!(
            InterApplianceKey::parse(&format!("{text}a")),
            Err(KeyError::WrongLength { .. })
        ));
        assert!(matches!(
            InterApplianceKey::parse(&format!("{text}1")),
            Err(KeyError::BadCharacter { character: '1', .. })
        ));
        assert!(matches!(
            InterApplianceKey::parse(&"a".repeat(MAX_KEY_TEXT_BYTES + 1)),
            Err(KeyError::TooLong { .. })
        ));
    }

    #[test]
    fn weak_keys_are_refused_even_with_a_valid_checksum() {
        // A hand-made key given the right checksum is still refused: the format alone does not
        // make a key random.
        assert!(matches!(
            InterApplianceKey::from_bytes([0u8; KEY_BYTES]),
            Err(KeyError::NotRandom)
        ));
        let mut repeating = [0u8; KEY_BYTES];
        repeating.copy_from_slice(&b"password".repeat(4));
        assert!(matches!(
            InterApplianceKey::from_bytes(repeating),
            Err(KeyError::NotRandom)
        ));
        // Build the printable form of the all-zero key by hand and check parse refuses it.
        let forged = InterApplianceKey { bytes: [0u8; 32] }.reveal_printable();
        assert!(matches!(
            InterApplianceKey::parse(&forged),
            Err(KeyError::NotRandom)
        ));
        assert!(matches!(
            InterApplianceKey::parse("dyad-psk-1:hunter2"),
            Err(KeyError::WrongLength { .. })
        ));
    }

    #[test]
    fn fingerprints_are_short_grouped_hex_and_not_the_key() {
        let key = sample_key();
        let shown = key.fingerprint().to_string();
        assert_eq!(shown.len(), 19, "{shown}");
        assert_eq!(shown.split('-').count(), 4);
        assert!(!key.reveal_printable().contains(&shown.replace('-', "")));
        let other = keygen().expect("generator");
        assert_ne!(other.fingerprint(), key.fingerprint());
        assert_ne!(&key.proof_mac_key()[..8], &key.fingerprint().0[..]);
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let key = sample_key();
        let debug = format!("{key:?}");
        let printable = key.reveal_printable();
        let body = &printable[KEY_TEXT_PREFIX.len()..];
        assert!(!debug.contains(body));
        assert!(!debug.contains(&body[..5]));
        assert!(debug.contains(&key.fingerprint().to_string()));
    }

    #[test]
    fn key_files_are_0600_and_key_set_replaces_them() {
        let dir = std::env::temp_dir().join(format!("dyad-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("inter-appliance.key");
        let first = sample_key();
        first.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(key_show(&path).expect("show"), first.fingerprint());

        let second = keygen().expect("generator");
        let shown = key_set(&path, &second.reveal_printable()).expect("set");
        assert_eq!(shown, second.fingerprint());
        assert_eq!(InterApplianceKey::load(&path).expect("load"), second);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A refused text leaves the old key in place.
        assert!(key_set(&path, "not a key").is_err());
        assert_eq!(InterApplianceKey::load(&path).expect("load"), second);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            InterApplianceKey::load(&path),
            Err(KeyError::File(FileError::TooOpen { .. }))
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,300}") {
            let _ = InterApplianceKey::parse(&text);
        }

        #[test]
        fn any_random_key_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            if let Ok(key) = InterApplianceKey::from_bytes(bytes) {
                let parsed = InterApplianceKey::parse(&key.reveal_printable());
                prop_assert_eq!(parsed.expect("own output parses"), key);
            }
        }
    }
}
