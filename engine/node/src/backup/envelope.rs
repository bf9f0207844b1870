//! The backup file's outer envelope: a small fixed header, an optional public section, and
//! the sealed (encrypted and authenticated) payload.
//!
//! The header says everything a reader needs before it can decrypt: which format, what kind of
//! file, which software wrote it and how the key is derived from the passphrase. It is bound to
//! the ciphertext as associated data, so changing any byte of it (a lower KDF cost, an older
//! software version) makes decryption fail instead of being believed. The parser checks every
//! length against a named maximum before allocating, keeps "the file ends early" apart from
//! "these bytes are wrong", and refuses trailing bytes. Layout: `docs/storage.md`.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::rand::{SecureRandom, SystemRandom};

use dyad_wire::{SoftwareVersion, Version};

/// The first bytes of every Dyad backup or certificate export.
pub const MAGIC: [u8; 8] = *b"DYADBKUP";
/// The envelope layout this build writes and the newest it reads.
pub const ENVELOPE_FORMAT: u16 = 1;
/// Bytes of the fixed part of the header.
pub const HEADER_FIXED_BYTES: usize = 76;
/// A whole file, at most (checked before reading it into memory).
pub const ENVELOPE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The public section (a certificate chain, for an export), at most.
pub const PUBLIC_BYTES_MAX: u32 = 256 * 1024;
pub const SALT_BYTES: usize = 16;
pub const NONCE_BYTES: usize = 12;
/// The AEAD tag appended to the ciphertext.
pub const TAG_BYTES: usize = 16;
/// The derived key.
const KEY_BYTES: usize = 32;

// magic, format, kind, kdf id, software (6 × u16), memory, iterations, lanes, salt, nonce,
// public length, sealed length.
const _: () = assert!(
    HEADER_FIXED_BYTES == 8 + 2 + 1 + 1 + 12 + 4 + 4 + 4 + SALT_BYTES + NONCE_BYTES + 4 + 8
);

/// The only key derivation this format knows: Argon2id version 0x13.
pub const KDF_ARGON2ID_V13: u8 = 1;

/// What kind of secret a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A settings backup (`dyad backup create`).
    SettingsBackup,
    /// A certificate chain with its passphrase-protected private key (`dyad cert export`).
    CertificateExport,
}

impl FileKind {
    fn code(self) -> u8 {
        match self {
            FileKind::SettingsBackup => 1,
            FileKind::CertificateExport => 2,
        }
    }
    fn from_code(code: u8) -> Option<FileKind> {
        match code {
            1 => Some(FileKind::SettingsBackup),
            2 => Some(FileKind::CertificateExport),
            _ => None,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::SettingsBackup => "a settings backup",
            FileKind::CertificateExport => "a certificate export",
        })
    }
}

/// Argon2id cost parameters. They travel in the header so that later versions can raise the
/// defaults and still read older files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

/// Memory for the KDF: 64 MiB makes each passphrase guess cost real memory on any hardware.
pub const KDF_MEMORY_KIB_DEFAULT: u32 = 64 * 1024;
/// Passes over that memory.
pub const KDF_ITERATIONS_DEFAULT: u32 = 3;
/// One lane: the appliance may be busy replicating; a restore is not time-critical.
pub const KDF_LANES_DEFAULT: u32 = 1;
/// The most memory a file may ask for (a damaged or hostile header must not exhaust memory).
pub const KDF_MEMORY_KIB_MAX: u32 = 1024 * 1024;
/// The most passes a file may ask for.
pub const KDF_ITERATIONS_MAX: u32 = 16;
/// The most lanes a file may ask for.
pub const KDF_LANES_MAX: u32 = 16;
/// The least memory Argon2 accepts: 8 blocks of 1 KiB per lane.
pub const KDF_MEMORY_KIB_MIN: u32 = 8;

