//! The site's deployed clients and the client-update gate.
//!
//! After an application upgrade every deployed client must update, but never more at once
//! than the site setting allows. The gate that decides is the engine's own
//! ([`ClientGate`], the code `dyad client check-in` reaches through the running appliance);
//! like the driver's, each appliance process holds one in memory, made when the process starts
//! with the application version it runs, reads the limit from its site configuration at every
//! check-in, and times grants by the process's steady clock (not the wall clock, which the
//! world steps). Clients check in at the site address (so a stale DNS answer or a down
//! appliance matters): *active* ones right after an appliance comes up on new software,
//! *passive* ones when they boot, when an operator opens a console on them, and at least daily.
//! A granted client installs for a while and checks in again on the new version; some die
//! while installing and come back at their next boot. Integration clients are told to be
//! reinstalled by hand and are not expected to update.
//!
//! Checked: at every grant, the clients really installing under that gate's grants are at most
//! its limit (`client_updates_within_limit`); and once the pair runs one application version
//! and faults stopped, every deployed client runs it within [`World::clients_update_bound_ms`]
//! (`clients_updated_in_time`).

use std::collections::BTreeMap;

use dyad_core::clients::{
    max_concurrent_from_config, CheckIn, CheckInAnswer, ClientKind, GRANT_TIMEOUT_MS,
    MAX_CONCURRENT_UPGRADES_KEY, RETRY_AFTER_MS,
};
use dyad_core::replica::ReplicaStore;
use dyad_wire::Version;

use crate::checks::Violation;
use crate::coverage::CoverageEvent;
use crate::world::{World, WorldEvent};

const HOUR_MS: u64 = 60 * 60_000;
/// A passive client checks in at least this often.
pub const DAILY_MS: u64 = 24 * HOUR_MS;
/// How long a client waits before trying again when the site does not answer.
pub const UNREACHABLE_RETRY_MS: u64 = 5 * 60_000;
/// Longest install of a client update (below the gate's grant timeout, so a client that is
/// still installing always holds its slot).
pub const UPDATE_DURATION_MAX_MS: u64 = 25 * 60_000;

/// When a deployed client checks in on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Habit {
    /// At once after an appliance comes up on new software (and daily).
    Active,
    /// On boot, on a console connection, and at least daily.
    Passive,
}

/// One client of the site.
#[derive(Clone, Debug)]
pub struct SimClient {
    pub id: String,
    pub kind: ClientKind,
    pub habit: Habit,
    pub installed: Version,
    /// The gate (appliance, process incarnation) whose grant it is installing under.
    installing_under: Option<(usize, u64)>,
    target: Option<Version>,
}

/// The site's clients (each appliance's gate is its node's).
#[derive(Clone, Debug, Default)]
pub struct ClientPopulation {
    pub clients: Vec<SimClient>,
    /// The application version each appliance ran when it last started.
    started_app: BTreeMap<usize, Version>,
    pub grants: u64,
    pub retries_told: u64,
    /// The most clients ever installing at once under one gate.
    pub most_concurrent: u64,
}

impl World {
    /// Deploys clients running `app`: `active` and `passive` deployed ones and `integrations`.
    /// Passive clients get their first daily check-in, a boot and some console connections
    /// at random times of the next day.
    pub fn add_clients(&mut self, active: u64, passive: u64, integrations: u64, app: Version) {
        let kinds = (0..active)
            .map(|_| (ClientKind::Deployed, Habit::Active))
            .chain((0..passive).map(|_| (ClientKind::Deployed, Habit::Passive)))
            .chain((0..integrations).map(|_| (ClientKind::Integration, Habit::Passive)));
        for (kind, habit) in kinds {
            let client = self.clients.clients.len();
            self.clients.clients.push(SimClient {
                id: format!("client-{client}"),
                kind,
                habit,
                installed: app,
                installing_under: None,
                target: None,
            });
            let first_daily = self.now_ms + self.rng.below(DAILY_MS);
            self.schedule(first_daily, WorldEvent::ClientCheckIn { client });
            if habit == Habit::Passive {
                for _ in 0..self.rng.between(1, 3) {
                    // A boot or a console connection.
                    let at = self.now_ms + self.rng.below(DAILY_MS);
                    self.schedule(at, WorldEvent::ClientCheckIn { client });
                }
            }
        }
    }

    /// An appliance process started: its gate is new; if it now runs another application
    /// version than at its last start (it was upgraded), active clients check in at once.
    pub(crate) fn clients_on_start(&mut self, index: usize) {
        let app = self.appliances[index].software.app;
        let before = self.clients.started_app.insert(index, app);
        if before.is_none_or(|before| before == app) {
            return;
        }
        let active: Vec<usize> = (0..self.clients.clients.len())
            .filter(|client| self.clients.clients[*client].habit == Habit::Active)
            .collect();
        for client in active {
            let at = self.now_ms + self.rng.between(1_000, 60_000);
            self.schedule(at, WorldEvent::ClientCheckIn { client });
        }
    }

