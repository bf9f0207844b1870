//! The deterministic simulator.
//!
//! One seed drives a world of simulated appliances, disks, clocks, network and clients around
//! the engine's real replica state machine and real store, so that faults no test bench can
//! reproduce are replayed bit for bit. `docs/simulator.md` says what is simulated and how to
//! add a scenario or replay a failure.
//!
//! The modules are layered as the simulator's parts are, each depending only on those below it
//! (`.ci/check-module-cycles` keeps it so):
//!
//! - parts that import nothing from the crate: [`violation`] (a broken property as a value),
//!   [`coverage`], [`rng`], [`clock`], [`clients`] (the site's client population), [`cost`];
//! - the [`world`], built from them; it records what it finds broken on the way as
//!   [`violation::Violation`] values and calls nothing above it;
//! - what observes or drives the world from outside: the checkers ([`checks`]), the operator
//!   procedures for installs and hardware migrations ([`upgrade`]);
//! - the scenarios' shared harness (`harness`), one module per family of scenarios
//!   (`scenarios_*`), the [`swarm`], and the registry that lists them all ([`scenarios`]);
//! - running them: [`runner`], [`replay`] files, [`shrink`].
#![forbid(unsafe_code)]

pub mod checks;
pub mod clients;
pub mod clock;
pub mod cost;
pub mod coverage;
mod harness;
pub mod replay;
pub mod rng;
pub mod runner;
pub mod scenarios;
mod scenarios_migration;
mod scenarios_roles;
mod scenarios_storage;
mod scenarios_sync;
mod scenarios_upgrade;
pub mod shrink;
pub mod swarm;
pub mod upgrade;
pub mod violation;
pub mod world;

pub use scenarios::{Scenario, SCENARIOS};
