//! `dyad backup inspect`: what a backup holds, shown without its secrets, and what restoring
//! it onto a given data folder would change (a dry run).
//!
//! Keys and private keys appear only as fingerprints, configuration values only as the list of
//! keys, so the output can be pasted into a ticket.

use std::collections::BTreeMap;

use crate::appliance::ApplianceSettings;
use dyad_core::replica::state::ReplicaState;

use super::contents::{BackupContents, StoreSettings};
use super::envelope::Envelope;

/// Configuration keys listed one by one in a dry run, at most; more are counted.
const KEYS_LISTED_MAX: usize = 20;

/// An appliance as it stands now, for a dry run.
pub struct CurrentAppliance {
    pub settings: ApplianceSettings,
    pub certificate_fingerprint: String,
    pub key_fingerprint: String,
    pub store: StoreSettings,
}

/// What the target folder holds.
pub enum Target {
    /// Missing or empty: a restore would create the appliance.
    Fresh,
    /// Holds files but no appliance: a restore is refused.
    NotEmpty,
    /// Holds an appliance: a restore is refused; the differences say what replacing it would
    /// change.
    Appliance(Box<CurrentAppliance>),
}

fn relationship(state: Option<&ReplicaState>) -> String {
    match state {
        None => "standalone (no replica state yet)".to_string(),
        Some(state) => {
            let mut text = format!(
                "{} in epoch {}",
                dyad_wire::Role::name(state.role),
                state.epoch
            );
            if let Some(peer) = &state.peer {
                text.push_str(&format!(
                    "; peer {} at {} (pinned certificate {})",
                    peer.name,
                    peer.address,
                    dyad_wire::hex::encode(&peer.certificate_fingerprint)
                ));
            }
            text
        }
    }
}

/// One line per fact, no secrets.
pub fn describe(envelope: &Envelope, contents: &BackupContents) -> Vec<String> {
    let settings = &contents.settings;
    let store = &contents.store;
    let mut lines = vec![
        format!("settings backup of appliance {}", settings.name),
        format!("  written by software    {}", envelope.software),
        format!("  taken at (unix ms)     {}", contents.taken_unix_ms),
        format!(
            "  passphrase KDF         argon2id, {} KiB, {} passes, {} lanes",
            envelope.kdf.memory_kib, envelope.kdf.iterations, envelope.kdf.lanes
        ),
        format!("  node id                {}", settings.node_id),
        format!("  failover port          {}", settings.listen),
        format!(
            "  site hostname          {}",
            settings.site_hostname.as_deref().unwrap_or("-")
        ),
        format!(
            "  certificate            {}",
            dyad_wire::hex::encode(&contents.identity.fingerprint().0)
        ),
        format!(
            "  certificate chain      {} certificate(s)",
            contents.identity.chain_der().len()
        ),
        format!("  key fingerprint        {}", contents.psk.fingerprint()),
        format!(
            "  failover               {}",
            relationship(store.replica_state.as_ref())
        ),
        format!(
            "  site configuration     {} keys at version {}",
            store.config.entries.len(),
            store.config.version
        ),
        format!(
            "  local session floor    {} (a restore takes a new node id and numbers from {})",
            store.local_sequence_floor,
            super::RESTORED_SEQUENCE_FLOOR
        ),
        format!("  conflict records       {}", store.conflicts.len()),
    ];
    if store.high_water_marks.is_empty() {
        lines.push("  high-water marks       none (no sessions)".into());
    }
    for (origin, sequence) in &store.high_water_marks {
        let own = if *origin == settings.node_id {
            " (this appliance)"
        } else {
            ""
        };
        lines.push(format!(
            "  high-water mark        {origin}{own}: {sequence}"
        ));
    }
    lines.push("  not included           recordings (they return by sync from the peer)".into());
    lines
}

fn compare(lines: &mut Vec<String>, what: &str, now: &str, restored: &str) {
    if now == restored {
        lines.push(format!("  {what}: unchanged ({now})"));
    } else {
        lines.push(format!("  {what}: {now} -> {restored}"));
    }
}

fn config_changes(now: &StoreSettings, restored: &StoreSettings) -> Vec<String> {
    let current: BTreeMap<&str, &[u8]> = now
        .config
        .entries
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_slice()))
        .collect();
    let incoming: BTreeMap<&str, &[u8]> = restored
        .config
        .entries
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_slice()))
        .collect();
    let mut changes = Vec::new();
    for (key, value) in &incoming {
        match current.get(key) {
            None => changes.push(format!("added {key}")),
            Some(old) if old != value => changes.push(format!("changed {key}")),
            Some(_) => {}
        }
    }
    for key in current.keys() {
        if !incoming.contains_key(key) {
            changes.push(format!("removed {key}"));
        }
    }
    changes
}

