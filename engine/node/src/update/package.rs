//! The update package file: what the vendor ships and the appliance verifies before it changes
//! anything.
//!
//! ```text
//! magic "DYADPKG\0" (8) | format u16 LE (1) | manifest length u32 LE | manifest
//! | Ed25519 signature (64) over "dyad update package v1\0" ‖ manifest | payload
//! ```
//!
//! The manifest carries the payload's length and BLAKE3 hash, so the one signature covers the
//! whole file; the payload is hashed as it streams from disk and never held in memory. Every
//! length is checked against its named limit before anything is allocated, each manifest has
//! exactly one encoding (the decoder refuses trailing bytes, unknown kinds and operators, and
//! non-canonical names), and nothing a file holds can make the decoder panic
//! (`fuzz/fuzz_targets/update_package.rs`).

use std::fmt;
use std::io::Read;
use std::path::Path;

use dyad_wire::{SoftwareVersion, Version};

pub use crate::vendor_key::{VendorPublicKey, VendorSecretKey, SIGNATURE_BYTES};

/// First bytes of every package file.
pub const PACKAGE_MAGIC: [u8; 8] = *b"DYADPKG\0";
/// The package layout this code reads and writes.
pub const PACKAGE_FORMAT_VERSION: u16 = 1;
/// Longest manifest accepted (a manifest is a few hundred bytes).
pub const PACKAGE_MANIFEST_BYTES_MAX: usize = 4096;
/// Largest payload accepted.
pub const PACKAGE_PAYLOAD_BYTES_MAX: u64 = 8 << 30;
/// Most requirements one package may state.
pub const PACKAGE_REQUIREMENTS_MAX: usize = 16;
/// Longest package name.
pub const PACKAGE_NAME_BYTES_MAX: usize = 64;
/// Bytes before the manifest: magic, format, manifest length.
pub const PACKAGE_HEADER_BYTES: usize = 8 + 2 + 4;

/// What a package updates: the base software or the application on top of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PackageKind {
    Base,
    App,
}

impl PackageKind {
    pub fn name(self) -> &'static str {
        match self {
            PackageKind::Base => "base",
            PackageKind::App => "app",
        }
    }

    /// This kind's installed version.
    pub fn installed(self, software: &SoftwareVersion) -> Version {
        match self {
            PackageKind::Base => software.base,
            PackageKind::App => software.app,
        }
    }

    fn code(self) -> u8 {
        match self {
            PackageKind::Base => 0,
            PackageKind::App => 1,
        }
    }

    fn from_code(code: u8) -> Option<PackageKind> {
        match code {
            0 => Some(PackageKind::Base),
            1 => Some(PackageKind::App),
            _ => None,
        }
    }
}

impl fmt::Display for PackageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PackageKind {
    type Err = String;
    fn from_str(text: &str) -> Result<PackageKind, String> {
        match text.trim() {
            "base" => Ok(PackageKind::Base),
            "app" => Ok(PackageKind::App),
            other => Err(format!("{other:?} is not a package kind (base or app)")),
        }
    }
}

/// How a requirement compares the installed version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Comparison {
    AtLeast,
    Exactly,
}

/// `base >= 3.2`: what must be installed for a package to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub kind: PackageKind,
    pub comparison: Comparison,
    pub version: Version,
}

impl Requirement {
    pub fn satisfied_by(&self, software: &SoftwareVersion) -> bool {
        let installed = self.kind.installed(software);
        match self.comparison {
            Comparison::AtLeast => installed >= self.version,
            Comparison::Exactly => installed == self.version,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.comparison {
            Comparison::AtLeast => ">=",
            Comparison::Exactly => "=",
        };
        write!(f, "{} {op} {}", self.kind, self.version)
    }
}

impl std::str::FromStr for Requirement {
    type Err = String;
    /// `base >= 3.2`, `app=7.3.0`.
    fn from_str(text: &str) -> Result<Requirement, String> {
        let (kind, comparison, version) = if let Some((kind, version)) = text.split_once(">=") {
            (kind, Comparison::AtLeast, version)
        } else if let Some((kind, version)) = text.split_once('=') {
            (kind, Comparison::Exactly, version)
        } else {
            return Err(format!(
                "{text:?} is not a requirement like `base >= 3.2` or `app = 7.3.0`"
            ));
        };
        Ok(Requirement {
            kind: kind.parse()?,
            comparison,
            version: version
                .parse::<Version>()
                .map_err(|error| error.to_string())?,
        })
    }
}

/// What a package is and needs; signed by the vendor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `[a-z0-9._-]`, 1 to [`PACKAGE_NAME_BYTES_MAX`] bytes.
    pub name: String,
    pub kind: PackageKind,
    pub version: Version,
    /// The store format the new software needs; installing migrates an older store to it.
    pub store_format: u64,
    pub requirements: Vec<Requirement>,
    pub payload_len: u64,
    pub payload_hash: [u8; 32],
}

