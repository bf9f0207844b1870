//! Replay files: a swarm run written down as text, so that a shrunk failure can be read by a
//! person, kept, and run again with `dyad-sim --replay FILE`.
//!
//! The format is line-based and versioned; blank lines and `#` comments are ignored:
//!
//! ```text
//! dyad-sim replay 1
//! seed 1234
//! expect no_session_lost
//! old-software no
//! clients 0 0 0
//! class partitions 40
//! step 30000 1 partition ms=90000 sync_first=no
//! step 120000 2 crash on=1 tear=yes down_ms=20000
//! ```
//!
//! `seed` seeds the world (latencies, recording contents, ...); the `class` lines record the
//! mix the seed drew (informative); each `step` is a wait in milliseconds, the step's salt
//! (the world's generator is reseeded from the seed and it as the step begins), and an action
//! with its parameters. `expect` names the property the run failed on when it was written. A parse
//! error names the line and what is wrong with it.

use std::collections::BTreeMap;
use std::fmt;

use crate::swarm::{Action, FaultClass, Step, SwarmPlan, SwingKind};

/// The first line of every replay file; the number is the format's version.
pub const REPLAY_HEADER: &str = "dyad-sim replay 1";

/// A swarm run as a replay file holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub seed: u64,
    /// The property the run failed on when the file was written.
    pub expect: Option<String>,
    pub plan: SwarmPlan,
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

fn swing_name(swing: SwingKind) -> &'static str {
    match swing {
        SwingKind::SharedIp => "shared-ip",
        SwingKind::Dns => "dns",
        SwingKind::Nat => "nat",
    }
}

/// An action as one line's text: its name, then `key=value` parameters.
pub fn action_text(action: &Action) -> String {
    match *action {
        Action::Sessions { on, count } => format!("sessions on={on} count={count}"),
        Action::Clients { count, over_ms } => format!("clients count={count} over_ms={over_ms}"),
        Action::ConfigWrites { on, count } => format!("config-writes on={on} count={count}"),
        Action::ClientLimit { limit } => format!("client-limit limit={limit}"),
        Action::SyncNow { on } => format!("sync-now on={on}"),
        Action::Network {
            resets,
            spikes,
            corrupt,
        } => format!("network resets={resets} spikes={spikes} corrupt={corrupt}"),
        Action::Partition { ms, sync_first } => {
            format!("partition ms={ms} sync_first={}", yes_no(sync_first))
        }
        Action::OneWay {
            from,
            ms,
            sync_first,
        } => format!(
            "one-way from={from} ms={ms} sync_first={}",
            yes_no(sync_first)
        ),
        Action::Blip => "blip".to_string(),
        Action::ClockJump { on, delta_ms } => format!("clock-jump on={on} delta_ms={delta_ms}"),
        Action::ClockDrift { on, ppm } => format!("clock-drift on={on} ppm={ppm}"),
        Action::Crash { on, tear, down_ms } => {
            format!("crash on={on} tear={} down_ms={down_ms}", yes_no(tear))
        }
        Action::CrashMidSync {
            on,
            lead_ms,
            tear,
            down_ms,
        } => format!(
            "crash-mid-sync on={on} lead_ms={lead_ms} tear={} down_ms={down_ms}",
            yes_no(tear)
        ),
        Action::Pause { on, ms } => format!("pause on={on} ms={ms}"),
        Action::Restart { on } => format!("restart on={on}"),
        Action::WriteErrors { on, one_in, ms } => {
            format!("write-errors on={on} one_in={one_in} ms={ms}")
        }
        Action::FsyncErrors { on, one_in, ms } => {
            format!("fsync-errors on={on} one_in={one_in} ms={ms}")
        }
        Action::DiskFull { on, room_kib, ms } => {
            format!("disk-full on={on} room_kib={room_kib} ms={ms}")
        }
        Action::BitFlips { on, files } => format!("bit-flips on={on} files={files}"),
        Action::ReadErrors { on, files } => format!("read-errors on={on} files={files}"),
        Action::CrashInside {
            on,
            operations,
            tear,
        } => format!(
            "crash-inside on={on} operations={operations} tear={}",
            yes_no(tear)
        ),
        Action::CrashInsideRecovery {
            on,
            operations,
            tear,
        } => format!(
            "crash-inside-recovery on={on} operations={operations} tear={}",
            yes_no(tear)
        ),
        Action::Break { on } => format!("break on={on}"),
        Action::Reestablish { primary } => format!("reestablish primary={primary}"),
        Action::Swap { swing, ttl_ms } => {
            format!("swap swing={} ttl_ms={ttl_ms}", swing_name(swing))
        }
        Action::ForcedPromotion { ms } => format!("forced-promotion ms={ms}"),
        Action::Upgrade {
            asynchronous,
            crash_install,
            crash_point,
        } => format!(
            "upgrade asynchronous={} crash_install={crash_install} crash_point={crash_point}",
            yes_no(asynchronous)
        ),
        Action::Migration { on } => format!("migration on={on}"),
    }
}

