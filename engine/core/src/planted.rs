//! Planted bugs: known defects the simulator's tests switch on, one at a time, to prove that
//! its checkers notice them. Compiled only with the `planted-bugs` feature, which refuses to
//! build without debug assertions (see `lib.rs`), so no release build can carry a switch.
//!
//! The selection is thread-local: the simulator runs a world on one thread and selects the bug
//! for that run, so one test build exercises every bug, and tests running in parallel on other
//! threads are not affected. With nothing selected the engine behaves exactly as without the
//! feature.

use std::cell::Cell;

/// The defects that can be planted, each at one site of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlantedBug {
    /// The store writes a received chunk without verifying it against the recording's tree,
    /// so a corrupt chunk gets published (`store::recordings`).
    PublishUnverified,
    /// Reconciliation skips one direction: the primary does not pull the sessions that only
    /// its backup holds (`replica::sync`).
    ReconcileOneWay,
    /// A primary that meets a primary of an older epoch (a split brain) steps down silently
    /// and follows it as its backup, taking that stale epoch and its configuration
    /// (`replica::classify_link`).
    FollowStaleEpoch,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 3] = [
        PlantedBug::PublishUnverified,
        PlantedBug::ReconcileOneWay,
        PlantedBug::FollowStaleEpoch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::PublishUnverified => "publish-unverified",
            PlantedBug::ReconcileOneWay => "reconcile-one-way",
            PlantedBug::FollowStaleEpoch => "follow-stale-epoch",
        }
    }
}

thread_local! {
    static SELECTED: Cell<Option<PlantedBug>> = const { Cell::new(None) };
}

/// Selects the bug the engine plays on this thread from now on (`None`: none).
pub fn select(bug: Option<PlantedBug>) {
    SELECTED.with(|selected| selected.set(bug));
}

/// The bug selected on this thread.
pub fn selected() -> Option<PlantedBug> {
    SELECTED.with(Cell::get)
}

/// Whether `bug` is the one selected on this thread.
pub fn active(bug: PlantedBug) -> bool {
    selected() == Some(bug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_holds_for_its_own_thread_only() {
        select(Some(PlantedBug::ReconcileOneWay));
        assert!(active(PlantedBug::ReconcileOneWay));
        assert!(!active(PlantedBug::PublishUnverified));
        let elsewhere = std::thread::spawn(selected).join();
        assert_eq!(elsewhere.ok(), Some(None));
        select(None);
        assert_eq!(selected(), None);
    }
}