impl Manifest {
    /// `base 3.2.0`: how operators see a package (its kind is shown where it matters).
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// Why a package file was refused. Nothing was changed on the appliance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageError {
    /// The file is not a Dyad update package at all.
    NotAPackage,
    /// A package layout this version does not read.
    UnsupportedFormat(u16),
    /// The file ends before `what`.
    Truncated { what: &'static str },
    /// A length above its named limit.
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    /// The manifest does not follow its layout.
    Malformed(String),
    /// The signature does not verify with the vendor key: tampered, or not from this vendor.
    BadSignature,
    /// The payload's length or hash differs from the signed manifest's: tampered or damaged.
    PayloadMismatch(String),
    /// Bytes after the payload.
    TrailingBytes,
    /// Reading the file failed.
    Io(String),
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageError::NotAPackage => f.write_str("not a Dyad update package"),
            PackageError::UnsupportedFormat(found) => write!(
                f,
                "package format {found} is not the format {PACKAGE_FORMAT_VERSION} this version \
                 reads; get the package made for this version"
            ),
            PackageError::Truncated { what } => {
                write!(
                    f,
                    "the package is truncated (it ends in the {what}); download it again"
                )
            }
            PackageError::TooLarge { what, len, max } => {
                write!(
                    f,
                    "the package's {what} is {len} bytes, above the limit of {max}"
                )
            }
            PackageError::Malformed(why) => write!(f, "the package manifest is damaged: {why}"),
            PackageError::BadSignature => f.write_str(
                "the package signature does not verify with the vendor key: the package was \
                 tampered with or is not from your vendor",
            ),
            PackageError::PayloadMismatch(why) => write!(
                f,
                "the package payload does not match its signed manifest ({why}): the package was \
                 tampered with or damaged; download it again"
            ),
            PackageError::TrailingBytes => {
                f.write_str("the package has extra bytes after its payload: tampered or damaged")
            }
            PackageError::Io(why) => write!(f, "cannot read the package: {why}"),
        }
    }
}

impl std::error::Error for PackageError {}

// ---------------------------------------------------------------------------------------------
// Manifest codec

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= PACKAGE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn put_version(out: &mut Vec<u8>, version: &Version) {
    out.extend_from_slice(&version.major.to_le_bytes());
    out.extend_from_slice(&version.minor.to_le_bytes());
    out.extend_from_slice(&version.patch.to_le_bytes());
}

