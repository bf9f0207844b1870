//! An appliance's TLS identity: its certificate chain and private key.
//!
//! Each appliance makes its own self-signed identity at init (rcgen, Ed25519) or loads one the
//! operator provides as PEM. The certificate is not what makes a peer trusted (the
//! inter-appliance key proof does that); it gives each appliance a stable public identity that
//! the other side pins once the relationship is established, so a swapped appliance is noticed
//! even if it holds the key. See `docs/security.md`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::crypto_provider::provider;
use super::files::{self, FileError, PUBLIC_FILE_MODE, SECRET_FILE_MODE};

/// Largest certificate chain or key PEM file we read.
pub const MAX_IDENTITY_PEM_BYTES: u64 = 256 * 1024;

/// Longest certificate chain accepted from an operator's PEM.
pub const MAX_CERT_CHAIN_LEN: usize = 8;

/// The BLAKE3 hash of a certificate's DER encoding: what is pinned and shown.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    pub fn of_der(der: &[u8]) -> CertFingerprint {
        CertFingerprint(*blake3::hash(der).as_bytes())
    }
}

impl fmt::Display for CertFingerprint {
    /// Sixteen groups of four hex digits (the core's one spelling of a certificate fingerprint).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&dyad_core::handshake::certificate_fingerprint_text(&self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

/// Why an identity could not be made or loaded. The local operator's to fix.
#[derive(Debug)]
pub enum IdentityError {
    File(FileError),
    /// The certificate PEM holds no certificate, or one that does not parse.
    BadCertificate(String),
    /// The key PEM holds no private key, or one rustls's ring provider cannot use.
    BadPrivateKey(String),
    /// The private key does not belong to the certificate.
    KeyDoesNotMatchCertificate,
    Generate(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::File(error) => write!(f, "appliance identity: {error}"),
            IdentityError::BadCertificate(why) => write!(
                f,
                "the appliance certificate PEM is not usable ({why}); provide a PEM file holding \
                 the certificate first and then any intermediates"
            ),
            IdentityError::BadPrivateKey(why) => write!(
                f,
                "the appliance private key PEM is not usable ({why}); provide a PKCS#8, PKCS#1 or \
                 SEC1 PEM key of type Ed25519, ECDSA P-256/P-384 or RSA"
            ),
            IdentityError::KeyDoesNotMatchCertificate => write!(
                f,
                "the appliance private key does not belong to the certificate; provide the key \
                 that was used to request the certificate"
            ),
            IdentityError::Generate(why) => {
                write!(f, "cannot generate the appliance identity: {why}")
            }
        }
    }
}

impl std::error::Error for IdentityError {}

impl From<FileError> for IdentityError {
    fn from(error: FileError) -> Self {
        IdentityError::File(error)
    }
}

/// Certificate chain and private key, parsed once and ready for rustls.
#[derive(Clone)]
pub struct Identity {
    certified: Arc<CertifiedKey>,
    cert_chain_pem: String,
    key_pem: String,
    fingerprint: CertFingerprint,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .field("private_key", &"redacted")
            .finish()
    }
}

