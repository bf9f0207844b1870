//! What an operator sees: the relationship, the link, the last sync, the lag, and a running
//! sync's progress, computed from the replica's state on demand.

use dyad_wire::{Epoch, Role};

use super::ports::ReplicaStore;
use super::state::{PeerRecord, SyncRecord};
use super::sync::{SyncJob, SyncProgress};
use super::{Replica, TransferCounters};

pub use crate::handshake::CLOCK_OFFSET_WARNING_MS;

/// How far behind the peer this appliance was when its last sync compared catalogs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Sessions the peer held that this appliance lacked at the last comparison, minus those
    /// pulled since.
    pub sessions_missing: u64,
    pub bytes_missing: u64,
    /// The end time of the oldest session still missing, when known.
    pub oldest_missing_unix_ms: Option<u64>,
    /// When the sync that measured these figures finished.
    pub measured_unix_ms: u64,
}

impl Lag {
    /// The figures of a sync that ran to its end; only such a sync knows them (one cut off
    /// has not fetched the headers of every missing session, or not even compared).
    pub(super) fn after_sync<D>(
        job: &SyncJob<D>,
        progress: &SyncProgress,
        now_unix_ms: u64,
    ) -> Lag {
        let sessions_missing = progress
            .sessions_total
            .saturating_sub(progress.sessions_done);
        Lag {
            sessions_missing,
            bytes_missing: progress.bytes_total.saturating_sub(progress.bytes_done),
            oldest_missing_unix_ms: if sessions_missing == 0 {
                None
            } else {
                job.oldest_missing_unix_ms
            },
            measured_unix_ms: now_unix_ms,
        }
    }
}

/// What this appliance knows of its lag. A figure is shown only when a sync measured it; an
/// operator must never read "0 missing" when nobody knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum LagKnowledge {
    /// No sync has finished or been cut off since the replica started.
    #[default]
    NotMeasured,
    Known(Lag),
    /// Not known since this time: the last catalog comparison of a sync that was then cut
    /// off, or when a sync failed or its link was lost.
    UnknownSince(u64),
}

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

/// The link to the peer, when it is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub peer_name: String,
    pub peer_role: Role,
    pub peer_epoch: Epoch,
    pub clock_offset_ms: i64,
    pub clock_offset_warning: bool,
}

/// A sync in progress, with its rate and estimated time to finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningSync {
    pub progress: SyncProgress,
    pub elapsed_ms: u64,
    pub bytes_per_second: u64,
    pub eta_seconds: Option<u64>,
}

/// Everything `dyad status` shows about replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node_name: String,
    pub role: Role,
    pub epoch: Epoch,
    pub peer: Option<PeerRecord>,
    pub link: Option<LinkStatus>,
    /// Why the link is down or was last refused, if known.
    pub link_problem: Option<String>,
    /// The peer's old hardware (replaced by a restore) connected and was refused.
    pub old_hardware_refused: Option<String>,
    pub last_sync: Option<SyncRecord>,
    /// The lag measured by the last sync, only while it is known.
    pub lag: Option<Lag>,
    /// Set when the lag is not known (a sync was cut off or failed): since when.
    pub lag_unknown_since_unix_ms: Option<u64>,
    pub counters: TransferCounters,
    pub running: Option<RunningSync>,
    pub sessions_held: u64,
    pub config_version: Option<dyad_wire::ConfigVersion>,
    pub next_sync_unix_ms: Option<u64>,
    /// A terminal storage failure, if the replica stopped because of one.
    pub storage_failure: Option<String>,
    /// After a break the peer has not heard about yet.
    pub break_unannounced: bool,
    /// The two appliances disagree about the relationship (for example both are primary).
    pub disagreement: Option<super::Disagreement>,
    /// Promoted without the old primary, which may still accept writes somewhere.
    pub forced_promotion_unresolved: bool,
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
