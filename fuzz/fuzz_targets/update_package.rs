//! Arbitrary bytes as an update package file, a package manifest and an appliance download
//! key: no decoder may panic; a manifest that decodes re-encodes to the same bytes; a package
//! that verifies was signed by the fuzzer's key (fuzz inputs cannot forge the signature, so
//! the corpus is seeded with packages made by that key and mutated from there).
#![no_main]

use std::sync::OnceLock;

use dyad_node::update::download_key::verify_download_key;
use dyad_node::update::package::{decode_manifest, encode_manifest};
use dyad_node::update::{build_package, verify_package, PackageKind, VendorSecretKey};
use dyad_wire::Version;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static VendorSecretKey {
    static KEY: OnceLock<VendorSecretKey> = OnceLock::new();
    KEY.get_or_init(|| VendorSecretKey::from_seed([42; 32]))
}

fuzz_target!(|data: &[u8]| {
    let public = key().public_key();
    if let Ok(manifest) = verify_package(data, &public) {
        assert_eq!(manifest.payload_len as usize + manifest_overhead(data), data.len());
    }
    if let Ok(manifest) = decode_manifest(data) {
        assert_eq!(encode_manifest(&manifest).expect("a decoded manifest is valid"), data);
    }
    let _ = verify_download_key(data);
    // A valid package around the input as payload always verifies, and any single flipped
    // byte of it never does.
    if data.len() < 4096 {
        let version = Version { major: 1, minor: 2, patch: 3 };
        let package = build_package(key(), "fuzz", PackageKind::App, version, 1, Vec::new(), data)
            .expect("a valid manifest");
        assert!(verify_package(&package, &public).is_ok());
        if !data.is_empty() {
            let mut damaged = package.clone();
            let index = data[0] as usize % damaged.len();
            damaged[index] ^= 1;
            assert!(verify_package(&damaged, &public).is_err());
        }
    }
});

/// Header, manifest and signature bytes in front of the payload.
fn manifest_overhead(data: &[u8]) -> usize {
    let manifest_len = u32::from_le_bytes([data[10], data[11], data[12], data[13]]) as usize;
    14 + manifest_len + 64
}
