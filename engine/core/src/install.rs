//! Install planning: the decisions an install and its crash recovery make, from facts the
//! data folder shows (the journal's store formats and software, the store's format now). The
//! file-facing install steps live in the node; the simulator plays the same decisions.

use dyad_wire::SoftwareVersion;

/// What the recovery of an interrupted install does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryDecision {
    /// Something had changed (the store was migrated, or the new versions were recorded): the
    /// package was verified before the journal was written, so the install is finished.
    Complete,
    /// Nothing had changed yet: the old version stays.
    RollBack,
}

/// Decides an interrupted install's fate from its journal (store formats before and after,
/// the target software) and what the data folder shows now (the store's format, the software
/// recorded as installed). Each install step is atomic, so these facts are enough.
pub fn recovery_decision(
    from_store_format: u64,
    to_store_format: u64,
    store_format_now: u64,
    installed: SoftwareVersion,
    to: SoftwareVersion,
) -> RecoveryDecision {
    let migrated = to_store_format > from_store_format && store_format_now >= to_store_format;
    if installed == to || migrated {
        RecoveryDecision::Complete
    } else {
        RecoveryDecision::RollBack
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyad_wire::Version;

    fn software(app_minor: u16) -> SoftwareVersion {
        SoftwareVersion {
            app: Version {
                major: 7,
                minor: app_minor,
                patch: 0,
            },
            base: Version {
                major: 3,
                minor: 2,
                patch: 0,
            },
        }
    }

    #[test]
    fn recovery_completes_once_anything_changed_and_rolls_back_otherwise() {
        let (old, new) = (software(3), software(4));
        use RecoveryDecision::{Complete, RollBack};
        // (from format, to format, format now, installed) -> decision
        for (from, to, now, installed, expected) in [
            (1, 2, 1, old, RollBack),
            (1, 2, 2, old, Complete),
            (1, 2, 2, new, Complete),
            (2, 2, 2, old, RollBack),
            (2, 2, 2, new, Complete),
        ] {
            assert_eq!(
                recovery_decision(from, to, now, installed, new),
                expected,
                "{from} {to} {now} {installed}"
            );
        }
    }
}