/// The `key=value` parameters of one action, each taken once.
struct Params<'a> {
    values: BTreeMap<&'a str, &'a str>,
}

impl<'a> Params<'a> {
    fn parse(words: &[&'a str]) -> Result<Params<'a>, String> {
        let mut values = BTreeMap::new();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("parameter {word:?} is not key=value"))?;
            if values.insert(key, value).is_some() {
                return Err(format!("parameter {key:?} is given twice"));
            }
        }
        Ok(Params { values })
    }

    fn text(&mut self, key: &str) -> Result<&'a str, String> {
        self.values
            .remove(key)
            .ok_or_else(|| format!("missing parameter {key}="))
    }

    fn number(&mut self, key: &str) -> Result<u64, String> {
        let text = self.text(key)?;
        text.parse()
            .map_err(|_| format!("{key}={text:?} is not a whole number"))
    }

    fn signed(&mut self, key: &str) -> Result<i64, String> {
        let text = self.text(key)?;
        text.parse()
            .map_err(|_| format!("{key}={text:?} is not a whole number"))
    }

    fn side(&mut self, key: &str) -> Result<usize, String> {
        match self.number(key)? {
            side @ (0 | 1) => Ok(side as usize),
            other => Err(format!("{key}={other} names no appliance (0 or 1)")),
        }
    }

    fn flag(&mut self, key: &str) -> Result<bool, String> {
        match self.text(key)? {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => Err(format!("{key}={other:?} must be yes or no")),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            Some(key) => Err(format!("unknown parameter {key:?}")),
            None => Ok(()),
        }
    }
}

/// A plan printed for a person (`dyad-sim -v`, a shrink's result): its mix, then each step
/// with its action in the replay file's words.
impl fmt::Display for SwarmPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mix: {}", self.mix())?;
        for (n, step) in self.steps.iter().enumerate() {
            writeln!(
                f,
                "  step {n} (salt {}): after {} s, {}",
                step.salt,
                step.wait_ms / 1000,
                action_text(&step.action)
            )?;
        }
        Ok(())
    }
}