/// Encodes a manifest; refuses one the decoder would refuse.
pub fn encode_manifest(manifest: &Manifest) -> Result<Vec<u8>, String> {
    if !valid_name(&manifest.name) {
        return Err(format!(
            "package name {:?} must be 1 to {PACKAGE_NAME_BYTES_MAX} characters of a-z, 0-9, '.', \
             '_' and '-'",
            manifest.name
        ));
    }
    if manifest.requirements.len() > PACKAGE_REQUIREMENTS_MAX {
        return Err(format!(
            "at most {PACKAGE_REQUIREMENTS_MAX} requirements per package"
        ));
    }
    if manifest.payload_len > PACKAGE_PAYLOAD_BYTES_MAX {
        return Err(format!(
            "the payload is above the limit of {PACKAGE_PAYLOAD_BYTES_MAX} bytes"
        ));
    }
    if manifest.store_format == 0 {
        return Err("the store format must be 1 or more".into());
    }
    let mut out = Vec::with_capacity(128);
    out.push(manifest.name.len() as u8);
    out.extend_from_slice(manifest.name.as_bytes());
    out.push(manifest.kind.code());
    put_version(&mut out, &manifest.version);
    out.extend_from_slice(&manifest.store_format.to_le_bytes());
    out.extend_from_slice(&manifest.payload_len.to_le_bytes());
    out.extend_from_slice(&manifest.payload_hash);
    out.push(manifest.requirements.len() as u8);
    for requirement in &manifest.requirements {
        out.push(requirement.kind.code());
        out.push(match requirement.comparison {
            Comparison::AtLeast => 0,
            Comparison::Exactly => 1,
        });
        put_version(&mut out, &requirement.version);
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], PackageError> {
        if self.bytes.len() < len {
            return Err(PackageError::Malformed(format!("it ends in the {what}")));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, PackageError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, PackageError> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, PackageError> {
        let bytes = self.take(8, what)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(array))
    }
    fn version(&mut self, what: &'static str) -> Result<Version, PackageError> {
        Ok(Version {
            major: self.u16(what)?,
            minor: self.u16(what)?,
            patch: self.u16(what)?,
        })
    }
}

/// Decodes a manifest; refuses anything but the one encoding `encode_manifest` makes.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, PackageError> {
    if bytes.len() > PACKAGE_MANIFEST_BYTES_MAX {
        return Err(PackageError::TooLarge {
            what: "manifest",
            len: bytes.len() as u64,
            max: PACKAGE_MANIFEST_BYTES_MAX as u64,
        });
    }
    let mut reader = Reader { bytes };
    let name_len = reader.u8("name length")? as usize;
    if name_len > PACKAGE_NAME_BYTES_MAX {
        return Err(PackageError::TooLarge {
            what: "name",
            len: name_len as u64,
            max: PACKAGE_NAME_BYTES_MAX as u64,
        });
    }
    let name = std::str::from_utf8(reader.take(name_len, "name")?)
        .map_err(|_| PackageError::Malformed("the name is not UTF-8".into()))?
        .to_string();
    if !valid_name(&name) {
        return Err(PackageError::Malformed(format!(
            "the name {name:?} is not a package name"
        )));
    }
    let kind = PackageKind::from_code(reader.u8("kind")?)
        .ok_or_else(|| PackageError::Malformed("unknown package kind".into()))?;
    let version = reader.version("version")?;
    let store_format = reader.u64("store format")?;
    if store_format == 0 {
        return Err(PackageError::Malformed("store format 0".into()));
    }
    let payload_len = reader.u64("payload length")?;
    if payload_len > PACKAGE_PAYLOAD_BYTES_MAX {
        return Err(PackageError::TooLarge {
            what: "payload",
            len: payload_len,
            max: PACKAGE_PAYLOAD_BYTES_MAX,
        });
    }
    let mut payload_hash = [0u8; 32];
    payload_hash.copy_from_slice(reader.take(32, "payload hash")?);
    let count = reader.u8("requirement count")? as usize;
    if count > PACKAGE_REQUIREMENTS_MAX {
        return Err(PackageError::TooLarge {
            what: "requirement list",
            len: count as u64,
            max: PACKAGE_REQUIREMENTS_MAX as u64,
        });
    }
    let mut requirements = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = PackageKind::from_code(reader.u8("requirement")?)
            .ok_or_else(|| PackageError::Malformed("a requirement of unknown kind".into()))?;
        let comparison = match reader.u8("requirement")? {
            0 => Comparison::AtLeast,
            1 => Comparison::Exactly,
            _ => {
                return Err(PackageError::Malformed(
                    "a requirement with an unknown comparison".into(),
                ))
            }
        };
        let version = reader.version("requirement")?;
        requirements.push(Requirement {
            kind,
            comparison,
            version,
        });
    }
    if !reader.bytes.is_empty() {
        return Err(PackageError::Malformed(
            "bytes after the last requirement".into(),
        ));
    }
    Ok(Manifest {
        name,
        kind,
        version,
        store_format,
        requirements,
        payload_len,
        payload_hash,
    })
}

/// Checks the fixed header; returns the manifest length.
fn decode_header(header: &[u8]) -> Result<usize, PackageError> {
    if header.len() < PACKAGE_HEADER_BYTES {
        if !PACKAGE_MAGIC.starts_with(&header[..header.len().min(8)]) {
            return Err(PackageError::NotAPackage);
        }
        return Err(PackageError::Truncated { what: "header" });
    }
    if header[..8] != PACKAGE_MAGIC {
        return Err(PackageError::NotAPackage);
    }
    let format = u16::from_le_bytes([header[8], header[9]]);
    if format != PACKAGE_FORMAT_VERSION {
        return Err(PackageError::UnsupportedFormat(format));
    }
    let manifest_len = u32::from_le_bytes([header[10], header[11], header[12], header[13]]) as u64;
    if manifest_len > PACKAGE_MANIFEST_BYTES_MAX as u64 {
        return Err(PackageError::TooLarge {
            what: "manifest",
            len: manifest_len,
            max: PACKAGE_MANIFEST_BYTES_MAX as u64,
        });
    }
    Ok(manifest_len as usize)
}

