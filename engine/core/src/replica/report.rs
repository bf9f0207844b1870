//! What the replica reports about itself, as plain data: the [`Status`] that `dyad status`
//! shows, and what the replica knows of its lag behind the peer.
//!
//! In a module of its own so that [`Replica`](super::Replica) can hold its lag knowledge, and
//! `sync` can record a measured lag, without importing `status`, which computes the report
//! (and implements `Replica`, so importing it would be a module cycle).

use dyad_wire::{Epoch, Role};

use super::job::SyncJob;
use super::role_state::Disagreement;
use super::state::{PeerRecord, SyncRecord};
use super::types::{SyncProgress, TransferCounters};

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
    pub disagreement: Option<Disagreement>,
    /// Promoted without the old primary, which may still accept writes somewhere.
    pub forced_promotion_unresolved: bool,
}