    /// Client `client` checks in at the site address.
    pub(crate) fn client_check_in(&mut self, client: usize) {
        if client >= self.clients.clients.len() {
            return;
        }
        if self.clients.clients[client].installing_under.is_some() {
            // Busy installing; it reports when done.
            return;
        }
        let target = self.route_client();
        // The driver hands the gate its process's steady clock, which the appliance's wall
        // clock steps do not move: true time serves (drift is too small to matter here).
        let steady_ms = self.now_ms;
        if !self.accepts_sessions(target) {
            let at = self.now_ms + UNREACHABLE_RETRY_MS;
            self.schedule(at, WorldEvent::ClientCheckIn { client });
            return;
        }
        let request = CheckIn {
            client_id: self.clients.clients[client].id.clone(),
            kind: self.clients.clients[client].kind,
            installed_app: self.clients.clients[client].installed,
        };
        // The appliance's node answers, as `dyad serve` does: its gate, with the limit read
        // afresh from the site configuration (a value it refuses keeps the limit in force).
        let Some(node) = self.appliances[target].node.as_mut() else {
            return;
        };
        let (answer, _refused_limit) = node.client_check_in(steady_ms, &request);
        let limit = u64::from(node.clients().max_concurrent());
        self.trace_event("client-check-in", &[client as u64, target as u64]);
        match answer {
            Ok(CheckInAnswer::UpdateNow { target: version }) => {
                let key = (target, self.appliances[target].incarnation);
                self.clients.grants += 1;
                let installing = 1 + self
                    .clients
                    .clients
                    .iter()
                    .filter(|other| other.installing_under == Some(key))
                    .count() as u64;
                self.clients.most_concurrent = self.clients.most_concurrent.max(installing);
                if installing > limit {
                    self.violations.push(Violation::new(
                        "client_updates_within_limit",
                        format!(
                            "{} clients install an update granted by {} at once, above the limit of {limit} (t={} ms)",
                            installing, self.appliances[target].name, self.now_ms
                        ),
                    ));
                }
                let record = &mut self.clients.clients[client];
                record.installing_under = Some(key);
                record.target = Some(version);
                let duration = self.rng.between(60_000, UPDATE_DURATION_MAX_MS);
                let at = self.now_ms + duration;
                self.schedule(at, WorldEvent::ClientUpdateDone { client });
            }
            Ok(CheckInAnswer::RetryLater { after_ms }) => {
                self.clients.retries_told += 1;
                self.coverage.note(CoverageEvent::ClientGateRefusedCheckIn);
                let at = self.now_ms + after_ms + self.rng.below(after_ms / 2 + 1);
                self.schedule(at, WorldEvent::ClientCheckIn { client });
            }
            Ok(CheckInAnswer::UpToDate) | Ok(CheckInAnswer::ManualReinstall { .. }) => {
                let at = self.now_ms + DAILY_MS;
                self.schedule(at, WorldEvent::ClientCheckIn { client });
            }
            Err(error) => panic!("the gate refused a well-formed check-in: {error}"),
        }
    }

    /// Client `client` finished its install (or died in it, one time in ten: it stays on its
    /// version and checks in at its next boot).
    pub(crate) fn client_update_done(&mut self, client: usize) {
        let Some(record) = self.clients.clients.get_mut(client) else {
            return;
        };
        let target = record.target.take();
        record.installing_under = None;
        let died = self.rng.chance(1, 10);
        let at = if died {
            self.now_ms + self.rng.between(30 * 60_000, 90 * 60_000)
        } else {
            if let (Some(target), Some(record)) = (target, self.clients.clients.get_mut(client)) {
                record.installed = target;
            }
            self.now_ms
        };
        self.trace_event("client-updated", &[client as u64, u64::from(died)]);
        self.schedule(at, WorldEvent::ClientCheckIn { client });
    }

    /// Deployed clients not yet running the site's application version.
    pub fn clients_outdated(&self) -> usize {
        let app = self.appliances[self.site_target].software.app;
        self.clients
            .clients
            .iter()
            .filter(|client| client.kind == ClientKind::Deployed && client.installed < app)
            .count()
    }

    /// How long, once the pair runs one version and faults stopped, every deployed client may
    /// take to update: a day (a passive client's daily check-in), plus one grant timeout and
    /// one retry for each wave of `limit` clients, plus an hour for a client that died while
    /// installing to boot again.
    pub fn clients_update_bound_ms(&self) -> u64 {
        let limit = self
            .replica(self.site_target)
            .and_then(|replica| {
                ReplicaStore::config_snapshot(replica.store())
                    .ok()
                    .and_then(|(_, entries)| {
                        entries
                            .into_iter()
                            .find(|entry| entry.key == MAX_CONCURRENT_UPGRADES_KEY)
                            .and_then(|entry| entry.value)
                    })
            })
            .and_then(|value| max_concurrent_from_config(Some(&value)).ok())
            .unwrap_or(dyad_core::clients::MAX_CONCURRENT_UPGRADES_DEFAULT)
            .max(1) as u64;
        let deployed = self
            .clients
            .clients
            .iter()
            .filter(|client| client.kind == ClientKind::Deployed)
            .count() as u64;
        let waves = deployed.div_ceil(limit);
        DAILY_MS + waves * (GRANT_TIMEOUT_MS + RETRY_AFTER_MS) + 2 * HOUR_MS
    }

    /// Property: every deployed client updates within the bound once the pair is settled.
    pub fn check_clients_updated(&mut self) -> Result<(), Violation> {
        if self.clients.clients.is_empty() {
            return Ok(());
        }
        let bound_ms = self.clients_update_bound_ms();
        let started = self.now_ms;
        let done = self
            .run_until_true(bound_ms, |world| world.clients_outdated() == 0)
            .map_err(|error| Violation::new("liveness", format!("{error:?}")))?;
        if !done {
            return Err(Violation::new(
                "clients_updated_in_time",
                format!(
                    "{} of {} clients still run an old version {} s after the pair settled (bound {} s)",
                    self.clients_outdated(),
                    self.clients.clients.len(),
                    (self.now_ms - started) / 1000,
                    bound_ms / 1000
                ),
            ));
        }
        Ok(())
    }
}