/// Builds a signed package around `payload` (vendor tools and tests).
pub fn build_package(
    key: &VendorSecretKey,
    name: &str,
    kind: PackageKind,
    version: Version,
    store_format: u64,
    requirements: Vec<Requirement>,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let manifest = Manifest {
        name: name.to_string(),
        kind,
        version,
        store_format,
        requirements,
        payload_len: payload.len() as u64,
        payload_hash: *blake3::hash(payload).as_bytes(),
    };
    let encoded = encode_manifest(&manifest)?;
    let signature = key.sign(&encoded);
    let mut out = Vec::with_capacity(PACKAGE_HEADER_BYTES + encoded.len() + 64 + payload.len());
    out.extend_from_slice(&PACKAGE_MAGIC);
    out.extend_from_slice(&PACKAGE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    out.extend_from_slice(&signature);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Verifies a whole package held in memory: header, signature, payload length and hash.
pub fn verify_package(bytes: &[u8], vendor: &VendorPublicKey) -> Result<Manifest, PackageError> {
    let manifest_len = decode_header(&bytes[..bytes.len().min(PACKAGE_HEADER_BYTES)])?;
    let rest = &bytes[PACKAGE_HEADER_BYTES..];
    if rest.len() < manifest_len {
        return Err(PackageError::Truncated { what: "manifest" });
    }
    let (manifest_bytes, rest) = rest.split_at(manifest_len);
    if rest.len() < SIGNATURE_BYTES {
        return Err(PackageError::Truncated { what: "signature" });
    }
    let (signature, payload) = rest.split_at(SIGNATURE_BYTES);
    if !vendor.verifies(manifest_bytes, signature) {
        return Err(PackageError::BadSignature);
    }
    let manifest = decode_manifest(manifest_bytes)?;
    check_payload(&manifest, payload.len() as u64, blake3::hash(payload))?;
    Ok(manifest)
}

fn check_payload(manifest: &Manifest, len: u64, hash: blake3::Hash) -> Result<(), PackageError> {
    if len < manifest.payload_len {
        return Err(PackageError::Truncated { what: "payload" });
    }
    if len > manifest.payload_len {
        return Err(PackageError::TrailingBytes);
    }
    if hash != blake3::Hash::from(manifest.payload_hash) {
        return Err(PackageError::PayloadMismatch(
            "the payload's BLAKE3 hash differs".into(),
        ));
    }
    Ok(())
}

/// Reads only a package file's manifest, verifying its signature but not the payload (fast;
/// for listing a folder). Install verifies the whole file with [`verify_package_file`].
pub fn read_manifest_file(path: &Path, vendor: &VendorPublicKey) -> Result<Manifest, PackageError> {
    let mut file =
        std::fs::File::open(path).map_err(|error| PackageError::Io(error.to_string()))?;
    read_signed_manifest(&mut file, Some(vendor))
}

/// Reads a package file's manifest without checking its signature: for the vendor's own
/// fetch, which only copies files (the appliance verifies them on install).
pub fn read_manifest_file_unverified(path: &Path) -> Result<Manifest, PackageError> {
    let mut file =
        std::fs::File::open(path).map_err(|error| PackageError::Io(error.to_string()))?;
    read_signed_manifest(&mut file, None)
}

fn read_exact_or(
    source: &mut impl Read,
    buffer: &mut [u8],
    what: &'static str,
) -> Result<(), PackageError> {
    source.read_exact(buffer).map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            PackageError::Truncated { what }
        } else {
            PackageError::Io(error.to_string())
        }
    })
}