impl KdfParams {
    /// What `dyad backup create` and `dyad cert export` use.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: KDF_MEMORY_KIB_DEFAULT,
        iterations: KDF_ITERATIONS_DEFAULT,
        lanes: KDF_LANES_DEFAULT,
    };

    /// The cheapest parameters Argon2 accepts. Only for tests, which pass it explicitly; no
    /// command ever chooses it.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        memory_kib: KDF_MEMORY_KIB_MIN,
        iterations: 1,
        lanes: 1,
    };

    fn check(&self) -> Result<(), EnvelopeError> {
        let problem = if self.lanes == 0 || self.lanes > KDF_LANES_MAX {
            format!("{} lanes is outside 1..={KDF_LANES_MAX}", self.lanes)
        } else if self.iterations == 0 || self.iterations > KDF_ITERATIONS_MAX {
            format!(
                "{} iterations is outside 1..={KDF_ITERATIONS_MAX}",
                self.iterations
            )
        } else if self.memory_kib < KDF_MEMORY_KIB_MIN * self.lanes
            || self.memory_kib > KDF_MEMORY_KIB_MAX
        {
            format!(
                "{} KiB of memory is outside {}..={KDF_MEMORY_KIB_MAX} KiB",
                self.memory_kib,
                KDF_MEMORY_KIB_MIN * self.lanes
            )
        } else {
            return Ok(());
        };
        Err(EnvelopeError::KdfOutOfRange(problem))
    }
}

/// A parsed envelope: nothing decrypted yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub kind: FileKind,
    /// The software installed on the appliance that wrote the file.
    pub software: SoftwareVersion,
    pub kdf: KdfParams,
    pub salt: [u8; SALT_BYTES],
    pub nonce: [u8; NONCE_BYTES],
    /// Authenticated but not encrypted (a certificate chain, for an export).
    pub public: Vec<u8>,
    /// Ciphertext followed by the tag.
    pub sealed: Vec<u8>,
}

/// Why bytes are not a usable envelope. None of these is a wrong passphrase: that is only
/// known after decryption ([`OpenError`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The file ends before its own lengths say it should: it was cut short (copying, a full
    /// disk). Take the file again from where it was written.
    Truncated { needed_bytes: u64, have_bytes: u64 },
    /// The file does not start like a Dyad backup.
    NotABackup,
    /// Written in an envelope format newer than this build reads.
    NewerFormat { found: u16, supported: u16 },
    /// A field holds a value no Dyad version writes.
    Malformed(String),
    /// The header asks for KDF costs outside what this build accepts.
    KdfOutOfRange(String),
    /// A length above its limit.
    TooLarge {
        field: &'static str,
        bytes: u64,
        max_bytes: u64,
    },
    /// Bytes after the sealed payload.
    TrailingBytes { bytes: u64 },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Truncated {
                needed_bytes,
                have_bytes,
            } => write!(
                f,
                "the file is truncated: it needs {needed_bytes} bytes but holds {have_bytes}; \
                 copy it again from where it was written"
            ),
            EnvelopeError::NotABackup => {
                f.write_str("the file is not a Dyad backup or certificate export")
            }
            EnvelopeError::NewerFormat { found, supported } => write!(
                f,
                "the file has backup format {found}, this build reads format {supported} and \
                 older; use a newer version of dyad"
            ),
            EnvelopeError::Malformed(why) => {
                write!(f, "the file is damaged or was changed: {why}")
            }
            EnvelopeError::KdfOutOfRange(why) => write!(
                f,
                "the file's passphrase protection parameters are not acceptable ({why}); the \
                 file is damaged or was not written by dyad"
            ),
            EnvelopeError::TooLarge {
                field,
                bytes,
                max_bytes,
            } => write!(
                f,
                "the file's {field} of {bytes} bytes is above the limit of {max_bytes}; the file \
                 is damaged or was not written by dyad"
            ),
            EnvelopeError::TrailingBytes { bytes } => write!(
                f,
                "the file has {bytes} unexpected bytes at its end; it is damaged or was changed"
            ),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// Why a sealed payload could not be opened or made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Authentication failed: the passphrase is wrong, or any byte of the file was changed.
    /// The two cannot be told apart by design.
    WrongPassphraseOrTampered,
    /// The passphrase file is unusable (empty).
    Passphrase(String),
    /// The system's random generator or the KDF failed.
    Crypto(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::WrongPassphraseOrTampered => f.write_str(
                "the passphrase is wrong, or the file was changed or damaged after it was \
                 written (its authentication failed); check the passphrase file, then the file",
            ),
            OpenError::Passphrase(why) => write!(f, "passphrase: {why}"),
            OpenError::Crypto(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for OpenError {}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(EnvelopeError::Truncated {
                needed_bytes: (self.position as u64).saturating_add(len as u64),
                have_bytes: self.bytes.len() as u64,
            });
        };
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, EnvelopeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn version(&mut self) -> Result<Version, EnvelopeError> {
        Ok(Version {
            major: self.u16()?,
            minor: self.u16()?,
            patch: self.u16()?,
        })
    }
}

