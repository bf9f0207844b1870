//! `dyad cert export` and `dyad cert import`: moving an appliance's certificate chain and
//! private key between appliances.
//!
//! An export uses the backup envelope with the chain in its public (authenticated, readable)
//! section and the private key sealed under the passphrase. An import checks what an operator
//! would otherwise only learn when the link fails: the key must match the certificate
//! (refused otherwise), an expired or not yet valid certificate and a chain that lacks its
//! issuer's certificate are warned about, and the peer's pin of the old certificate is named.
//! The validity dates are read by a small DER walk over the leaf that rustls already parsed;
//! it needs no X.509 dependency and gives up (no warning) on anything it does not expect.

use crate::appliance::{Appliance, DataDir};
use crate::transport::Identity;
use dyad_core::replica::state::ReplicaState;

use super::envelope::{Envelope, FileKind, KdfParams};
use super::{expect_kind, BackupError, REPLICA_STATE_KEY};

/// Seals `appliance`'s certificate chain (public) and private key (encrypted) into a file.
pub fn export(
    appliance: &Appliance,
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<Vec<u8>, BackupError> {
    if passphrase.len() < super::PASSPHRASE_BYTES_MIN {
        return Err(BackupError::Refused(format!(
            "the passphrase must be at least {} bytes; the file holds a private key",
            super::PASSPHRASE_BYTES_MIN
        )));
    }
    let envelope = Envelope::seal(
        FileKind::CertificateExport,
        appliance.settings.software,
        kdf,
        passphrase,
        appliance.identity.cert_chain_pem().as_bytes().to_vec(),
        appliance.identity.key_pem().as_bytes(),
    )?;
    Ok(envelope.encode())
}

/// Opens an export and checks it; returns the identity and warnings for the operator.
pub fn open_export(
    bytes: &[u8],
    passphrase: &[u8],
    now_unix_ms: u64,
) -> Result<(Identity, Vec<String>), BackupError> {
    let envelope = Envelope::parse(bytes)?;
    expect_kind(&envelope, FileKind::CertificateExport)?;
    let key_pem = envelope.open(passphrase)?;
    let identity = Identity::from_pem(&envelope.public, &key_pem).map_err(|error| match error {
        crate::transport::IdentityError::KeyDoesNotMatchCertificate => BackupError::Refused(
            "the private key in the file does not belong to its certificate; refused (nothing \
             was changed)"
                .into(),
        ),
        other => BackupError::Contents(other.to_string()),
    })?;
    let warnings = check_chain(&identity, now_unix_ms);
    Ok((identity, warnings))
}

/// Warnings about a chain that the TLS layer accepted but that may not serve well.
pub fn check_chain(identity: &Identity, now_unix_ms: u64) -> Vec<String> {
    let mut warnings = Vec::new();
    let chain = identity.chain_der();
    let now_s = (now_unix_ms / 1000) as i64;
    if let Some(leaf) = chain.first().and_then(|der| leaf_facts(der)) {
        if leaf.not_after_unix_s < now_s {
            warnings.push(format!(
                "WARNING: the certificate expired {} day(s) ago",
                (now_s - leaf.not_after_unix_s) / 86_400
            ));
        }
        if leaf.not_before_unix_s > now_s {
            warnings.push(
                "WARNING: the certificate is not valid yet (check this appliance's clock)".into(),
            );
        }
        if !leaf.self_issued && chain.len() == 1 {
            warnings.push(
                "WARNING: the chain holds only the certificate, not its issuer's certificate(s); \
                 add the intermediate certificates to the chain if verifiers need them"
                    .into(),
            );
        }
    }
    warnings
}

/// Installs `identity` in the data folder (the server must be stopped) and returns notes
/// about the relationship.
pub fn install(dir: &DataDir, identity: &Identity) -> Result<Vec<String>, BackupError> {
    let _lock = crate::appliance::lock_data_dir(dir)
        .map_err(|error| BackupError::Refused(error.to_string()))?;
    let appliance =
        Appliance::open(dir.clone()).map_err(|error| BackupError::Refused(error.to_string()))?;
    let state = {
        let store = crate::appliance::open_store(dir).map_err(|error| BackupError::Io(error.0))?;
        store
            .local_get(REPLICA_STATE_KEY)
            .map_err(|error| BackupError::Io(error.to_string()))?
            .map(|bytes| ReplicaState::from_json(&bytes))
            .transpose()
            .map_err(BackupError::Io)?
    };
    let old = appliance.identity.fingerprint();
    let new = identity.fingerprint();
    identity
        .save(&dir.cert(), &dir.private_key())
        .map_err(|error| BackupError::Io(error.to_string()))?;
    let mut notes = vec![format!(
        "certificate installed: {} (was {})",
        dyad_wire::hex::encode(&new.0),
        dyad_wire::hex::encode(&old.0)
    )];
    match state
        .as_ref()
        .and_then(|state| state.peer.as_ref().map(|peer| (state, peer)))
    {
        None => notes.push("no peer has pinned this appliance's certificate".into()),
        Some((_, peer)) if peer.certificate_fingerprint == new.0 || old == new => {
            notes.push(format!(
                "{} pins this appliance by certificate {}; nothing to do",
                peer.name,
                dyad_wire::hex::encode(&old.0)
            ))
        }
        Some((state, peer)) => notes.push(format!(
            "the peer {} has pinned the old certificate {}: it will refuse this appliance \
             (role {}) until the relationship is re-established (`dyad break` on both, then \
             `dyad establish` on the primary)",
            peer.name,
            dyad_wire::hex::encode(&old.0),
            dyad_wire::Role::name(state.role)
        )),
    }
    notes.push("restart `dyad serve` to use it".into());
    Ok(notes)
}

/// What the leaf certificate says about its validity and issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafFacts {
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
    /// Issuer equals subject (self-signed or self-issued): no chain is needed.
    pub self_issued: bool,
}

