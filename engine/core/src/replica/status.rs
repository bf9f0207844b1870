//! What an operator sees: the relationship, the link, the last sync, the lag, and a running
//! sync's progress, computed from the replica's state on demand.

use dyad_wire::Role;

use super::ports::ReplicaStore;
use super::report::{LagKnowledge, LinkStatus, RunningSync, Status};
use super::Replica;
use crate::handshake::CLOCK_OFFSET_WARNING_MS;

impl<S: ReplicaStore> Replica<S> {
    /// The lag stops being known: `compared_unix_ms` is when the sync that failed finished its
    /// catalog comparison, if it got that far; otherwise it is unknown from `now_unix_ms` (or
    /// from earlier, if it already was).
    pub(super) fn lose_lag(&mut self, compared_unix_ms: Option<u64>, now_unix_ms: u64) {
        let since = match (compared_unix_ms, &self.lag) {
            (Some(at), _) => at,
            (None, LagKnowledge::UnknownSince(since)) => *since,
            (None, _) => now_unix_ms,
        };
        self.lag = LagKnowledge::UnknownSince(since);
    }
}

impl<S: ReplicaStore> Replica<S> {
    pub fn status(&self, now_unix_ms: u64) -> Status {
        let link = self
            .peer_link()
            .and_then(|conn| self.links.get(&conn))
            .map(|link| LinkStatus {
                peer_name: link.handshake.hello.node_name.clone(),
                // The hello is as old as the connection: an establish or a role swap made on
                // it since leaves its role and epoch stale. A relationship link exists only
                // while both sides agree (a disagreement unbinds it), so the peer holds the
                // other role in this appliance's epoch.
                peer_role: match self.state.role {
                    Role::Primary => Role::Backup,
                    Role::Backup => Role::Primary,
                    Role::Standalone => link.handshake.hello.role,
                },
                peer_epoch: match self.state.role {
                    Role::Standalone => link.handshake.hello.epoch,
                    _ => self.state.epoch,
                },
                clock_offset_ms: link.handshake.clock_offset_ms,
                clock_offset_warning: link.handshake.clock_offset_ms.abs()
                    > CLOCK_OFFSET_WARNING_MS,
            });
        let running = self.job.as_ref().map(|job| {
            let progress = job.progress.clone();
            let elapsed_ms = now_unix_ms.saturating_sub(progress.started_unix_ms);
            let bytes_per_second = (progress.bytes_done * 1000)
                .checked_div(elapsed_ms)
                .unwrap_or(0);
            let remaining = progress.bytes_total.saturating_sub(progress.bytes_done);
            let eta_seconds = (bytes_per_second > 0).then(|| remaining / bytes_per_second);
            RunningSync {
                progress,
                elapsed_ms,
                bytes_per_second,
                eta_seconds,
            }
        });
        Status {
            node_name: self.node.name.clone(),
            role: self.state.role,
            epoch: self.state.epoch,
            peer: self.state.peer.clone(),
            link,
            link_problem: self.last_refusal.clone(),
            old_hardware_refused: self.old_hardware_refused.clone(),
            last_sync: self.state.last_sync.clone(),
            lag: match &self.lag {
                LagKnowledge::Known(lag) => Some(lag.clone()),
                LagKnowledge::NotMeasured | LagKnowledge::UnknownSince(_) => None,
            },
            lag_unknown_since_unix_ms: match self.lag {
                LagKnowledge::UnknownSince(since) => Some(since),
                LagKnowledge::NotMeasured | LagKnowledge::Known(_) => None,
            },
            counters: self.counters.clone(),
            running,
            sessions_held: self.store.session_count().unwrap_or(0),
            config_version: self.store.config_version().ok(),
            next_sync_unix_ms: self.next_sync_unix_ms,
            storage_failure: self
                .failed
                .clone()
                .or_else(|| self.store.stopped())
                .map(|fault| fault.to_string()),
            break_unannounced: self.state.break_unannounced,
            disagreement: self.disagreement.clone(),
            forced_promotion_unresolved: self.state.forced_promotion_unresolved,
        }
    }
}
