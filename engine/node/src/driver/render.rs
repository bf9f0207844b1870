//! Turning replica and store state into the JSON the admin socket answers with, and answering
//! the quick admin requests that need no round trip to the peer.

use serde_json::{json, Value};

use dyad_wire::Role;

use crate::appliance::Appliance;

use dyad_core::replica::{Replica, ReplicaStore, Status, SyncProgress};
use dyad_store::{DamagedInfo, Store, StoreError};

use crate::admin::{store_failure, AdminReply, AdminRequest};
use dyad_core::blame::Failure;

pub fn progress(progress: &SyncProgress) -> Value {
    json!({
        "phase": progress.phase,
        "sessions_done": progress.sessions_done,
        "sessions_total": progress.sessions_total,
        "bytes_done": progress.bytes_done,
        "bytes_total": progress.bytes_total,
        "config_entries": progress.config_entries,
        "started_unix_ms": progress.started_unix_ms,
    })
}

/// Which appliance the site address (shared IP, DNS or NAT target) should point at.
fn site_address_holder(status: &Status) -> &'static str {
    match status.role {
        Role::Primary | Role::Standalone => "this appliance",
        Role::Backup => "the peer (this appliance is the backup)",
    }
}

pub fn status(status: &Status, appliance: &Appliance, wire_bytes_sent: u64) -> Value {
    json!({
        "wire_bytes_sent": wire_bytes_sent,
        "name": status.node_name,
        "node_id": appliance.settings.node_id.to_string(),
        "listen": appliance.settings.listen,
        "software": appliance.settings.software.to_string(),
        "role": dyad_wire::Role::name(status.role),
        "epoch": status.epoch.to_string(),
        "key_fingerprint": appliance.psk.fingerprint().to_string(),
        "certificate_fingerprint": appliance.certificate_fingerprint_hex(),
        "site_address_should_point_at": site_address_holder(status),
        "peer": status.peer.as_ref().map(|peer| json!({
            "name": peer.name,
            "node_id": peer.node_id.to_string(),
            "address": peer.address,
            "certificate_fingerprint": dyad_wire::hex::encode(&peer.certificate_fingerprint),
        })),
        "link": status.link.as_ref().map(|link| json!({
            "up": true,
            "peer_role": dyad_wire::Role::name(link.peer_role),
            "peer_epoch": link.peer_epoch.to_string(),
            "clock_offset_ms": link.clock_offset_ms,
            "clock_offset_warning": link.clock_offset_warning,
        })),
        "link_problem": status.link_problem,
        "old_hardware_refused": status.old_hardware_refused,
        "last_sync": status.last_sync.as_ref().map(|sync| json!({
            "finished_unix_ms": sync.finished_unix_ms,
            "succeeded": sync.succeeded,
            "interrupted": sync.interrupted,
            "result": sync.text,
            "sessions_pulled": sync.sessions_pulled,
            "bytes_pulled": sync.bytes_pulled,
            "last_success_unix_ms": sync.last_success_unix_ms,
        })),
        // Null whenever the lag is not known, never zeros: readers of `lag` alone (from before
        // `lag_known`) then see "no figure" rather than "nothing missing".
        "lag": status.lag.as_ref().map(|lag| json!({
            "sessions_missing": lag.sessions_missing,
            "bytes_missing": lag.bytes_missing,
            "oldest_missing_unix_ms": lag.oldest_missing_unix_ms,
            "measured_unix_ms": lag.measured_unix_ms,
        })),
        "lag_known": status.lag.is_some(),
        "lag_unknown_since_unix_ms": status.lag_unknown_since_unix_ms,
        "bytes_sent": status.counters.bytes_sent,
        "bytes_resent": status.counters.bytes_resent,
        "running_sync": status.running.as_ref().map(|running| json!({
            "progress": progress(&running.progress),
            "elapsed_ms": running.elapsed_ms,
            "bytes_per_second": running.bytes_per_second,
            "eta_seconds": running.eta_seconds,
        })),
        "sessions_held": status.sessions_held,
        "config_version": status.config_version.map(|version| format!("{}#{}", version.epoch, version.sequence)),
        "next_sync_unix_ms": status.next_sync_unix_ms,
        "storage_failure": status.storage_failure,
        "break_unannounced": status.break_unannounced,
        "forced_promotion_unresolved": status.forced_promotion_unresolved,
        "last_install": crate::update::last_install_report(&appliance.dir).map(|report| json!({
            "outcome": report.outcome,
            "package": report.package,
            "message": report.message,
            "unix_ms": report.unix_ms,
        })),
        "split_brain": status.disagreement.as_ref().map(|d| json!({
            "peer_name": d.peer_name,
            "peer_role": dyad_wire::Role::name(d.peer_role),
            "peer_epoch": d.peer_epoch.to_string(),
            "peer_config_version": d.peer_config_version.map(|v| format!("{}#{}", v.epoch, v.sequence)),
            "peer_sessions_held": d.peer_sessions_held,
            "this_epoch": status.epoch.to_string(),
            "this_config_version": status.config_version.map(|v| format!("{}#{}", v.epoch, v.sequence)),
            "detected_unix_ms": d.detected_unix_ms,
        })),
    })
}

