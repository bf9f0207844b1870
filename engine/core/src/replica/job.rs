//! A running sync's state, as the replica holds it between messages: who waits for it, which
//! phase it is in, its transfers and its progress.
//!
//! Plain data, in a module of its own so that [`Replica`](super::Replica) can hold it without
//! importing `sync`, the module that drives it (which implements `Replica`, so importing it
//! would be a module cycle).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dyad_wire::{CatalogAnswer, ConfigEntry, SessionId};

use super::types::{CommandId, ConnId, SyncProgress};

/// Who waits for a sync to finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Waiter {
    Command(CommandId),
    Peer { conn: ConnId, request: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Config,
    Catalog,
    Transfer,
}

#[derive(Debug)]
pub(super) struct Transfer {
    /// Chunks not yet requested.
    pub(super) pending: VecDeque<u32>,
    pub(super) in_flight: BTreeSet<u32>,
    pub(super) remaining: usize,
    pub(super) retries: u32,
    pub(super) started: bool,
    /// Chunks written but not yet synced: they still count against the window, so that a
    /// crash can cost at most one window of chunks, whether in flight or unsynced.
    pub(super) unsynced: usize,
    /// Chunks in the sync running off the replica's thread (`sync_ticket`); they count
    /// against the window until it is reported done.
    pub(super) syncing: usize,
    pub(super) sync_ticket: Option<u64>,
}

pub(super) struct SyncJob<D> {
    pub(super) conn: ConnId,
    pub(super) waiters: Vec<Waiter>,
    pub(super) phase: Phase,
    /// The catalog comparison in progress (taken when it completes).
    pub(super) diff: Option<D>,
    pub(super) query: u64,
    /// Parts of the answer to the current question, by part number.
    pub(super) answer_parts: BTreeMap<u32, CatalogAnswer>,
    pub(super) answer_parts_expected: u32,
    pub(super) full_config: Vec<ConfigEntry>,
    pub(super) queue: VecDeque<SessionId>,
    pub(super) transfers: BTreeMap<SessionId, Transfer>,
    pub(super) in_flight_chunks: usize,
    pub(super) progress: SyncProgress,
    pub(super) progress_reported_bytes: u64,
    pub(super) failures: Vec<String>,
    /// Missing sessions' end times are unknown until their headers arrive; the oldest seen.
    pub(super) oldest_missing_unix_ms: Option<u64>,
    /// When the catalog comparison finished (what was missing was known then).
    pub(super) compared_unix_ms: Option<u64>,
}