impl Envelope {
    /// The bytes bound to the ciphertext as associated data: everything before it.
    fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_FIXED_BYTES + self.public.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&ENVELOPE_FORMAT.to_le_bytes());
        out.push(self.kind.code());
        out.push(KDF_ARGON2ID_V13);
        for version in [self.software.app, self.software.base] {
            for part in [version.major, version.minor, version.patch] {
                out.extend_from_slice(&part.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.kdf.memory_kib.to_le_bytes());
        out.extend_from_slice(&self.kdf.iterations.to_le_bytes());
        out.extend_from_slice(&self.kdf.lanes.to_le_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(
            &u32::try_from(self.public.len())
                .expect("seal refuses a public section above PUBLIC_BYTES_MAX")
                .to_le_bytes(),
        );
        out.extend_from_slice(&(self.sealed.len() as u64).to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_FIXED_BYTES);
        out.extend_from_slice(&self.public);
        out
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses a file without decrypting it.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() as u64 > ENVELOPE_BYTES_MAX {
            return Err(EnvelopeError::TooLarge {
                field: "size",
                bytes: bytes.len() as u64,
                max_bytes: ENVELOPE_BYTES_MAX,
            });
        }
        let mut reader = Reader { bytes, position: 0 };
        // A file shorter than the magic that matches its start is a truncated backup; one that
        // does not is something else.
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(EnvelopeError::NotABackup);
        }
        reader.take(MAGIC.len())?;
        let format = reader.u16()?;
        if format > ENVELOPE_FORMAT {
            return Err(EnvelopeError::NewerFormat {
                found: format,
                supported: ENVELOPE_FORMAT,
            });
        }
        if format == 0 {
            return Err(EnvelopeError::Malformed("format 0 does not exist".into()));
        }
        let kind_code = reader.u8()?;
        let kind = FileKind::from_code(kind_code)
            .ok_or_else(|| EnvelopeError::Malformed(format!("unknown file kind {kind_code}")))?;
        let kdf_code = reader.u8()?;
        if kdf_code != KDF_ARGON2ID_V13 {
            return Err(EnvelopeError::Malformed(format!(
                "unknown key derivation {kdf_code}"
            )));
        }
        let software = SoftwareVersion {
            app: reader.version()?,
            base: reader.version()?,
        };
        let kdf = KdfParams {
            memory_kib: reader.u32()?,
            iterations: reader.u32()?,
            lanes: reader.u32()?,
        };
        kdf.check()?;
        let salt = reader.array()?;
        let nonce = reader.array()?;
        let public_len = reader.u32()?;
        if public_len > PUBLIC_BYTES_MAX {
            return Err(EnvelopeError::TooLarge {
                field: "public section",
                bytes: u64::from(public_len),
                max_bytes: u64::from(PUBLIC_BYTES_MAX),
            });
        }
        let sealed_len = reader.u64()?;
        if sealed_len > ENVELOPE_BYTES_MAX {
            return Err(EnvelopeError::TooLarge {
                field: "sealed payload",
                bytes: sealed_len,
                max_bytes: ENVELOPE_BYTES_MAX,
            });
        }
        if sealed_len < TAG_BYTES as u64 {
            return Err(EnvelopeError::Malformed(format!(
                "a sealed payload of {sealed_len} bytes cannot hold its {TAG_BYTES}-byte tag"
            )));
        }
        let public = reader.take(public_len as usize)?.to_vec();
        let sealed_len = usize::try_from(sealed_len).expect("checked against a 64 MiB limit");
        let sealed = reader.take(sealed_len)?.to_vec();
        let trailing = bytes.len() - reader.position;
        if trailing != 0 {
            return Err(EnvelopeError::TrailingBytes {
                bytes: trailing as u64,
            });
        }
        Ok(Envelope {
            kind,
            software,
            kdf,
            salt,
            nonce,
            public,
            sealed,
        })
    }

    /// Encrypts `plaintext` under a key derived from `passphrase` with `kdf`, binding the
    /// header and `public` to it.
    pub fn seal(
        kind: FileKind,
        software: SoftwareVersion,
        kdf: KdfParams,
        passphrase: &[u8],
        public: Vec<u8>,
        plaintext: &[u8],
    ) -> Result<Envelope, OpenError> {
        kdf.check()
            .map_err(|error| OpenError::Crypto(error.to_string()))?;
        if public.len() > PUBLIC_BYTES_MAX as usize
            || (plaintext.len() + public.len() + HEADER_FIXED_BYTES + TAG_BYTES) as u64
                > ENVELOPE_BYTES_MAX
        {
            return Err(OpenError::Crypto(format!(
                "the backup would be larger than the limit of {ENVELOPE_BYTES_MAX} bytes"
            )));
        }
        let rng = SystemRandom::new();
        let mut salt = [0u8; SALT_BYTES];
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill(&mut salt)
            .and_then(|()| rng.fill(&mut nonce))
            .map_err(|_| OpenError::Crypto("the system random generator failed".into()))?;
        let mut envelope = Envelope {
            kind,
            software,
            kdf,
            salt,
            nonce,
            public,
            // The length is part of the header, so it must be known before sealing.
            sealed: vec![0u8; plaintext.len() + TAG_BYTES],
        };
        let key = derive_key(passphrase, &salt, kdf)?;
        let header = envelope.header_bytes();
        let mut buffer = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header.as_slice()),
            &mut buffer,
        )
        .map_err(|_| OpenError::Crypto("encryption failed".into()))?;
        debug_assert_eq!(buffer.len(), envelope.sealed.len());
        envelope.sealed = buffer;
        Ok(envelope)
    }

    /// Decrypts and authenticates the payload.
    pub fn open(&self, passphrase: &[u8]) -> Result<Vec<u8>, OpenError> {
        let key = derive_key(passphrase, &self.salt, self.kdf)?;
        let header = self.header_bytes();
        let mut buffer = self.sealed.clone();
        let plaintext = key
            .open_in_place(
                Nonce::assume_unique_for_key(self.nonce),
                Aad::from(header.as_slice()),
                &mut buffer,
            )
            .map_err(|_| OpenError::WrongPassphraseOrTampered)?;
        let len = plaintext.len();
        buffer.truncate(len);
        Ok(buffer)
    }
}

