//! The `dyad` command's library: what each operator command does (`cli`), the update commands
//! (`update_commands`) and the two-appliance demo (`demo`). The binary (`main.rs`) only parses
//! flags and maps errors to exit codes. Below it: `dyad-node` (the running appliance),
//! `dyad-store`, `dyad-core`, `dyad-wire`.
#![forbid(unsafe_code)]

pub mod cli;
pub mod demo;
pub mod error;
pub mod update_commands;
