//! The client-update gate: which clients update after an application upgrade, and how many at
//! once.
//!
//! Clients (recorders deployed by the appliance, or integrations that embed its client
//! library) check in with the application version they run. After an **application** upgrade
//! a deployed client that runs an older version is told to update, but at most
//! `max_concurrent` at a time (the replicated site setting [`MAX_CONCURRENT_UPGRADES_KEY`]) so
//! that a site's clients do not all download and restart at once; the others are told to retry
//! later. A client counts as in progress from its grant until it checks in with the new
//! version, or until [`GRANT_TIMEOUT_MS`] passes (a client that died while updating must not
//! hold its slot forever). Integration clients never update themselves: they are reported as
//! needing a manual reinstall. A base-only upgrade leaves the application version unchanged,
//! so no client is asked to update.
//!
//! The gate is sans-IO: time is passed in, and the caller decides where it lives. The time
//! must come from a **monotonic** clock (the process's steady clock), never the wall clock: a
//! wall clock stepped forward would expire the grants of clients still installing and let more
//! than the limit update at once (the simulator's swarm found exactly that), and one stepped
//! back would hold slots for hours. The gate lives in one process's memory, so a clock that
//! restarts with the process is enough.
//!
//! Installer packages made for clients carry the application version that made them
//! ([`InstallerStamp`]); after an upgrade they are refused with a message to regenerate them,
//! since they would install the old client.

use std::collections::BTreeMap;
use std::fmt;

use dyad_wire::Version;

/// The site-configuration key of the limit (decimal text).
pub const MAX_CONCURRENT_UPGRADES_KEY: &str = "clients/max_concurrent_upgrades";
/// The limit when the site configuration does not set one.
pub const MAX_CONCURRENT_UPGRADES_DEFAULT: u32 = 10;
/// Highest limit accepted from the configuration.
pub const MAX_CONCURRENT_UPGRADES_MAX: u32 = 10_000;
/// A granted update not finished after this long frees its slot.
pub const GRANT_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// How long a waiting client is asked to wait before checking in again.
pub const RETRY_AFTER_MS: u64 = 60 * 1000;
/// Longest client id.
pub const CLIENT_ID_BYTES_MAX: usize = 128;
/// Most clients the gate tracks.
pub const CLIENTS_MAX: usize = 1_000_000;

/// Reads the limit from the site configuration's value (absent: the default).
pub fn max_concurrent_from_config(value: Option<&[u8]>) -> Result<u32, String> {
    let Some(value) = value else {
        return Ok(MAX_CONCURRENT_UPGRADES_DEFAULT);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|limit| *limit <= MAX_CONCURRENT_UPGRADES_MAX)
        .ok_or_else(|| {
            format!(
                "{MAX_CONCURRENT_UPGRADES_KEY} must be a whole number from 0 to \
                 {MAX_CONCURRENT_UPGRADES_MAX}"
            )
        })
}

/// How a client is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Installed and updated by the appliance.
    Deployed,
    /// Embedded by a third party; updated only by reinstalling it.
    Integration,
}

/// One client's check-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckIn {
    pub client_id: String,
    pub kind: ClientKind,
    pub installed_app: Version,
}

/// What a client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckInAnswer {
    /// It runs the appliance's application version.
    UpToDate,
    /// Update to `target` now.
    UpdateNow { target: Version },
    /// Too many clients are updating; check in again after `after_ms`.
    RetryLater { after_ms: u64 },
    /// An integration client on an old version: an operator must reinstall it.
    ManualReinstall { target: Version },
}

/// Why a check-in was refused (the client's fault).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckInError {
    BadClientId,
    TooManyClients,
}

impl fmt::Display for CheckInError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckInError::BadClientId => {
                write!(f, "the client id must be 1 to {CLIENT_ID_BYTES_MAX} bytes")
            }
            CheckInError::TooManyClients => {
                write!(f, "the appliance already tracks {CLIENTS_MAX} clients")
            }
        }
    }
}

impl std::error::Error for CheckInError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    UpToDate,
    Waiting,
    InProgress { granted_monotonic_ms: u64 },
    NeedsManualReinstall,
}