fn session_line(meta: &dyad_store::SessionMeta) -> String {
    format!(
        "{}#{} {} {} bytes{}",
        meta.id.origin,
        meta.id.sequence,
        dyad_wire::hex::encode(&meta.root),
        meta.size_bytes,
        if meta.ended_normally { "" } else { " cut-off" }
    )
}

/// How a damaged recording's bad chunks read in one line: the count, and the first few.
fn bad_chunks_text(damaged: &DamagedInfo) -> String {
    const SHOWN: usize = 8;
    let mut shown: Vec<String> = damaged
        .bad_chunks
        .iter()
        .take(SHOWN)
        .map(u64::to_string)
        .collect();
    if damaged.bad_chunks.len() > SHOWN {
        shown.push("…".to_string());
    }
    format!(
        "{} of {} chunks bad: {}",
        damaged.bad_chunks.len(),
        damaged.chunk_count,
        shown.join(", ")
    )
}

fn damaged_line(damaged: &DamagedInfo) -> String {
    format!(
        "{} DAMAGED since {} ({}); not served; see `dyad session damaged list`",
        session_line(&damaged.meta),
        damaged.since_unix_ms,
        bad_chunks_text(damaged)
    )
}

/// Sorted one-line descriptions of every complete session, then of every damaged one
/// (marked DAMAGED): two appliances' lists diff cleanly, and damage shows in the diff.
pub fn session_lines(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut lines: Vec<String> = store.catalog_list()?.iter().map(session_line).collect();
    lines.sort();
    let mut damaged: Vec<String> = store.list_damaged()?.iter().map(damaged_line).collect();
    damaged.sort();
    lines.extend(damaged);
    Ok(lines)
}

fn damaged_json(damaged: &DamagedInfo) -> Value {
    json!({
        "id": format!("{}#{}", damaged.meta.id.origin, damaged.meta.id.sequence),
        "state": "damaged",
        "root": dyad_wire::hex::encode(&damaged.meta.root),
        "size_bytes": damaged.meta.size_bytes,
        "ended_normally": damaged.meta.ended_normally,
        "damaged_since_unix_ms": damaged.since_unix_ms,
        "chunk_count": damaged.chunk_count,
        "bad_chunks": damaged.bad_chunks,
    })
}