/// One DER element: tag, content, rest.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let mut len = 0usize;
        for &byte in &rest[..count] {
            len = (len << 8) | usize::from(byte);
        }
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Reads validity and issuer/subject from a certificate's DER; `None` if it looks different.
pub fn leaf_facts(der: &[u8]) -> Option<LeafFacts> {
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (mut tag, mut content, mut rest) = element(tbs)?;
    if tag == 0xa0 {
        // The explicit version; serial number follows.
        (tag, content, rest) = element(rest)?;
    }
    let _ = content;
    if tag != 0x02 {
        return None;
    }
    let (_, _, rest) = element(rest)?; // signature algorithm
    let (tag, issuer, rest) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, validity, rest) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, subject, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (before_tag, before, validity_rest) = element(validity)?;
    let (after_tag, after, _) = element(validity_rest)?;
    Some(LeafFacts {
        not_before_unix_s: time(before_tag, before)?,
        not_after_unix_s: time(after_tag, after)?,
        self_issued: issuer == subject,
    })
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        let mut value = 0i64;
        for &byte in part {
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(byte - b'0');
        }
        Some(value)
    };
    let (year, offset) = match (tag, text.len()) {
        (0x17, 13) => {
            let short = digits(0..2)?;
            (
                if short < 50 {
                    2000 + short
                } else {
                    1900 + short
                },
                2,
            )
        }
        (0x18, 15) => (digits(0..4)?, 4),
        _ => return None,
    };
    if text.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(offset..offset + 2)?;
    let day = digits(offset + 2..offset + 4)?;
    let hour = digits(offset + 4..offset + 6)?;
    let minute = digits(offset + 6..offset + 8)?;
    let second = digits(offset + 8..offset + 10)?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (counting years from March, so the
/// leap day falls at the end of each year's count).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_valid_between(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Identity {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).expect("cert");
        Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).expect("pem")
    }

    #[test]
    fn dates_convert_like_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(time(0x17, b"700101000001Z"), Some(1));
        assert_eq!(time(0x18, b"20500101000000Z"), Some(2_524_608_000));
        assert_eq!(time(0x17, b"7001010000Z"), None);
        assert_eq!(time(0x17, b"701301000000Z"), None);
    }

    #[test]
    fn expired_and_future_certificates_are_warned_about() {
        let now_ms = 1_750_000_000_000; // June 2025
        let expired = identity_valid_between((2020, 1, 1), (2021, 1, 1));
        let facts = leaf_facts(expired.leaf_der()).expect("facts");
        assert_eq!(facts.not_after_unix_s, days_from_civil(2021, 1, 1) * 86_400);
        assert!(facts.self_issued);
        let warnings = check_chain(&expired, now_ms);
        assert!(
            warnings.iter().any(|w| w.contains("expired")),
            "{warnings:?}"
        );
        let future = identity_valid_between((2090, 1, 1), (2091, 1, 1));
        assert!(check_chain(&future, now_ms)
            .iter()
            .any(|w| w.contains("not valid yet")));
        let fine = identity_valid_between((2020, 1, 1), (2090, 1, 1));
        assert_eq!(check_chain(&fine, now_ms), Vec::<String>::new());
    }

    #[test]
    fn a_leaf_issued_by_a_ca_without_its_chain_is_warned_about() {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "site CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let mut leaf_params =
            rcgen::CertificateParams::new(vec!["b.example".into()]).expect("params");
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "appliance b");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
        let alone = Identity::from_pem(leaf.pem().as_bytes(), leaf_key.serialize_pem().as_bytes())
            .expect("pem");
        let now_ms = 1_750_000_000_000;
        assert!(check_chain(&alone, now_ms)
            .iter()
            .any(|w| w.contains("issuer")));
        let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
        let whole =
            Identity::from_pem(chain.as_bytes(), leaf_key.serialize_pem().as_bytes()).expect("pem");
        assert_eq!(check_chain(&whole, now_ms), Vec::<String>::new());
    }

    #[test]
    fn export_then_import_gives_the_same_identity_and_refuses_wrong_passphrases() {
        let dir = std::env::temp_dir().join(format!("dyad-cert-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::appliance::ensure_folder(&dir).expect("folder");
        let appliance = Appliance::init(
            DataDir::new(&dir),
            crate::appliance::InitOptions {
                name: "a".into(),
                listen: "127.0.0.1:7499".into(),
                site_hostname: None,
                psk_text: None,
                software: crate::appliance::build_software_version(),
                identity_pem: None,
                vendor_public_key: None,
                store_format: None,
            },
        )
        .expect("init");
        let bytes = export(
            &appliance,
            b"export passphrase",
            KdfParams::INSECURE_FOR_TESTS,
        )
        .expect("export");
        let envelope = Envelope::parse(&bytes).expect("parse");
        assert_eq!(
            envelope.public,
            appliance.identity.cert_chain_pem().as_bytes()
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PRIVATE KEY"), "the key is sealed");
        let (identity, warnings) = open_export(&bytes, b"export passphrase", 0).expect("open");
        assert_eq!(identity.fingerprint(), appliance.identity.fingerprint());
        assert!(warnings.iter().all(|w| !w.contains("expired")));
        assert!(matches!(
            open_export(&bytes, b"another passphrase", 0),
            Err(BackupError::Open(_))
        ));
        let notes = install(&DataDir::new(&dir), &identity).expect("install");
        assert!(notes.iter().any(|n| n.contains("no peer")), "{notes:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