fn derive_key(passphrase: &[u8], salt: &[u8], kdf: KdfParams) -> Result<LessSafeKey, OpenError> {
    if passphrase.is_empty() {
        return Err(OpenError::Passphrase("it is empty".into()));
    }
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.lanes, Some(KEY_BYTES))
        .map_err(|error| OpenError::Crypto(format!("key derivation parameters: {error}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; KEY_BYTES];
    argon
        .hash_password_into(passphrase, salt, &mut key)
        .map_err(|error| OpenError::Crypto(format!("key derivation failed: {error}")))?;
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key)
        .map_err(|_| OpenError::Crypto("the derived key was refused".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Checks that `parse(encode(parse(bytes)))` is the identity, for the fuzz target.
#[doc(hidden)]
pub fn check_parse_round_trip(bytes: &[u8]) {
    if let Ok(envelope) = Envelope::parse(bytes) {
        let encoded = envelope.encode();
        assert_eq!(encoded, bytes, "a parsed envelope encodes to its own bytes");
        assert_eq!(Envelope::parse(&encoded).as_ref(), Ok(&envelope));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn software() -> SoftwareVersion {
        SoftwareVersion {
            app: Version {
                major: 7,
                minor: 3,
                patch: 0,
            },
            base: Version {
                major: 3,
                minor: 2,
                patch: 0,
            },
        }
    }

    fn sealed() -> Vec<u8> {
        Envelope::seal(
            FileKind::SettingsBackup,
            software(),
            KdfParams::INSECURE_FOR_TESTS,
            b"correct horse",
            b"public".to_vec(),
            b"the secret payload",
        )
        .expect("seal")
        .encode()
    }

    #[test]
    fn seal_then_open_round_trips() {
        let bytes = sealed();
        let envelope = Envelope::parse(&bytes).expect("parse");
        assert_eq!(envelope.kind, FileKind::SettingsBackup);
        assert_eq!(envelope.software, software());
        assert_eq!(envelope.public, b"public");
        assert_eq!(
            envelope.open(b"correct horse").expect("open"),
            b"the secret payload"
        );
        assert_eq!(
            envelope.open(b"wrong horse"),
            Err(OpenError::WrongPassphraseOrTampered)
        );
        assert!(matches!(envelope.open(b""), Err(OpenError::Passphrase(_))));
    }

    #[test]
    fn every_truncation_is_refused_as_truncated() {
        let bytes = sealed();
        for len in 0..bytes.len() {
            match Envelope::parse(&bytes[..len]) {
                Err(EnvelopeError::Truncated { .. }) => {}
                other => panic!("truncated to {len} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let bytes = sealed();
        for index in 0..bytes.len() {
            for bit in [0u8, 3, 7] {
                let mut damaged = bytes.clone();
                damaged[index] ^= 1 << bit;
                let refused = match Envelope::parse(&damaged) {
                    Err(_) => true,
                    Ok(envelope) => envelope.open(b"correct horse").is_err(),
                };
                assert!(refused, "bit {bit} of byte {index} flipped was accepted");
            }
        }
    }

    #[test]
    fn newer_formats_bad_magic_and_trailing_bytes_are_named() {
        let mut bytes = sealed();
        let mut newer = bytes.clone();
        newer[8..10].copy_from_slice(&(ENVELOPE_FORMAT + 1).to_le_bytes());
        assert_eq!(
            Envelope::parse(&newer),
            Err(EnvelopeError::NewerFormat {
                found: ENVELOPE_FORMAT + 1,
                supported: ENVELOPE_FORMAT
            })
        );
        assert_eq!(
            Envelope::parse(b"PK\x03\x04 a zip file"),
            Err(EnvelopeError::NotABackup)
        );
        bytes.push(0);
        assert_eq!(
            Envelope::parse(&bytes),
            Err(EnvelopeError::TrailingBytes { bytes: 1 })
        );
    }

    #[test]
    fn kdf_costs_outside_the_limits_are_refused_before_any_work() {
        let bytes = sealed();
        let mut greedy = bytes.clone();
        greedy[24..28].copy_from_slice(&(KDF_MEMORY_KIB_MAX + 1).to_le_bytes());
        assert!(matches!(
            Envelope::parse(&greedy),
            Err(EnvelopeError::KdfOutOfRange(_))
        ));
        let mut slow = bytes;
        slow[28..32].copy_from_slice(&(KDF_ITERATIONS_MAX + 1).to_le_bytes());
        assert!(matches!(
            Envelope::parse(&slow),
            Err(EnvelopeError::KdfOutOfRange(_))
        ));
    }

    #[test]
    fn the_default_parameters_are_within_the_accepted_range() {
        assert_eq!(KdfParams::DEFAULT.check(), Ok(()));
        assert_eq!(KdfParams::INSECURE_FOR_TESTS.check(), Ok(()));
    }
}
