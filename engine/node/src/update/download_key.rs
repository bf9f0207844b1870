//! The appliance download key: how an appliance on a restricted network asks for its updates.
//!
//! The key names the appliance (node id, name), its installed versions and store format, and
//! when it was made, and is **signed with the appliance's TLS identity key**; it carries the
//! identity's certificate. The vendor side (`dyad update fetch`) needs no secret to check it: it
//! verifies the signature against the certificate's public key (any key type rustls's ring
//! provider supports: Ed25519, ECDSA, RSA), which proves the key was made by the holder of that
//! identity and was not altered on the way. The certificate's fingerprint is the one `dyad
//! status` shows and the peer pins, so the vendor can match it against its customer records.
//! A keyed hash with a secret derived from the identity would have needed the vendor to hold
//! that secret; a signature does not.
//!
//! The key is a small JSON document (readable when it is carried on a USB stick or pasted in
//! a ticket). Its decoder takes at most [`DOWNLOAD_KEY_BYTES_MAX`] bytes, refuses unknown
//! fields, and the signature covers a fixed binary encoding of the fields, never the JSON text.

use std::fmt;

use rustls::SignatureScheme;
use serde::{Deserialize, Serialize};

use dyad_wire::{NodeId, SoftwareVersion};

use crate::appliance::{parse_version, Appliance};
use crate::transport::{provider, CertFingerprint};
use dyad_core::replica::state::parse_node_id;

/// The download-key layout this code reads and writes.
pub const DOWNLOAD_KEY_FORMAT: u32 = 1;
/// Largest download key accepted (a key with an RSA-4096 certificate is about 5 KiB).
pub const DOWNLOAD_KEY_BYTES_MAX: usize = 32 * 1024;
/// Largest certificate a key may carry.
pub const DOWNLOAD_KEY_CERT_BYTES_MAX: usize = 8 * 1024;
/// A key whose time differs from the vendor machine's clock by more than this is refused: it
/// was made on an appliance whose clock is wrong (or it is an old key).
pub const DOWNLOAD_KEY_CLOCK_TOLERANCE_MS: u64 = 24 * 60 * 60 * 1000;
const SIGNATURE_CONTEXT: &[u8] = b"dyad download key v1\0";
/// Schemes the appliance may sign with, in order of preference.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

/// What a verified download key says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadKey {
    pub node_id: NodeId,
    pub name: String,
    pub software: SoftwareVersion,
    pub store_format: u64,
    pub issued_unix_ms: u64,
    pub certificate_der: Vec<u8>,
}

impl DownloadKey {
    pub fn certificate_fingerprint(&self) -> CertFingerprint {
        CertFingerprint::of_der(&self.certificate_der)
    }
}

/// Why a download key was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadKeyError {
    /// Not a download key, or a damaged one.
    Malformed(String),
    /// The signature does not verify against the key's certificate: altered or forged.
    BadSignature,
    /// The key's time is too far from this machine's clock.
    ClockSkew { key_unix_ms: u64, now_unix_ms: u64 },
    /// The appliance's identity could not sign.
    Sign(String),
}

impl fmt::Display for DownloadKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadKeyError::Malformed(why) => write!(
                f,
                "not a usable download key ({why}); make a new one with `dyad update \
                 download-key` on the appliance"
            ),
            DownloadKeyError::BadSignature => f.write_str(
                "the download key's signature does not verify against its certificate: it was \
                 altered or forged; make a new one on the appliance",
            ),
            DownloadKeyError::ClockSkew {
                key_unix_ms,
                now_unix_ms,
            } => {
                let hours = key_unix_ms.abs_diff(*now_unix_ms) as f64 / 3_600_000.0;
                write!(
                    f,
                    "the download key was made {hours:.1} h {} this machine's clock (the \
                     tolerance is {} h): check the appliance's clock and its NTP servers, then \
                     make a new key with `dyad update download-key`",
                    if key_unix_ms > now_unix_ms {
                        "ahead of"
                    } else {
                        "behind"
                    },
                    DOWNLOAD_KEY_CLOCK_TOLERANCE_MS / 3_600_000
                )
            }
            DownloadKeyError::Sign(why) => write!(f, "cannot sign the download key: {why}"),
        }
    }
}

