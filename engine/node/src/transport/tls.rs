//! rustls configuration for the appliance link: TLS 1.3 only, ring provider only, both sides
//! present certificates, and a certificate verifier that checks form and handshake signatures
//! but not issuers.
//!
//! The appliances' certificates are self-signed (or issued by a CA the peer knows nothing
//! about), so no chain can be checked. Trust comes from the inter-appliance key proof that runs
//! right after the handshake and binds both certificates (see `handshake.rs`), and from pinning
//! the peer's certificate once paired. What the verifier must still do is make sure the peer
//! owns the private key of the certificate it shows: rustls asks it to check the handshake
//! signature, and it does so with the ring provider's algorithms.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::sign::SingleCertAndKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, PeerIncompatible, ServerConfig,
    SignatureScheme,
};

use super::crypto_provider::provider;
use super::identity::Identity;

/// The name a client puts in its ClientHello. The verifier ignores names (appliances are found by
/// address and trusted by key), so any fixed valid name serves; `.invalid` can never resolve.
pub const TLS_SERVER_NAME: &str = "peer.dyad.invalid";

/// Accepts any well-formed certificate and checks TLS 1.3 handshake signatures against it.
#[derive(Debug)]
pub struct PeerCertVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerCertVerifier {
    pub fn new() -> Arc<PeerCertVerifier> {
        Arc::new(PeerCertVerifier {
            algorithms: provider().signature_verification_algorithms,
        })
    }
}

fn check_well_formed(end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    ParsedCertificate::try_from(end_entity).map(|_| ())
}

impl ServerCertVerifier for PeerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_well_formed(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerIncompatible::Tls12NotOffered.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_well_formed(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerIncompatible::Tls12NotOffered.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client side's rustls configuration. Session resumption is off: every connection runs a
/// full handshake with both certificates, so the certificates bound by the key proof are the
/// ones this very handshake authenticated.
pub fn client_config(identity: &Identity) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(PeerCertVerifier::new())
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key())));
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The server side's rustls configuration; see [`client_config`] for why resumption is off.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(PeerCertVerifier::new())
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key())));
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