/// Where the clients stand after an upgrade.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientProgress {
    pub updated: u64,
    pub in_progress: u64,
    pub waiting: u64,
    pub needs_manual_reinstall: u64,
}

/// The gate (see the module documentation).
#[derive(Clone, Debug)]
pub struct ClientGate {
    app_version: Version,
    max_concurrent: u32,
    clients: BTreeMap<String, ClientState>,
}

impl ClientGate {
    pub fn new(app_version: Version, max_concurrent: u32) -> ClientGate {
        ClientGate {
            app_version,
            max_concurrent,
            clients: BTreeMap::new(),
        }
    }

    /// The appliance's application version changed (an application upgrade): every client on
    /// an older version needs updating again.
    pub fn set_app_version(&mut self, app_version: Version) {
        if app_version != self.app_version {
            self.app_version = app_version;
            for state in self.clients.values_mut() {
                if *state == ClientState::UpToDate {
                    *state = ClientState::Waiting;
                }
            }
        }
    }

    /// The site setting changed. Grants already made stay; new ones respect the new limit.
    pub fn set_max_concurrent(&mut self, max_concurrent: u32) {
        self.max_concurrent = max_concurrent;
    }

    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    fn in_progress(&self, now_monotonic_ms: u64) -> u32 {
        self.clients
            .values()
            .filter(|state| match state {
                ClientState::InProgress {
                    granted_monotonic_ms,
                } => now_monotonic_ms.saturating_sub(*granted_monotonic_ms) < GRANT_TIMEOUT_MS,
                _ => false,
            })
            .count() as u32
    }

    /// A client checks in.
    pub fn check_in(
        &mut self,
        now_monotonic_ms: u64,
        check_in: &CheckIn,
    ) -> Result<CheckInAnswer, CheckInError> {
        if check_in.client_id.is_empty() || check_in.client_id.len() > CLIENT_ID_BYTES_MAX {
            return Err(CheckInError::BadClientId);
        }
        if !self.clients.contains_key(&check_in.client_id) && self.clients.len() >= CLIENTS_MAX {
            return Err(CheckInError::TooManyClients);
        }
        let target = self.app_version;
        if check_in.installed_app >= target {
            self.clients
                .insert(check_in.client_id.clone(), ClientState::UpToDate);
            return Ok(CheckInAnswer::UpToDate);
        }
        if check_in.kind == ClientKind::Integration {
            self.clients.insert(
                check_in.client_id.clone(),
                ClientState::NeedsManualReinstall,
            );
            return Ok(CheckInAnswer::ManualReinstall { target });
        }
        // A client already granted (whose grant has not expired) may ask again: same answer,
        // without taking a second slot. Asking again means it starts its install again (it
        // restarted, or lost the download), so the grant is renewed from now: otherwise it
        // would expire while the client installs, and its slot go to another client on top.
        if let Some(ClientState::InProgress {
            granted_monotonic_ms,
        }) = self.clients.get_mut(&check_in.client_id)
        {
            if now_monotonic_ms.saturating_sub(*granted_monotonic_ms) < GRANT_TIMEOUT_MS {
                *granted_monotonic_ms = now_monotonic_ms;
                return Ok(CheckInAnswer::UpdateNow { target });
            }
        }
        if self.in_progress(now_monotonic_ms) < self.max_concurrent {
            self.clients.insert(
                check_in.client_id.clone(),
                ClientState::InProgress {
                    granted_monotonic_ms: now_monotonic_ms,
                },
            );
            Ok(CheckInAnswer::UpdateNow { target })
        } else {
            self.clients
                .insert(check_in.client_id.clone(), ClientState::Waiting);
            Ok(CheckInAnswer::RetryLater {
                after_ms: RETRY_AFTER_MS,
            })
        }
    }

    /// How far the clients are (expired grants count as waiting).
    pub fn progress(&self, now_monotonic_ms: u64) -> ClientProgress {
        let mut progress = ClientProgress::default();
        for state in self.clients.values() {
            match state {
                ClientState::UpToDate => progress.updated += 1,
                ClientState::Waiting => progress.waiting += 1,
                ClientState::InProgress {
                    granted_monotonic_ms,
                } => {
                    if now_monotonic_ms.saturating_sub(*granted_monotonic_ms) < GRANT_TIMEOUT_MS {
                        progress.in_progress += 1
                    } else {
                        progress.waiting += 1
                    }
                }
                ClientState::NeedsManualReinstall => progress.needs_manual_reinstall += 1,
            }
        }
        progress
    }

