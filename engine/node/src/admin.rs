//! The operator's door into a running `dyad serve`: a unix socket inside the data folder
//! (mode 0600), one JSON request per connection, answered by JSON lines: zero or more
//! `progress` lines, then one `ok` or `error` line.
//!
//! JSON keeps the protocol inspectable with `socat` at 3 a.m.; requests are small and bounded.

use std::io::{BufRead, BufReader, Write};

use serde::{Deserialize, Serialize};

use dyad_core::blame::{Blame, Failure};
use dyad_store::StoreError;

use crate::appliance::DataDir;

/// Longest request line accepted on the admin socket.
pub const ADMIN_REQUEST_BYTES_MAX: usize = 64 * 1024;

/// What an operator command asks the running appliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AdminRequest {
    Status,
    Establish {
        backup: String,
        reverse: String,
    },
    SyncNow,
    Break,
    Promote {
        force: bool,
    },
    Demote,
    /// A deployed or integration client checks in (kind `deployed` or `integration`,
    /// `installed_app` like `7.2.0`); answered by the client-update gate.
    ClientCheckIn {
        client_id: String,
        kind: String,
        installed_app: String,
    },
    /// Where the clients stand after an application upgrade.
    ClientProgress,
    ConfigSet {
        key: String,
        value: String,
    },
    ConfigDelete {
        key: String,
    },
    ConfigGet {
        key: String,
    },
    ConfigList {
        prefix: String,
    },
    SessionImport {
        path: String,
        started_unix_ms: Option<u64>,
        ended_unix_ms: Option<u64>,
    },
    SessionList,
    /// Every complete and damaged session as JSON objects (`session list --json`).
    SessionDetails,
    SessionVerify,
    /// The damaged recordings, with their bad chunks and when they were found.
    SessionDamagedList,
    /// Writes a damaged recording's bytes as they are to `path` (a new file).
    SessionDamagedExport {
        session: String,
        path: String,
    },
    /// Removes a damaged recording's record and bytes.
    SessionDamagedForget {
        session: String,
    },
    Conflicts,
    /// The store's part of a settings backup, read in one transaction (`backup create`).
    BackupSnapshot,
    /// Records that a settings backup was written at `taken_unix_ms`.
    BackupRecorded {
        taken_unix_ms: u64,
    },
}

/// One line of an answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum AdminReply {
    /// A running command's progress.
    Progress(serde_json::Value),
    /// The final answer.
    Ok(serde_json::Value),
    /// The command failed: who is at fault, and a message naming the problem and what to do.
    Failed(Failure),
}

impl AdminReply {
    pub fn is_final(&self) -> bool {
        !matches!(self, AdminReply::Progress(_))
    }
}

/// Why an admin call did not get an answer.
#[derive(Debug)]
pub enum AdminCallError {
    /// No `dyad serve` is running on the data folder.
    NotRunning(String),
    /// It is running but the exchange failed.
    Failed(String),
}

impl std::fmt::Display for AdminCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminCallError::NotRunning(text) | AdminCallError::Failed(text) => f.write_str(text),
        }
    }
}

/// Sends one request to the running `dyad serve` of `dir` and calls `on_reply` for each line
/// of the answer.
pub fn admin_call(
    dir: &DataDir,
    request: &AdminRequest,
    mut on_reply: impl FnMut(&AdminReply),
) -> Result<AdminReply, AdminCallError> {
    let path = dir.admin_socket();
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|error| {
        AdminCallError::NotRunning(format!(
            "no `dyad serve` is answering on {} ({error}); start it with `dyad serve --data-dir {}`",
            path.display(),
            dir.root.display()
        ))
    })?;
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        AdminCallError::Failed(format!("{what}: {error}"))
    };
    let mut line =
        serde_json::to_string(request).map_err(|error| failed("encoding the request", &error))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|error| failed("writing to the admin socket", &error))?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line.map_err(|error| failed("reading from the admin socket", &error))?;
        let reply: AdminReply = serde_json::from_str(&line)
            .map_err(|error| failed("unreadable answer from dyad serve", &error))?;
        on_reply(&reply);
        if reply.is_final() {
            return Ok(reply);
        }
    }
    Err(AdminCallError::Failed(
        "dyad serve closed the admin connection without answering".into(),
    ))
}

/// Who is at fault for a store error, for the operator's exit code: the disk or the data
/// folder for I/O, space and damage; the operator for input the store refused; the peer for
/// what it sent.
pub fn store_failure(error: StoreError) -> Failure {
    let blame = match &error {
        StoreError::Io { .. }
        | StoreError::Database { .. }
        | StoreError::Failed { .. }
        | StoreError::DiskFull { .. }
        | StoreError::NewerFormat { .. }
        | StoreError::OlderFormat { .. }
        | StoreError::CorruptRecord { .. }
        | StoreError::ChunkCorrupt { .. } => Blame::LocalStorage,
        StoreError::Protocol { .. } => Blame::Peer,
        _ => Blame::Operator,
    };
    Failure::new(blame, error.to_string())
}
