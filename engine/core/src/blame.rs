//! Who is at fault when something fails, kept from the place that knows up to the operator's
//! exit code: the operator (a request the state does not allow, bad input), the peer appliance,
//! the network between them, this appliance's local storage, or a defect in Dyad itself.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::replica::{CommandError, ConfigWriteError};

/// Who can fix a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Blame {
    /// The operator asked for something the current state does not allow, or gave bad input:
    /// nothing was changed; the message says what to do instead.
    Operator,
    /// The peer appliance refused, or answered something this one cannot accept.
    Peer,
    /// The peer could not be reached, or the connection failed.
    Network,
    /// This appliance's disk or data folder failed (I/O error, full disk, damaged data).
    LocalStorage,
    /// A defect in Dyad: report it.
    Internal,
}

/// A failure and who is at fault; the message names the problem and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub blame: Blame,
    pub message: String,
}

impl Failure {
    pub fn new(blame: Blame, message: impl Into<String>) -> Failure {
        Failure {
            blame,
            message: message.into(),
        }
    }

    pub fn operator(message: impl Into<String>) -> Failure {
        Failure::new(Blame::Operator, message)
    }

    pub fn local_storage(message: impl Into<String>) -> Failure {
        Failure::new(Blame::LocalStorage, message)
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(Blame::Internal, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<CommandError> for Failure {
    fn from(error: CommandError) -> Failure {
        let blame = match &error {
            CommandError::Refused(_) => Blame::Operator,
            CommandError::Peer(_) => Blame::Peer,
            CommandError::Local(_) => Blame::LocalStorage,
        };
        Failure::new(blame, error.to_string())
    }
}

impl From<ConfigWriteError> for Failure {
    fn from(error: ConfigWriteError) -> Failure {
        let blame = match &error {
            ConfigWriteError::ReadOnlyBackup { .. } => Blame::Operator,
            ConfigWriteError::Store(fault) if fault.terminal => Blame::LocalStorage,
            // A write the store refused without failing: a key or value outside its limits.
            ConfigWriteError::Store(_) => Blame::Operator,
        };
        Failure::new(blame, error.to_string())
    }
}