    /// Updates granted and not yet finished or expired.
    pub fn in_progress_now(&self, now_monotonic_ms: u64) -> u32 {
        self.in_progress(now_monotonic_ms)
    }
}

/// What a client installer package carries to say which application made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallerStamp {
    pub made_by_app: Version,
}

/// Why an installer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallerRefused {
    pub made_by_app: Version,
    pub current_app: Version,
}

impl fmt::Display for InstallerRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this client installer was made by application {} and the appliance now runs {}: \
             it would install an outdated client; regenerate the installer on the appliance",
            self.made_by_app, self.current_app
        )
    }
}

impl std::error::Error for InstallerRefused {}

/// Stamps an installer made now.
pub fn stamp_installer(current_app: Version) -> InstallerStamp {
    InstallerStamp {
        made_by_app: current_app,
    }
}

/// Accepts an installer only if the running application made it.
pub fn check_installer(
    stamp: &InstallerStamp,
    current_app: Version,
) -> Result<(), InstallerRefused> {
    if stamp.made_by_app == current_app {
        Ok(())
    } else {
        Err(InstallerRefused {
            made_by_app: stamp.made_by_app,
            current_app,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OLD: Version = Version {
        major: 7,
        minor: 2,
        patch: 0,
    };
    const NEW: Version = Version {
        major: 7,
        minor: 3,
        patch: 0,
    };

    fn deployed(id: usize, version: Version) -> CheckIn {
        CheckIn {
            client_id: format!("client-{id}"),
            kind: ClientKind::Deployed,
            installed_app: version,
        }
    }

    #[test]
    fn after_an_app_upgrade_clients_update_within_the_limit() {
        let mut gate = ClientGate::new(OLD, 2);
        for id in 0..5 {
            assert_eq!(
                gate.check_in(0, &deployed(id, OLD)),
                Ok(CheckInAnswer::UpToDate)
            );
        }
        gate.set_app_version(NEW);
        let answers: Vec<_> = (0..5)
            .map(|id| gate.check_in(1, &deployed(id, OLD)).expect("valid"))
            .collect();
        assert_eq!(
            answers
                .iter()
                .filter(|a| matches!(a, CheckInAnswer::UpdateNow { .. }))
                .count(),
            2
        );
        assert_eq!(
            gate.progress(1),
            ClientProgress {
                updated: 0,
                in_progress: 2,
                waiting: 3,
                needs_manual_reinstall: 0
            }
        );
        // Client 0 finishes; a slot frees for a waiting one.
        assert_eq!(
            gate.check_in(2, &deployed(0, NEW)),
            Ok(CheckInAnswer::UpToDate)
        );
        assert!(matches!(
            gate.check_in(3, &deployed(4, OLD)),
            Ok(CheckInAnswer::UpdateNow { .. })
        ));
    }

    #[test]
    fn a_base_only_upgrade_asks_nothing_of_clients() {
        let mut gate = ClientGate::new(NEW, 1);
        assert_eq!(
            gate.check_in(0, &deployed(1, NEW)),
            Ok(CheckInAnswer::UpToDate)
        );
        gate.set_app_version(NEW);
        assert_eq!(
            gate.check_in(1, &deployed(1, NEW)),
            Ok(CheckInAnswer::UpToDate)
        );
    }

    #[test]
    fn integration_clients_need_a_manual_reinstall() {
        let mut gate = ClientGate::new(NEW, 5);
        let check_in = CheckIn {
            client_id: "crm-plugin".into(),
            kind: ClientKind::Integration,
            installed_app: OLD,
        };
        assert_eq!(
            gate.check_in(0, &check_in),
            Ok(CheckInAnswer::ManualReinstall { target: NEW })
        );
        assert_eq!(gate.progress(0).needs_manual_reinstall, 1);
        assert_eq!(gate.in_progress_now(0), 0);
    }

    #[test]
    fn a_client_asking_again_renews_its_grant_and_keeps_its_slot() {
        // The simulator's swarm found this: client 1 died while installing, asked again 27
        // minutes after its grant and started over; the grant expired 3 minutes later while it
        // installed, and a second client got an update under a limit of 1.
        let mut gate = ClientGate::new(NEW, 1);
        let minute = 60_000;
        assert!(matches!(
            gate.check_in(0, &deployed(1, OLD)),
            Ok(CheckInAnswer::UpdateNow { .. })
        ));
        assert!(matches!(
            gate.check_in(27 * minute, &deployed(1, OLD)),
            Ok(CheckInAnswer::UpdateNow { .. })
        ));
        assert!(matches!(
            gate.check_in(31 * minute, &deployed(2, OLD)),
            Ok(CheckInAnswer::RetryLater { .. })
        ));
        assert_eq!(gate.in_progress_now(31 * minute), 1);
        assert!(matches!(
            gate.check_in(27 * minute + GRANT_TIMEOUT_MS, &deployed(2, OLD)),
            Ok(CheckInAnswer::UpdateNow { .. })
        ));
    }

    #[test]
    fn an_abandoned_grant_frees_its_slot() {
        let mut gate = ClientGate::new(NEW, 1);
        assert!(matches!(
            gate.check_in(0, &deployed(1, OLD)),
            Ok(CheckInAnswer::UpdateNow { .. })
        ));
        assert!(matches!(
            gate.check_in(1, &deployed(2, OLD)),
            Ok(CheckInAnswer::RetryLater { .. })
        ));
        assert!(matches!(
            gate.check_in(GRANT_TIMEOUT_MS, &deployed(2, OLD)),
            Ok(CheckInAnswer::UpdateNow { .. })
        ));
    }

    #[test]
    fn installers_from_before_an_upgrade_are_refused() {
        let stamp = stamp_installer(OLD);
        assert_eq!(check_installer(&stamp, OLD), Ok(()));
        let refused = check_installer(&stamp, NEW).expect_err("old installer");
        assert!(refused.to_string().contains("regenerate"));
    }

    #[test]
    fn the_limit_comes_from_the_site_configuration() {
        assert_eq!(max_concurrent_from_config(None), Ok(10));
        assert_eq!(max_concurrent_from_config(Some(b"3")), Ok(3));
        assert!(max_concurrent_from_config(Some(b"-1")).is_err());
        assert!(max_concurrent_from_config(Some(b"many")).is_err());
    }

    proptest! {
        /// Many clients checking in in any order, each either finishing its update or not
        /// before its next check-in: never more than the limit in progress, and once they all
        /// keep checking in, every client ends up updated.
        #[test]
        fn never_more_than_the_limit_and_everyone_updates(
            clients in 1usize..60,
            limit in 1u32..8,
            schedule in proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..400),
        ) {
            let mut gate = ClientGate::new(OLD, limit);
            let mut installed = vec![OLD; clients];
            let mut granted = vec![false; clients];
            gate.set_app_version(NEW);
            let mut now = 0u64;
            let step = |gate: &mut ClientGate, id: usize, finish: bool, now: u64,
                            installed: &mut Vec<Version>, granted: &mut Vec<bool>| {
                if granted[id] && finish {
                    installed[id] = NEW;
                }
                let answer = gate.check_in(now, &deployed(id, installed[id])).expect("valid id");
                granted[id] = matches!(answer, CheckInAnswer::UpdateNow { .. });
                assert!(gate.in_progress_now(now) <= limit);
            };
            for (index, finish) in schedule {
                now += 1;
                step(&mut gate, index.index(clients), finish, now, &mut installed, &mut granted);
            }
            // From here on every client keeps checking in and finishes what it is granted.
            for _round in 0..(clients * 2 + 2) {
                for id in 0..clients {
                    now += 1;
                    step(&mut gate, id, true, now, &mut installed, &mut granted);
                }
            }
            prop_assert!(installed.iter().all(|version| *version == NEW));
            let progress = gate.progress(now);
            prop_assert_eq!(progress.updated, clients as u64);
        }
    }
}
