//! The vendor's keys: the secret one package tools sign with, and the public one an appliance
//! trusts packages by (kept in its data folder, carried in its settings backup).

use std::fmt;

use dyad_wire::hex;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// Bytes of a package signature (Ed25519).
pub const SIGNATURE_BYTES: usize = 64;
/// Domain separation for the package signature.
const SIGNATURE_CONTEXT: &[u8] = b"dyad update package v1\0";
const SECRET_PREFIX: &str = "dyad-vendor-secret-v1:";
const PUBLIC_PREFIX: &str = "dyad-vendor-public-v1:";

/// The vendor's signing key (the seed of an Ed25519 key pair). Only package tools hold it.
pub struct VendorSecretKey {
    seed: [u8; 32],
}

impl fmt::Debug for VendorSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VendorSecretKey(redacted)")
    }
}

/// The vendor's public key: what an appliance trusts packages by (given at `dyad init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VendorPublicKey(pub [u8; 32]);

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode_array::<32>(text.trim()).ok()
}

impl VendorSecretKey {
    /// A new key from the system's random generator.
    pub fn generate() -> Result<VendorSecretKey, String> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| "the system random generator failed".to_string())?;
        Ok(VendorSecretKey { seed })
    }

    pub fn from_seed(seed: [u8; 32]) -> VendorSecretKey {
        VendorSecretKey { seed }
    }

    fn key_pair(&self) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&self.seed)
            .expect("every 32-byte seed is a valid Ed25519 private key")
    }

    pub fn public_key(&self) -> VendorPublicKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key_pair().public_key().as_ref());
        VendorPublicKey(out)
    }

    /// `dyad-vendor-secret-v1:<hex>`.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", hex::encode(&self.seed))
    }

    pub fn parse(text: &str) -> Result<VendorSecretKey, String> {
        text.trim()
            .strip_prefix(SECRET_PREFIX)
            .and_then(parse_hex32)
            .map(|seed| VendorSecretKey { seed })
            .ok_or_else(|| "not a vendor secret key from `dyad update vendor-keygen`".to_string())
    }

    pub(crate) fn sign(&self, manifest: &[u8]) -> [u8; SIGNATURE_BYTES] {
        let mut message = SIGNATURE_CONTEXT.to_vec();
        message.extend_from_slice(manifest);
        let mut out = [0u8; SIGNATURE_BYTES];
        out.copy_from_slice(self.key_pair().sign(&message).as_ref());
        out
    }
}

impl VendorPublicKey {
    /// `dyad-vendor-public-v1:<hex>`.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}\n", hex::encode(&self.0))
    }

    pub fn parse(text: &str) -> Result<VendorPublicKey, String> {
        text.trim()
            .strip_prefix(PUBLIC_PREFIX)
            .and_then(parse_hex32)
            .map(VendorPublicKey)
            .ok_or_else(|| {
                "not a vendor public key (expected one line `dyad-vendor-public-v1:<64 hex \
                 digits>` as written by `dyad update vendor-keygen`)"
                    .to_string()
            })
    }

    /// Whether `signature` is this key's signature of `manifest`.
    pub(crate) fn verifies(&self, manifest: &[u8], signature: &[u8]) -> bool {
        let mut message = SIGNATURE_CONTEXT.to_vec();
        message.extend_from_slice(manifest);
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&message, signature)
            .is_ok()
    }
}