/// What restoring `contents` onto `target` (named `path`) would do.
pub fn dry_run(path: &str, target: &Target, contents: &BackupContents) -> Vec<String> {
    let settings = &contents.settings;
    match target {
        Target::Fresh => vec![
            format!(
                "restoring onto {path} would create appliance {} (node id {}) with the \
                 certificate, key, site configuration and failover settings above",
                settings.name, settings.node_id
            ),
            format!(
                "it would take a new node id succeeding {}; its own sessions would be numbered \
                 from {} under it; its recordings would arrive by sync",
                settings.node_id,
                super::RESTORED_SEQUENCE_FLOOR
            ),
        ],
        Target::NotEmpty => vec![format!(
            "a restore onto {path} would be refused: the folder is not empty"
        )],
        Target::Appliance(current) => {
            let mut lines = vec![format!(
                "a restore onto {path} would be refused: it holds appliance {}. Replacing \
                     it with this backup would change:",
                current.settings.name
            )];
            compare(
                &mut lines,
                "node id",
                &current.settings.node_id.to_string(),
                &settings.node_id.to_string(),
            );
            compare(&mut lines, "name", &current.settings.name, &settings.name);
            compare(
                &mut lines,
                "failover port",
                &current.settings.listen,
                &settings.listen,
            );
            compare(
                &mut lines,
                "software",
                &current.settings.software.to_string(),
                &settings.software.to_string(),
            );
            compare(
                &mut lines,
                "certificate",
                &current.certificate_fingerprint,
                &dyad_wire::hex::encode(&contents.identity.fingerprint().0),
            );
            compare(
                &mut lines,
                "key fingerprint",
                &current.key_fingerprint,
                &contents.psk.fingerprint().to_string(),
            );
            compare(
                &mut lines,
                "failover",
                &relationship(current.store.replica_state.as_ref()),
                &relationship(contents.store.replica_state.as_ref()),
            );
            let changes = config_changes(&current.store, &contents.store);
            lines.push(format!(
                "  site configuration: {} key(s) differ",
                changes.len()
            ));
            for change in changes.iter().take(KEYS_LISTED_MAX) {
                lines.push(format!("    {change}"));
            }
            if changes.len() > KEYS_LISTED_MAX {
                lines.push(format!(
                    "    ... and {} more",
                    changes.len() - KEYS_LISTED_MAX
                ));
            }
            compare(
                &mut lines,
                "node id",
                &current.settings.node_id.to_string(),
                &format!("a new one, succeeding {}", settings.node_id),
            );
            lines
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::envelope::{FileKind, KdfParams};
    use dyad_wire::NodeId;

    #[test]
    fn description_and_dry_run_show_fingerprints_never_secrets() {
        let contents = crate::backup::contents::tests::sample(NodeId([7; 16]));
        let envelope = Envelope::seal(
            FileKind::SettingsBackup,
            contents.settings.software,
            KdfParams::INSECURE_FOR_TESTS,
            b"passphrase",
            Vec::new(),
            b"",
        )
        .expect("seal");
        let mut text = describe(&envelope, &contents).join("\n");
        text.push_str(&dry_run("/new", &Target::Fresh, &contents).join("\n"));
        let mut other = crate::backup::contents::tests::sample(NodeId([8; 16]));
        other.store.config.entries.pop();
        let current = CurrentAppliance {
            settings: other.settings.clone(),
            certificate_fingerprint: dyad_wire::hex::encode(&other.identity.fingerprint().0),
            key_fingerprint: other.psk.fingerprint().to_string(),
            store: other.store.clone(),
        };
        let diff = dry_run("/old", &Target::Appliance(Box::new(current)), &contents).join("\n");
        assert!(diff.contains("added site/name"), "{diff}");
        assert!(diff.contains("would be refused"), "{diff}");
        text.push_str(&diff);
        assert!(text.contains(&contents.psk.fingerprint().to_string()));
        assert!(!text.contains(&contents.psk.reveal_printable()));
        assert!(!text.contains("PRIVATE KEY"));
        assert!(!text.contains("north"), "configuration values stay out");
    }
}