/// Parses an action's text (as [`action_text`] writes it).
pub fn parse_action(text: &str) -> Result<Action, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((name, rest)) = words.split_first() else {
        return Err("a step needs an action".into());
    };
    let mut p = Params::parse(rest)?;
    let action = match *name {
        "sessions" => Action::Sessions {
            on: p.side("on")?,
            count: p.number("count")?,
        },
        "clients" => Action::Clients {
            count: p.number("count")?,
            over_ms: p.number("over_ms")?,
        },
        "config-writes" => Action::ConfigWrites {
            on: p.side("on")?,
            count: p.number("count")?,
        },
        "client-limit" => Action::ClientLimit {
            limit: p.number("limit")?,
        },
        "sync-now" => Action::SyncNow { on: p.side("on")? },
        "network" => Action::Network {
            resets: p.number("resets")?,
            spikes: p.number("spikes")?,
            corrupt: p.number("corrupt")?,
        },
        "partition" => Action::Partition {
            ms: p.number("ms")?,
            sync_first: p.flag("sync_first")?,
        },
        "one-way" => Action::OneWay {
            from: p.side("from")?,
            ms: p.number("ms")?,
            sync_first: p.flag("sync_first")?,
        },
        "blip" => Action::Blip,
        "clock-jump" => Action::ClockJump {
            on: p.side("on")?,
            delta_ms: p.signed("delta_ms")?,
        },
        "clock-drift" => Action::ClockDrift {
            on: p.side("on")?,
            ppm: p.signed("ppm")?,
        },
        "crash" => Action::Crash {
            on: p.side("on")?,
            tear: p.flag("tear")?,
            down_ms: p.number("down_ms")?,
        },
        "crash-mid-sync" => Action::CrashMidSync {
            on: p.side("on")?,
            lead_ms: p.number("lead_ms")?,
            tear: p.flag("tear")?,
            down_ms: p.number("down_ms")?,
        },
        "pause" => Action::Pause {
            on: p.side("on")?,
            ms: p.number("ms")?,
        },
        "restart" => Action::Restart { on: p.side("on")? },
        "write-errors" => Action::WriteErrors {
            on: p.side("on")?,
            one_in: p.number("one_in")?,
            ms: p.number("ms")?,
        },
        "fsync-errors" => Action::FsyncErrors {
            on: p.side("on")?,
            one_in: p.number("one_in")?,
            ms: p.number("ms")?,
        },
        "disk-full" => Action::DiskFull {
            on: p.side("on")?,
            room_kib: p.number("room_kib")?,
            ms: p.number("ms")?,
        },
        "bit-flips" => Action::BitFlips {
            on: p.side("on")?,
            files: p.number("files")?,
        },
        "read-errors" => Action::ReadErrors {
            on: p.side("on")?,
            files: p.number("files")?,
        },
        "crash-inside" => Action::CrashInside {
            on: p.side("on")?,
            operations: p.number("operations")?,
            tear: p.flag("tear")?,
        },
        "crash-inside-recovery" => Action::CrashInsideRecovery {
            on: p.side("on")?,
            operations: p.number("operations")?,
            tear: p.flag("tear")?,
        },
        "break" => Action::Break { on: p.side("on")? },
        "reestablish" => Action::Reestablish {
            primary: p.side("primary")?,
        },
        "swap" => Action::Swap {
            swing: match p.text("swing")? {
                "shared-ip" => SwingKind::SharedIp,
                "dns" => SwingKind::Dns,
                "nat" => SwingKind::Nat,
                other => return Err(format!("swing={other:?} must be shared-ip, dns or nat")),
            },
            ttl_ms: p.number("ttl_ms")?,
        },
        "forced-promotion" => Action::ForcedPromotion {
            ms: p.number("ms")?,
        },
        "upgrade" => Action::Upgrade {
            asynchronous: p.flag("asynchronous")?,
            crash_install: p.number("crash_install")?,
            crash_point: p.number("crash_point")?,
        },
        "migration" => Action::Migration { on: p.side("on")? },
        other => return Err(format!("unknown action {other:?}")),
    };
    p.finish()?;
    Ok(action)
}

