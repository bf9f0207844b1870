//! The one rustls crypto provider Dyad uses (ring, TLS 1.3 suites in our order), shared by the
//! identity checks and the TLS configurations.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The one crypto provider Dyad uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            // AES-128-GCM first: with AES-NI it is the cheapest AEAD on the receiving core,
            // which is the bottleneck of bulk transfer, and 128-bit keys are ample here.
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites = vec![
                rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
                rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
                rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            ];
            Arc::new(provider)
        })
        .clone()
}
