//! The site's deployed clients, and the bookkeeping of the updates they install under the
//! client-update gate.
//!
//! After an application upgrade every deployed client must update, but never more at once
//! than the site setting allows. The gate that decides is the engine's own
//! ([`dyad_core::clients::ClientGate`], the code `dyad client check-in` reaches through the
//! running appliance); like the driver's, each appliance process holds one in memory, made when
//! the process starts with the application version it runs, reads the limit from its site
//! configuration at every check-in, and times grants by the process's steady clock (not the
//! wall clock, which the world steps). Clients check in at the site address (so a stale DNS
//! answer or a down appliance matters): *active* ones right after an appliance comes up on new
//! software, *passive* ones when they boot, when an operator opens a console on them, and at
//! least daily. A granted client installs for a while and checks in again on the new version;
//! some die while installing and come back at their next boot. Integration clients are told to
//! be reinstalled by hand and are not expected to update.
//!
//! This module is the population itself and imports nothing from the crate: the world
//! (`crate::world`) owns one, routes each check-in to an appliance's gate and schedules what
//! follows, and the checkers (`crate::checks`) judge it. Checked: at every grant, the clients
//! really installing under that gate's grants are at most its limit
//! (`client_updates_within_limit`, recorded by the world as it grants); and once the pair runs
//! one application version and faults stopped, every deployed client runs it within
//! [`ClientPopulation::update_bound_ms`] (`clients_updated_in_time`).

use std::collections::BTreeMap;

use dyad_core::clients::{CheckIn, ClientKind, GRANT_TIMEOUT_MS, RETRY_AFTER_MS};
use dyad_wire::Version;

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

impl SimClient {
    /// Whether it is installing an update (it reports when done, and checks in no sooner).
    pub fn is_installing(&self) -> bool {
        self.installing_under.is_some()
    }

    /// What it tells the gate when it checks in.
    pub fn check_in(&self) -> CheckIn {
        CheckIn {
            client_id: self.id.clone(),
            kind: self.kind,
            installed_app: self.installed,
        }
    }
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

impl ClientPopulation {
    /// Adds a client of `kind` and `habit` running `app`; returns its number.
    pub fn deploy(&mut self, kind: ClientKind, habit: Habit, app: Version) -> usize {
        let client = self.clients.len();
        self.clients.push(SimClient {
            id: format!("client-{client}"),
            kind,
            habit,
            installed: app,
            installing_under: None,
            target: None,
        });
        client
    }

    /// Appliance `index` started a process running application version `app` (its gate is
    /// new). Returns the clients that check in at once: the active ones, if it ran another
    /// version at its last start (it was upgraded); none otherwise.
    pub fn appliance_started(&mut self, index: usize, app: Version) -> Vec<usize> {
        let before = self.started_app.insert(index, app);
        if before.is_none_or(|before| before == app) {
            return Vec::new();
        }
        (0..self.clients.len())
            .filter(|client| self.clients[*client].habit == Habit::Active)
            .collect()
    }

    /// The gate `gate` (appliance, process incarnation) granted client `client` the update to
    /// `target`, which it now installs. Returns how many clients install under that gate's
    /// grants at once, this one included.
    pub fn grant(&mut self, client: usize, gate: (usize, u64), target: Version) -> u64 {
        self.grants += 1;
        let installing = 1 + self
            .clients
            .iter()
            .filter(|other| other.installing_under == Some(gate))
            .count() as u64;
        self.most_concurrent = self.most_concurrent.max(installing);
        let record = &mut self.clients[client];
        record.installing_under = Some(gate);
        record.target = Some(target);
        installing
    }

    /// Client `client` stopped installing: `finished`, it runs the version it was granted;
    /// otherwise it died in the install and stays on its version.
    pub fn install_ended(&mut self, client: usize, finished: bool) {
        let Some(record) = self.clients.get_mut(client) else {
            return;
        };
        let target = record.target.take();
        record.installing_under = None;
        if let (true, Some(target)) = (finished, target) {
            record.installed = target;
        }
    }

    /// Deployed clients not yet running application version `app`.
    pub fn outdated(&self, app: Version) -> usize {
        self.clients
            .iter()
            .filter(|client| client.kind == ClientKind::Deployed && client.installed < app)
            .count()
    }

    /// How long, once the pair runs one version and faults stopped, every deployed client may
    /// take to update when the gates let `limit` install at once: a day (a passive client's
    /// daily check-in), plus one grant timeout and one retry for each wave of `limit` clients,
    /// plus an hour for a client that died while installing to boot again.
    pub fn update_bound_ms(&self, limit: u64) -> u64 {
        let deployed = self
            .clients
            .iter()
            .filter(|client| client.kind == ClientKind::Deployed)
            .count() as u64;
        let waves = deployed.div_ceil(limit);
        DAILY_MS + waves * (GRANT_TIMEOUT_MS + RETRY_AFTER_MS) + 2 * HOUR_MS
    }
}