impl std::error::Error for DownloadKeyError {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyDocument {
    format: u32,
    node_id: String,
    name: String,
    app_version: String,
    base_version: String,
    store_format: u64,
    issued_unix_ms: u64,
    certificate: String,
    signature_scheme: u16,
    signature: String,
}

fn signed_message(key: &DownloadKey) -> Vec<u8> {
    let mut out = SIGNATURE_CONTEXT.to_vec();
    out.extend_from_slice(&key.node_id.0);
    out.extend_from_slice(&(key.name.len() as u32).to_le_bytes());
    out.extend_from_slice(key.name.as_bytes());
    for version in [key.software.app, key.software.base] {
        out.extend_from_slice(&version.major.to_le_bytes());
        out.extend_from_slice(&version.minor.to_le_bytes());
        out.extend_from_slice(&version.patch.to_le_bytes());
    }
    out.extend_from_slice(&key.store_format.to_le_bytes());
    out.extend_from_slice(&key.issued_unix_ms.to_le_bytes());
    out.extend_from_slice(&(key.certificate_der.len() as u32).to_le_bytes());
    out.extend_from_slice(&key.certificate_der);
    out
}

fn unhex(text: &str, max_bytes: usize, what: &str) -> Result<Vec<u8>, DownloadKeyError> {
    if !text.len().is_multiple_of(2) || text.len() / 2 > max_bytes || !text.is_ascii() {
        return Err(DownloadKeyError::Malformed(format!("bad {what}")));
    }
    (0..text.len() / 2)
        .map(|index| {
            u8::from_str_radix(&text[index * 2..index * 2 + 2], 16)
                .map_err(|_| DownloadKeyError::Malformed(format!("bad {what}")))
        })
        .collect()
}

/// Makes and signs this appliance's download key.
pub fn make_download_key(
    appliance: &Appliance,
    store_format: u64,
    now_unix_ms: u64,
) -> Result<String, DownloadKeyError> {
    let key = DownloadKey {
        node_id: appliance.settings.node_id,
        name: appliance.settings.name.clone(),
        software: appliance.settings.software,
        store_format,
        issued_unix_ms: now_unix_ms,
        certificate_der: appliance.identity.leaf_der().as_ref().to_vec(),
    };
    let certified = appliance.identity.certified_key();
    let signer = certified.key.choose_scheme(SCHEMES).ok_or_else(|| {
        DownloadKeyError::Sign(
            "the identity's key type cannot sign with any supported scheme".into(),
        )
    })?;
    let scheme = signer.scheme();
    let signature = signer
        .sign(&signed_message(&key))
        .map_err(|error| DownloadKeyError::Sign(error.to_string()))?;
    let document = KeyDocument {
        format: DOWNLOAD_KEY_FORMAT,
        node_id: key.node_id.to_string(),
        name: key.name,
        app_version: key.software.app.to_string(),
        base_version: key.software.base.to_string(),
        store_format: key.store_format,
        issued_unix_ms: key.issued_unix_ms,
        certificate: dyad_wire::hex::encode(&key.certificate_der),
        signature_scheme: u16::from(scheme),
        signature: dyad_wire::hex::encode(&signature),
    };
    let mut text = serde_json::to_string_pretty(&document)
        .expect("a struct of strings and numbers serializes");
    text.push('\n');
    Ok(text)
}

/// Decodes a download key and verifies its signature (not its time; see [`check_key_time`]).
pub fn verify_download_key(bytes: &[u8]) -> Result<DownloadKey, DownloadKeyError> {
    if bytes.len() > DOWNLOAD_KEY_BYTES_MAX {
        return Err(DownloadKeyError::Malformed(format!(
            "{} bytes, above the limit of {DOWNLOAD_KEY_BYTES_MAX}",
            bytes.len()
        )));
    }
    let document: KeyDocument = serde_json::from_slice(bytes)
        .map_err(|error| DownloadKeyError::Malformed(error.to_string()))?;
    if document.format != DOWNLOAD_KEY_FORMAT {
        return Err(DownloadKeyError::Malformed(format!(
            "format {} is not the {DOWNLOAD_KEY_FORMAT} this version reads",
            document.format
        )));
    }
    if document.name.len() > dyad_wire::limits::MAX_NODE_NAME_BYTES {
        return Err(DownloadKeyError::Malformed("the name is too long".into()));
    }
    let key = DownloadKey {
        node_id: parse_node_id(&document.node_id).map_err(DownloadKeyError::Malformed)?,
        name: document.name,
        software: SoftwareVersion {
            app: parse_version(&document.app_version).map_err(DownloadKeyError::Malformed)?,
            base: parse_version(&document.base_version).map_err(DownloadKeyError::Malformed)?,
        },
        store_format: document.store_format,
        issued_unix_ms: document.issued_unix_ms,
        certificate_der: unhex(
            &document.certificate,
            DOWNLOAD_KEY_CERT_BYTES_MAX,
            "certificate",
        )?,
    };
    let signature = unhex(&document.signature, 1024, "signature")?;
    let scheme = SignatureScheme::from(document.signature_scheme);
    let certificate = rustls_pki_types::CertificateDer::from(key.certificate_der.as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&certificate)
        .map_err(|error| DownloadKeyError::Malformed(format!("bad certificate: {error:?}")))?;
    let algorithms = provider()
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(candidate, _)| *candidate == scheme)
        .map(|(_, algorithms)| *algorithms)
        .ok_or_else(|| DownloadKeyError::Malformed("unsupported signature scheme".into()))?;
    let message = signed_message(&key);
    if algorithms.iter().any(|algorithm| {
        end_entity
            .verify_signature(*algorithm, &message, &signature)
            .is_ok()
    }) {
        Ok(key)
    } else {
        Err(DownloadKeyError::BadSignature)
    }
}

/// Refuses a key made more than [`DOWNLOAD_KEY_CLOCK_TOLERANCE_MS`] away from `now_unix_ms`.
pub fn check_key_time(key: &DownloadKey, now_unix_ms: u64) -> Result<(), DownloadKeyError> {
    if key.issued_unix_ms.abs_diff(now_unix_ms) > DOWNLOAD_KEY_CLOCK_TOLERANCE_MS {
        return Err(DownloadKeyError::ClockSkew {
            key_unix_ms: key.issued_unix_ms,
            now_unix_ms,
        });
    }
    Ok(())
}