impl Identity {
    /// A new self-signed Ed25519 identity whose subject names this appliance.
    pub fn generate(node_name: &str) -> Result<Identity, IdentityError> {
        let signing_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|error| IdentityError::Generate(error.to_string()))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("dyad appliance {node_name}"),
        );
        let cert = params
            .self_signed(&signing_key)
            .map_err(|error| IdentityError::Generate(error.to_string()))?;
        Identity::from_pem(
            cert.pem().as_bytes(),
            signing_key.serialize_pem().as_bytes(),
        )
    }

    /// An identity from operator-provided PEM: the certificate chain (leaf first) and its key.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Identity, IdentityError> {
        let mut chain = Vec::new();
        for cert in CertificateDer::pem_slice_iter(cert_chain_pem) {
            let cert = cert.map_err(|error| IdentityError::BadCertificate(error.to_string()))?;
            if chain.len() == MAX_CERT_CHAIN_LEN {
                return Err(IdentityError::BadCertificate(format!(
                    "more than {MAX_CERT_CHAIN_LEN} certificates"
                )));
            }
            chain.push(cert);
        }
        let Some(leaf) = chain.first() else {
            return Err(IdentityError::BadCertificate(
                "no CERTIFICATE section found".to_string(),
            ));
        };
        rustls::server::ParsedCertificate::try_from(leaf)
            .map_err(|error| IdentityError::BadCertificate(error.to_string()))?;
        let fingerprint = CertFingerprint::of_der(leaf);
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|error| IdentityError::BadPrivateKey(error.to_string()))?;
        let provider: &CryptoProvider = &provider();
        let certified =
            CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
                rustls::Error::InconsistentKeys(_) => IdentityError::KeyDoesNotMatchCertificate,
                other => IdentityError::BadPrivateKey(other.to_string()),
            })?;
        Ok(Identity {
            certified: Arc::new(certified),
            cert_chain_pem: String::from_utf8_lossy(cert_chain_pem).into_owned(),
            key_pem: String::from_utf8_lossy(key_pem).into_owned(),
            fingerprint,
        })
    }

    /// Loads an identity saved by [`Identity::save`]; the key file must be private (0600).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Identity, IdentityError> {
        let cert_pem = files::read_limited(cert_path, MAX_IDENTITY_PEM_BYTES, false)?;
        let key_pem = files::read_limited(key_path, MAX_IDENTITY_PEM_BYTES, true)?;
        Identity::from_pem(&cert_pem, &key_pem)
    }

    /// Saves the certificate chain (0644) and the private key (0600), each atomically.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), IdentityError> {
        files::write_atomically(key_path, self.key_pem.as_bytes(), SECRET_FILE_MODE)?;
        files::write_atomically(cert_path, self.cert_chain_pem.as_bytes(), PUBLIC_FILE_MODE)?;
        Ok(())
    }

    /// The fingerprint of the leaf certificate: what the peer pins.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// The certificate chain as PEM (public).
    pub fn cert_chain_pem(&self) -> &str {
        &self.cert_chain_pem
    }

    /// The private key as PEM. Secret: only for writing the key file or a sealed backup.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Every certificate of the chain, leaf first, DER.
    pub fn chain_der(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The leaf certificate, DER.
    pub fn leaf_der(&self) -> &CertificateDer<'static> {
        self.certified
            .cert
            .first()
            .expect("from_pem refuses an empty chain")
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_identities_are_distinct_and_round_trip_through_files() {
        let first = Identity::generate("alpha").expect("generate");
        let second = Identity::generate("alpha").expect("generate");
        assert_ne!(first.fingerprint(), second.fingerprint());
        assert!(!format!("{first:?}").contains("PRIVATE"));

        let dir = std::env::temp_dir().join(format!("dyad-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (cert_path, key_path) = (dir.join("identity.pem"), dir.join("identity.key"));
        first.save(&cert_path, &key_path).expect("save");
        let key_mode = std::fs::metadata(&key_path)
            .expect("key")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(key_mode, 0o600);
        let loaded = Identity::load(&cert_path, &key_path).expect("load");
        assert_eq!(loaded.fingerprint(), first.fingerprint());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn mismatched_or_garbage_pem_is_refused() {
        let first = Identity::generate("alpha").expect("generate");
        let second = Identity::generate("beta").expect("generate");
        assert!(matches!(
            Identity::from_pem(first.cert_chain_pem.as_bytes(), second.key_pem.as_bytes()),
            Err(IdentityError::KeyDoesNotMatchCertificate)
        ));
        assert!(matches!(
            Identity::from_pem(b"hello", first.key_pem.as_bytes()),
            Err(IdentityError::BadCertificate(_))
        ));
        assert!(matches!(
            Identity::from_pem(first.cert_chain_pem.as_bytes(), b"nope"),
            Err(IdentityError::BadPrivateKey(_))
        ));
        let bogus_cert =
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Identity::from_pem(bogus_cert.as_bytes(), first.key_pem.as_bytes()),
            Err(IdentityError::BadCertificate(_))
        ));
    }

    #[test]
    fn operator_pem_from_another_generator_loads() {
        // An ECDSA P-256 certificate, as an operator's own CA tooling would typically produce.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["backup.example.net".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let identity = Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .expect("operator PEM loads");
        assert_eq!(identity.fingerprint(), CertFingerprint::of_der(cert.der()));
    }
}