impl Replay {
    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = format!("{REPLAY_HEADER}\n");
        out.push_str(&format!("# {}\n", self.plan.mix()));
        out.push_str(&format!("seed {}\n", self.seed));
        if let Some(expect) = &self.expect {
            out.push_str(&format!("expect {expect}\n"));
        }
        out.push_str(&format!(
            "old-software {}\n",
            yes_no(self.plan.old_software)
        ));
        let [active, passive, integrations] = self.plan.clients;
        out.push_str(&format!("clients {active} {passive} {integrations}\n"));
        for (class, rate) in &self.plan.classes {
            out.push_str(&format!("class {} {rate}\n", class.name()));
        }
        for step in &self.plan.steps {
            out.push_str(&format!(
                "step {} {} {}\n",
                step.wait_ms,
                step.salt,
                action_text(&step.action)
            ));
        }
        out
    }

    /// Parses a replay file; an error names the line and the problem.
    pub fn parse(text: &str) -> Result<Replay, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(n, line)| (n + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
        match lines.next() {
            Some((_, line)) if line == REPLAY_HEADER => {}
            Some((n, line)) => {
                return Err(format!(
                "line {n}: expected {REPLAY_HEADER:?} (this build reads version 1), found {line:?}"
            ))
            }
            None => return Err("the file is empty".into()),
        }
        let mut seed = None;
        let mut expect = None;
        let mut plan = SwarmPlan {
            classes: Vec::new(),
            old_software: false,
            clients: [0; 3],
            steps: Vec::new(),
        };
        for (n, line) in lines {
            let at = |problem: String| format!("line {n}: {problem}");
            let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "seed" => {
                    seed = Some(
                        rest.parse::<u64>()
                            .map_err(|_| at(format!("seed {rest:?} is not a whole number")))?,
                    )
                }
                "expect" if !rest.is_empty() => expect = Some(rest.to_string()),
                "old-software" => {
                    plan.old_software = match rest {
                        "yes" => true,
                        "no" => false,
                        other => {
                            return Err(at(format!("old-software {other:?} must be yes or no")))
                        }
                    }
                }
                "clients" => {
                    let counts: Vec<u64> = rest
                        .split_whitespace()
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(|_| {
                            at(format!("clients {rest:?}: three whole numbers expected"))
                        })?;
                    plan.clients = counts.try_into().map_err(|_| {
                        at(format!(
                            "clients {rest:?}: three counts expected (active, passive, integration)"
                        ))
                    })?;
                }
                "class" => {
                    let (name, rate) = rest
                        .split_once(' ')
                        .ok_or_else(|| at("class needs a name and a rate".into()))?;
                    let class = FaultClass::ALL
                        .into_iter()
                        .find(|class| class.name() == name)
                        .ok_or_else(|| at(format!("unknown fault class {name:?}")))?;
                    let rate = rate
                        .trim()
                        .parse()
                        .map_err(|_| at(format!("rate {rate:?} is not a whole number")))?;
                    plan.classes.push((class, rate));
                }
                "step" => {
                    let mut parts = rest.splitn(3, ' ');
                    let (Some(wait), Some(salt), Some(action)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(at("step needs a wait in ms, a salt and an action".into()));
                    };
                    let wait_ms = wait
                        .parse()
                        .map_err(|_| at(format!("wait {wait:?} is not a whole number of ms")))?;
                    let salt = salt
                        .parse()
                        .map_err(|_| at(format!("salt {salt:?} is not a whole number")))?;
                    let action = parse_action(action).map_err(at)?;
                    plan.steps.push(Step {
                        wait_ms,
                        salt,
                        action,
                    });
                }
                other => return Err(at(format!("unknown keyword {other:?}"))),
            }
        }
        let seed = seed.ok_or("no `seed` line")?;
        Ok(Replay { seed, expect, plan })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drawn_plan_survives_the_text_format() {
        for seed in 0..300 {
            let replay = Replay {
                seed,
                expect: Some("no_session_lost".into()),
                plan: SwarmPlan::draw(seed),
            };
            let text = replay.to_text();
            assert_eq!(Replay::parse(&text), Ok(replay), "{text}");
        }
    }

    #[test]
    fn parse_errors_name_the_line_and_the_problem() {
        let bad = |text: &str| Replay::parse(text).err().unwrap_or_default();
        assert!(bad("dyad-sim replay 2\nseed 1\n").contains("line 1"));
        let text = "dyad-sim replay 1\nseed 1\n\nstep 10 1 crash on=1 tear=maybe down_ms=5\n";
        let error = bad(text);
        assert!(
            error.starts_with("line 4:") && error.contains("tear"),
            "{error}"
        );
        let error = bad("dyad-sim replay 1\nseed 1\nstep 10 1 explode on=0\n");
        assert!(
            error.starts_with("line 3:") && error.contains("explode"),
            "{error}"
        );
        let error = bad("dyad-sim replay 1\nseed 1\nstep 10 1 sync-now on=2\n");
        assert!(error.contains("on=2"), "{error}");
        let error = bad("dyad-sim replay 1\nseed 1\nstep 10 1 sync-now on=0 extra=1\n");
        assert!(error.contains("extra"), "{error}");
        assert!(bad("dyad-sim replay 1\n").contains("seed"));
        assert!(bad("").contains("empty"));
    }
}
