//! A failed `dyad` command: who is at fault and what to do, and the exit code that tells a
//! script the same. Every error that reaches the operator passes through [`CliError`], and
//! each kind of error below it says who is at fault (there is no catch-all conversion).
//!
//! | exit code | who is at fault |
//! |---|---|
//! | 0 | nobody: done |
//! | 2 | the operator: a flag clap could not parse (clap's own) |
//! | 64 | the operator: a refused request or bad input; nothing was changed |
//! | 69 | the network: the peer could not be reached |
//! | 70 | a defect in dyad |
//! | 74 | local storage: this appliance's disk or data folder |
//! | 75 | `dyad serve` only: its store failed; restart it (recovery runs) |
//! | 76 | the peer appliance refused or misbehaved |

use std::fmt;

use dyad_core::blame::{Blame, Failure};

/// A failed command: the message names the problem and what to do.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError {
    pub blame: Blame,
    pub message: String,
}

pub type CliResult = Result<(), CliError>;

impl CliError {
    pub fn new(blame: Blame, message: impl Into<String>) -> CliError {
        CliError {
            blame,
            message: message.into(),
        }
    }

    /// The operator's request or input was refused; nothing was changed.
    pub fn operator(message: impl Into<String>) -> CliError {
        CliError::new(Blame::Operator, message)
    }

    /// This appliance's disk or data folder failed.
    pub fn local(message: impl Into<String>) -> CliError {
        CliError::new(Blame::LocalStorage, message)
    }

    pub fn internal(message: impl Into<String>) -> CliError {
        CliError::new(Blame::Internal, message)
    }

    /// The process exit code for this failure (see the module's table).
    pub fn exit_code(&self) -> u8 {
        exit_code(self.blame)
    }
}

/// The exit code for a failure `blame` is at fault for.
pub fn exit_code(blame: Blame) -> u8 {
    match blame {
        Blame::Operator => 64,
        Blame::Network => 69,
        Blame::Internal => 70,
        Blame::LocalStorage => 74,
        Blame::Peer => 76,
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Failure> for CliError {
    fn from(failure: Failure) -> CliError {
        CliError::new(failure.blame, failure.message)
    }
}

impl From<dyad_store::StoreError> for CliError {
    fn from(error: dyad_store::StoreError) -> CliError {
        dyad_node::admin::store_failure(error).into()
    }
}

impl From<dyad_node::admin::AdminCallError> for CliError {
    fn from(error: dyad_node::admin::AdminCallError) -> CliError {
        use dyad_node::admin::AdminCallError;
        match error {
            // Start `dyad serve`, says the message.
            AdminCallError::NotRunning(text) => CliError::operator(text),
            AdminCallError::Failed(text) => CliError::local(text),
        }
    }
}

impl From<dyad_node::appliance::ApplianceError> for CliError {
    fn from(error: dyad_node::appliance::ApplianceError) -> CliError {
        use dyad_node::appliance::ApplianceError;
        let blame = match &error {
            ApplianceError::Io { .. } => Blame::LocalStorage,
            _ => Blame::Operator,
        };
        CliError::new(blame, error.to_string())
    }
}

impl From<dyad_node::appliance::DataDirError> for CliError {
    fn from(error: dyad_node::appliance::DataDirError) -> CliError {
        // Another server holds the lock, or the folder cannot be opened: the operator's to
        // sort out first (the message says how).
        CliError::operator(error.0)
    }
}

impl From<dyad_node::driver::ServeError> for CliError {
    fn from(error: dyad_node::driver::ServeError) -> CliError {
        CliError::new(error.blame, error.message)
    }
}

impl From<dyad_node::transport::TransportError> for CliError {
    fn from(error: dyad_node::transport::TransportError) -> CliError {
        use dyad_node::transport::TransportError;
        let blame = match &error {
            TransportError::PeerRefused { .. }
            | TransportError::Incompatible { .. }
            | TransportError::PeerMisbehaved { .. } => Blame::Peer,
            TransportError::TlsHandshake { .. } | TransportError::Io { .. } => Blame::Network,
            TransportError::LocalConfig { .. } | TransportError::SharedHostname(_) => {
                Blame::Operator
            }
        };
        CliError::new(blame, error.to_string())
    }
}

impl From<dyad_node::transport::FileError> for CliError {
    fn from(error: dyad_node::transport::FileError) -> CliError {
        CliError::local(error.to_string())
    }
}

impl From<dyad_node::transport::KeyError> for CliError {
    fn from(error: dyad_node::transport::KeyError) -> CliError {
        CliError::operator(error.to_string())
    }
}

impl From<dyad_node::transport::IdentityError> for CliError {
    fn from(error: dyad_node::transport::IdentityError) -> CliError {
        CliError::operator(error.to_string())
    }
}

impl From<dyad_node::update::UpdateError> for CliError {
    fn from(error: dyad_node::update::UpdateError) -> CliError {
        use dyad_node::update::UpdateError;
        let blame = match &error {
            UpdateError::Local(_) => Blame::LocalStorage,
            _ => Blame::Operator,
        };
        CliError::new(blame, error.to_string())
    }
}

impl From<dyad_node::backup::BackupError> for CliError {
    fn from(error: dyad_node::backup::BackupError) -> CliError {
        use dyad_node::backup::BackupError;
        let blame = match &error {
            BackupError::Io(_) => Blame::LocalStorage,
            _ => Blame::Operator,
        };
        CliError::new(blame, error.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> CliError {
        CliError::local(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_party_has_its_own_exit_code() {
        let all = [
            Blame::Operator,
            Blame::Peer,
            Blame::Network,
            Blame::LocalStorage,
            Blame::Internal,
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(|b| exit_code(*b)).collect();
        assert_eq!(codes.len(), all.len());
        // Never the codes the shell, clap or `dyad serve`'s storage exit use.
        for reserved in [0, 1, 2, 75, 126, 127] {
            assert!(!codes.contains(&reserved));
        }
    }
}
