//! Rare events the sweep must prove it reaches.
//!
//! A property check only bites on the situations a run actually produces. Each event here is a
//! situation that matters and that random runs could easily never produce (a crash exactly while
//! chunks are in flight, a partition exactly while Sync Now runs). The world detects each one
//! from what really happened (the engine's own status and outcomes, the disk's and the
//! network's observations), never from what a scenario meant to do; a sweep adds them up,
//! prints how often each happened, and with `--require-coverage` fails if one never did.

use std::fmt;

/// A rare event the CI sweep must reach at least once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CoverageEvent {
    /// An appliance lost power while a sync was moving chunks to or from it.
    CrashDuringChunkTransfer,
    /// Power was lost in the middle of a store migration (the migration had not finished).
    CrashDuringStoreMigration,
    /// An establish succeeded while each appliance held sessions the other lacked.
    SessionsOnBothSidesAtReconciliation,
    /// A partition began while a Sync Now was still running.
    PartitionDuringSyncNow,
    /// A crash tore a write, and the store's recovery at the next start found and cleaned it.
    TornWriteDetectedOnRestart,
    /// A read found a recording damaged at rest, and a later sync fetched it again, intact.
    BitFlipDetectedAndRefetched,
    /// A chunk corrupted by a faulty sender was refused, and the session arrived intact.
    CorruptChunkRefusedAndRefetched,
    /// An appliance's status reported a split brain (both sides primary, or both backup).
    SplitBrainDetected,
    /// A client holding a stale DNS answer completed a session on the old primary.
    StaleDnsSessionOnOldPrimary,
    /// A forced promotion succeeded.
    ForcedPromotion,
    /// The client-update gate told a client to retry later (the limit was reached).
    ClientGateRefusedCheckIn,
    /// A crashed install was rolled back at the next start.
    InstallRolledBack,
    /// A crashed install was completed at the next start.
    InstallCompletedByRecovery,
    /// A failed fsync stopped the store (and no later sync made its chunks durable).
    FsyncErrorStoppedTheStore,
    /// A read hit a bad sector: one recording was damaged, the store went on.
    ReadErrorDamagedOneRecording,
    /// A full disk refused a write, and the store went on.
    FullDiskRefusedWithoutStopping,
    /// Power was lost inside a store operation (between two of its disk operations).
    CrashInsideStoreOperation,
    /// Power was lost inside recovery, and the next start recovered.
    CrashInsideRecovery,
    /// A damaged recording no peer held stayed listed as damaged, its bytes kept.
    DamagedRecordingKeptWithoutPeer,
}

impl CoverageEvent {
    pub const ALL: [CoverageEvent; 19] = [
        CoverageEvent::CrashDuringChunkTransfer,
        CoverageEvent::CrashDuringStoreMigration,
        CoverageEvent::SessionsOnBothSidesAtReconciliation,
        CoverageEvent::PartitionDuringSyncNow,
        CoverageEvent::TornWriteDetectedOnRestart,
        CoverageEvent::BitFlipDetectedAndRefetched,
        CoverageEvent::CorruptChunkRefusedAndRefetched,
        CoverageEvent::SplitBrainDetected,
        CoverageEvent::StaleDnsSessionOnOldPrimary,
        CoverageEvent::ForcedPromotion,
        CoverageEvent::ClientGateRefusedCheckIn,
        CoverageEvent::InstallRolledBack,
        CoverageEvent::InstallCompletedByRecovery,
        CoverageEvent::FsyncErrorStoppedTheStore,
        CoverageEvent::ReadErrorDamagedOneRecording,
        CoverageEvent::FullDiskRefusedWithoutStopping,
        CoverageEvent::CrashInsideStoreOperation,
        CoverageEvent::CrashInsideRecovery,
        CoverageEvent::DamagedRecordingKeptWithoutPeer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CoverageEvent::CrashDuringChunkTransfer => "crash_during_chunk_transfer",
            CoverageEvent::CrashDuringStoreMigration => "crash_during_store_migration",
            CoverageEvent::SessionsOnBothSidesAtReconciliation => {
                "sessions_on_both_sides_at_reconciliation"
            }
            CoverageEvent::PartitionDuringSyncNow => "partition_during_sync_now",
            CoverageEvent::TornWriteDetectedOnRestart => "torn_write_detected_on_restart",
            CoverageEvent::BitFlipDetectedAndRefetched => "bit_flip_detected_and_refetched",
            CoverageEvent::CorruptChunkRefusedAndRefetched => "corrupt_chunk_refused_and_refetched",
            CoverageEvent::SplitBrainDetected => "split_brain_detected",
            CoverageEvent::StaleDnsSessionOnOldPrimary => "stale_dns_session_on_old_primary",
            CoverageEvent::ForcedPromotion => "forced_promotion",
            CoverageEvent::ClientGateRefusedCheckIn => "client_gate_refused_check_in",
            CoverageEvent::InstallRolledBack => "install_rolled_back",
            CoverageEvent::InstallCompletedByRecovery => "install_completed_by_recovery",
            CoverageEvent::FsyncErrorStoppedTheStore => "fsync_error_stopped_the_store",
            CoverageEvent::ReadErrorDamagedOneRecording => "read_error_damaged_one_recording",
            CoverageEvent::FullDiskRefusedWithoutStopping => "full_disk_refused_without_stopping",
            CoverageEvent::CrashInsideStoreOperation => "crash_inside_store_operation",
            CoverageEvent::CrashInsideRecovery => "crash_inside_recovery",
            CoverageEvent::DamagedRecordingKeptWithoutPeer => "damaged_recording_kept_without_peer",
        }
    }
}

/// How often each event happened (in one run, or summed over a sweep).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    counts: [u64; CoverageEvent::ALL.len()],
}

impl Coverage {
    pub fn note(&mut self, event: CoverageEvent) {
        self.counts[event as usize] += 1;
    }

    pub fn count(&self, event: CoverageEvent) -> u64 {
        self.counts[event as usize]
    }

    pub fn add(&mut self, other: &Coverage) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
    }

    /// The events that never happened.
    pub fn missing(&self) -> Vec<CoverageEvent> {
        CoverageEvent::ALL
            .into_iter()
            .filter(|event| self.count(*event) == 0)
            .collect()
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for event in CoverageEvent::ALL {
            writeln!(f, "  {:44} {}", event.name(), self.count(event))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_its_own_slot_and_name() {
        let mut coverage = Coverage::default();
        for (n, event) in CoverageEvent::ALL.into_iter().enumerate() {
            assert_eq!(event as usize, n);
            coverage.note(event);
        }
        assert!(coverage.missing().is_empty());
        let names: std::collections::BTreeSet<_> = CoverageEvent::ALL
            .iter()
            .map(|event| event.name())
            .collect();
        assert_eq!(names.len(), CoverageEvent::ALL.len());
        assert_eq!(
            Coverage::default().missing().len(),
            CoverageEvent::ALL.len()
        );
    }
}