fn read_signed_manifest(
    source: &mut impl Read,
    vendor: Option<&VendorPublicKey>,
) -> Result<Manifest, PackageError> {
    let mut header = [0u8; PACKAGE_HEADER_BYTES];
    let mut filled = 0;
    while filled < header.len() {
        match source.read(&mut header[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(PackageError::Io(error.to_string())),
        }
    }
    let manifest_len = decode_header(&header[..filled])?;
    let mut manifest_bytes = vec![0u8; manifest_len];
    read_exact_or(source, &mut manifest_bytes, "manifest")?;
    let mut signature = [0u8; SIGNATURE_BYTES];
    read_exact_or(source, &mut signature, "signature")?;
    if let Some(vendor) = vendor {
        if !vendor.verifies(&manifest_bytes, &signature) {
            return Err(PackageError::BadSignature);
        }
    }
    decode_manifest(&manifest_bytes)
}

/// Verifies a package file completely, streaming the payload through BLAKE3 (bounded memory).
pub fn verify_package_file(
    path: &Path,
    vendor: &VendorPublicKey,
) -> Result<Manifest, PackageError> {
    let file = std::fs::File::open(path).map_err(|error| PackageError::Io(error.to_string()))?;
    let mut source = std::io::BufReader::with_capacity(1 << 20, file);
    let manifest = read_signed_manifest(&mut source, Some(vendor))?;
    let mut hasher = blake3::Hasher::new();
    // One byte past the announced length is enough to tell trailing bytes apart.
    let copied = std::io::copy(
        &mut (&mut source).take(manifest.payload_len.saturating_add(1)),
        &mut hasher,
    )
    .map_err(|error| PackageError::Io(error.to_string()))?;
    check_payload(&manifest, copied, hasher.finalize())?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(major: u16, minor: u16, patch: u16) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    fn sample(key: &VendorSecretKey, payload: &[u8]) -> Vec<u8> {
        build_package(
            key,
            "app",
            PackageKind::App,
            v(7, 3, 0),
            2,
            vec!["base >= 3.2".parse().expect("requirement")],
            payload,
        )
        .expect("valid package")
    }

    #[test]
    fn a_built_package_verifies_and_says_what_it_is() {
        let key = VendorSecretKey::from_seed([7; 32]);
        let bytes = sample(&key, b"the software");
        let manifest = verify_package(&bytes, &key.public_key()).expect("verifies");
        assert_eq!(manifest.name, "app");
        assert_eq!(manifest.version, v(7, 3, 0));
        assert_eq!(manifest.requirements[0].to_string(), "base >= 3.2.0");
        assert_eq!(manifest.store_format, 2);
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let key = VendorSecretKey::from_seed([7; 32]);
        let bytes = sample(&key, b"payload bytes");
        for index in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = bytes.clone();
                damaged[index] ^= bit;
                assert!(
                    verify_package(&damaged, &key.public_key()).is_err(),
                    "flip at {index} accepted"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(verify_package(&bytes[..len], &key.public_key()).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            verify_package(&longer, &key.public_key()),
            Err(PackageError::TrailingBytes)
        );
    }

    #[test]
    fn another_vendors_package_is_refused() {
        let key = VendorSecretKey::from_seed([7; 32]);
        let other = VendorSecretKey::from_seed([8; 32]);
        let bytes = sample(&other, b"x");
        assert_eq!(
            verify_package(&bytes, &key.public_key()),
            Err(PackageError::BadSignature)
        );
    }

    #[test]
    fn keys_round_trip_through_text() {
        let key = VendorSecretKey::from_seed([9; 32]);
        let again = VendorSecretKey::parse(&key.to_text()).expect("parses");
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(
            VendorPublicKey::parse(&key.public_key().to_text()),
            Ok(key.public_key())
        );
        assert!(VendorPublicKey::parse(&key.to_text()).is_err());
    }

    #[test]
    fn requirements_parse_and_compare() {
        let requirement: Requirement = "base>=3.2".parse().expect("parses");
        let mut software = crate::appliance::build_software_version();
        software.base = v(3, 1, 9);
        assert!(!requirement.satisfied_by(&software));
        software.base = v(3, 2, 0);
        assert!(requirement.satisfied_by(&software));
        let exact: Requirement = "app = 7.3.0".parse().expect("parses");
        software.app = v(7, 3, 1);
        assert!(!exact.satisfied_by(&software));
        assert!("base ~ 3".parse::<Requirement>().is_err());
        assert!("os >= 3".parse::<Requirement>().is_err());
    }

    proptest! {
        #[test]
        fn manifests_have_one_encoding(
            name in "[a-z0-9._-]{1,64}",
            app in any::<bool>(),
            version in (any::<u16>(), any::<u16>(), any::<u16>()),
            store_format in 1u64..10,
            len in 0..PACKAGE_PAYLOAD_BYTES_MAX,
            hash in any::<[u8; 32]>(),
            requirements in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<(u16, u16, u16)>()), 0..=PACKAGE_REQUIREMENTS_MAX),
        ) {
            let manifest = Manifest {
                name,
                kind: if app { PackageKind::App } else { PackageKind::Base },
                version: v(version.0, version.1, version.2),
                store_format,
                requirements: requirements.into_iter().map(|(base, exact, (a, b, c))| Requirement {
                    kind: if base { PackageKind::Base } else { PackageKind::App },
                    comparison: if exact { Comparison::Exactly } else { Comparison::AtLeast },
                    version: v(a, b, c),
                }).collect(),
                payload_len: len,
                payload_hash: hash,
            };
            let bytes = encode_manifest(&manifest).expect("valid");
            prop_assert_eq!(decode_manifest(&bytes), Ok(manifest));
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(decode_manifest(&longer).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = VendorSecretKey::from_seed([1; 32]).public_key();
            let _ = verify_package(&bytes, &key);
            if let Ok(manifest) = decode_manifest(&bytes) {
                prop_assert_eq!(encode_manifest(&manifest).expect("decoded is valid"), bytes);
            }
        }
    }
}