/// Every complete and damaged session as objects with their `state`, sorted by id.
pub fn session_details(store: &Store) -> Result<Value, StoreError> {
    let mut sessions: Vec<Value> = store
        .catalog_list()?
        .iter()
        .map(|meta| {
            json!({
                "id": format!("{}#{}", meta.id.origin, meta.id.sequence),
                "state": "complete",
                "root": dyad_wire::hex::encode(&meta.root),
                "size_bytes": meta.size_bytes,
                "ended_normally": meta.ended_normally,
            })
        })
        .chain(store.list_damaged()?.iter().map(damaged_json))
        .collect();
    sessions.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Value::Array(sessions))
}

/// The recording counts by state, for status.
pub fn recording_counts(store: &Store) -> Value {
    match store.recording_counts() {
        Ok(counts) => json!({
            "complete": counts.complete,
            "damaged": counts.damaged,
            "partial": counts.partial,
        }),
        Err(_) => Value::Null,
    }
}

/// A session id as the listings print it: `<origin node id>#<sequence>`.
pub fn parse_session_id(text: &str) -> Result<dyad_wire::SessionId, String> {
    let problem = || {
        format!(
            "--session {text:?} is not a session id; use the `<node id>#<number>` that \
             `dyad session damaged list` prints"
        )
    };
    let (origin, sequence) = text.split_once('#').ok_or_else(problem)?;
    let origin = dyad_core::replica::state::parse_node_id(origin).map_err(|_| problem())?;
    let sequence = sequence.parse::<u64>().map_err(|_| problem())?;
    Ok(dyad_wire::SessionId { origin, sequence })
}

/// Writes damaged recording `session` to a new file at `path` (never over an existing one),
/// private to this user.
fn export_damaged(store: &Store, session: &str, path: &str) -> Result<Value, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let id = parse_session_id(session).map_err(Failure::operator)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| {
            Failure::operator(format!("--out {path}: {error} (give a new file's path)"))
        })?;
    let export = match store.export_damaged(&id, &mut file) {
        Ok(export) => export,
        Err(error) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(store_failure(error));
        }
    };
    file.sync_all()
        .map_err(|error| Failure::local_storage(format!("--out {path}: {error}")))?;
    Ok(json!({
        "path": path,
        "bytes_written": export.bytes_written,
        "unverified_chunks": export.unverified_chunks,
        "unreadable_chunks": export.unreadable_chunks,
    }))
}

fn value_text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

pub fn conflicts(store: &Store, appliance: &Appliance) -> Result<Value, String> {
    let records = ReplicaStore::conflicts(store).map_err(|fault| fault.to_string())?;
    Ok(Value::Array(
        records
            .iter()
            .map(|record| {
                json!({
                    "appliance": appliance.settings.name,
                    "recorded_unix_ms": record.recorded_unix_ms,
                    "local_version": format!("{}#{}", record.local_version.epoch, record.local_version.sequence),
                    "incoming_version": format!("{}#{}", record.incoming_version.epoch, record.incoming_version.sequence),
                    "differing": record.differing.iter().map(|key| json!({
                        "key": key.key,
                        "local": key.local.as_deref().map(value_text),
                        "incoming": key.incoming.as_deref().map(value_text),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    ))
}

/// The store's part of a settings backup as JSON; secrets (identity, keys) are not in the
/// store and never cross the admin socket.
fn backup_snapshot(store: &Store) -> Result<Value, String> {
    let settings = crate::backup::StoreSettings::read_from(store)?;
    serde_json::to_value(settings.to_document()).map_err(|error| error.to_string())
}

/// Requests answered from local state alone.
pub fn answer_locally(
    replica: &mut Replica<Store>,
    appliance: &Appliance,
    now_unix_ms: u64,
    wire_bytes_sent: u64,
    request: AdminRequest,
) -> AdminReply {
    let result: Result<Value, Failure> = match request {
        AdminRequest::Status => {
            let mut value = status(&replica.status(now_unix_ms), appliance, wire_bytes_sent);
            value["store_format"] = json!(replica.store().format_version().ok());
            value["recordings"] = recording_counts(replica.store());
            Ok(value)
        }
        AdminRequest::ConfigSet { key, value } => replica
            .write_config(&key, Some(value.as_bytes()))
            .map(|version| {
                json!(format!("{key} set (version {}#{})", version.epoch, version.sequence))
            })
            .map_err(Failure::from),
        AdminRequest::ConfigDelete { key } => replica
            .write_config(&key, None)
            .map(|version| {
                json!(format!("{key} deleted (version {}#{})", version.epoch, version.sequence))
            })
            .map_err(Failure::from),
        AdminRequest::ConfigGet { key } => match replica.store().config_get(&key) {
            Ok(Some(value)) => Ok(json!(value_text(&value))),
            Ok(None) => Err(Failure::operator(format!("no configuration key {key:?}"))),
            Err(fault) => Err(Failure::local_storage(fault.to_string())),
        },
        AdminRequest::ConfigList { prefix } => replica
            .store()
            .config_list(&prefix)
            .map(|entries| Value::Object(entries.into_iter().map(|(key, value)| (key, json!(value_text(&value)))).collect()))
            .map_err(|fault| Failure::local_storage(fault.to_string())),
        AdminRequest::SessionImport { path, started_unix_ms, ended_unix_ms } => {
            crate::appliance::import_session(replica.store(), appliance, std::path::Path::new(&path), started_unix_ms, ended_unix_ms)
                .map(|meta| json!(session_line(&meta)))
                .map_err(store_failure)
        }
        AdminRequest::SessionList => session_lines(replica.store()).map(|lines| json!(lines)).map_err(store_failure),
        AdminRequest::SessionDetails => session_details(replica.store()).map_err(store_failure),
        AdminRequest::SessionDamagedList => replica
            .store()
            .list_damaged()
            .map(|damaged| Value::Array(damaged.iter().map(damaged_json).collect()))
            .map_err(store_failure),
        AdminRequest::SessionDamagedExport { session, path } => {
            export_damaged(replica.store(), &session, &path)
        }
        AdminRequest::SessionDamagedForget { session } => parse_session_id(&session).map_err(Failure::operator).and_then(|id| {
            replica
                .store()
                .forget_damaged(&id)
                .map(|meta| json!(format!("forgot damaged session {}", session_line(&meta))))
                .map_err(store_failure)
        }),
        AdminRequest::SessionVerify => replica
            .store()
            .verify_all()
            .map(|report| {
                json!({
                    "recordings_checked": report.recordings_checked,
                    "bytes_checked": report.bytes_checked,
                    "bad_chunks": report.bad_chunks.iter().map(|bad| format!("{}#{} chunk {}{}", bad.id.origin, bad.id.sequence, bad.index, if bad.was_complete { " (recording now listed as damaged; fetched again from the peer if it holds it)" } else { " (being received; fetched again)" })).collect::<Vec<_>>(),
                })
            })
            .map_err(store_failure),
        AdminRequest::Conflicts => conflicts(replica.store(), appliance).map_err(Failure::local_storage),
        AdminRequest::BackupSnapshot => backup_snapshot(replica.store()).map_err(Failure::local_storage),
        AdminRequest::BackupRecorded { taken_unix_ms } => replica
            .store()
            .local_set(dyad_store::local_keys::LAST_BACKUP_TAKEN_KEY, taken_unix_ms.to_string().as_bytes())
            .map(|()| json!("recorded"))
            .map_err(store_failure),
        AdminRequest::Establish { .. }
        | AdminRequest::SyncNow
        | AdminRequest::Break
        | AdminRequest::Promote { .. }
        | AdminRequest::Demote => {
            Err(Failure::internal("a command reached the quick-answer path"))
        }
        AdminRequest::ClientCheckIn { .. } | AdminRequest::ClientProgress => {
            Err(Failure::operator("clients check in with the running appliance; start `dyad serve`"))
        }
    };
    match result {
        Ok(value) => AdminReply::Ok(value),
        Err(failure) => AdminReply::Failed(failure),
    }
}
