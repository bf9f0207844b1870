//! Shrinking: a failing swarm run reduced to a plan a person can read.
//!
//! A seed's plan is an explicit list of steps (`crate::swarm`), and the world's own generator
//! depends only on the seed, so any sub-list of the steps is itself a run that replays bit for
//! bit. Shrinking removes steps, halves first and then one at a time (delta debugging), and
//! keeps a removal whenever the run still fails **on the same property**; then it drops the
//! clients and the old-software start if the failure does not need them. The result is written
//! as a replay file (`crate::replay`). Every candidate is a full run, so the work is bounded by
//! a wall-time budget; what was found by then is kept.

use std::time::{Duration, Instant};

use crate::replay::Replay;
use crate::runner;
use crate::swarm::{Action, SwarmPlan};

/// What a shrink did.
#[derive(Clone, Debug)]
pub struct ShrinkReport {
    pub property: &'static str,
    pub steps_before: usize,
    pub runs: u64,
    pub elapsed: Duration,
    /// Whether the budget ran out before nothing more could be removed.
    pub out_of_time: bool,
    pub replay: Replay,
}

/// Shrinks `plan` run with `seed`, which must fail. `progress` hears about each accepted
/// reduction.
pub fn shrink(
    seed: u64,
    plan: SwarmPlan,
    budget: Duration,
    mut progress: impl FnMut(&str),
) -> Result<ShrinkReport, String> {
    let started = Instant::now();
    let first = runner::run_plan(seed, &plan);
    let property = match &first.result {
        Err(violation) => violation.property,
        Ok(_) => {
            return Err(format!(
                "seed {seed}'s swarm run does not fail: nothing to shrink"
            ))
        }
    };
    let steps_before = plan.steps.len();
    let mut runs = 1;
    let mut out_of_time = false;
    let still_fails = |candidate: &SwarmPlan, runs: &mut u64| {
        *runs += 1;
        matches!(&runner::run_plan(seed, candidate).result, Err(found) if found.property == property)
    };
    let mut best = plan;
    let mut chunk = best.steps.len().div_ceil(2).max(1);
    'outer: loop {
        let mut removed_any = false;
        let mut at = 0;
        while at < best.steps.len() {
            if started.elapsed() > budget {
                out_of_time = true;
                break 'outer;
            }
            let mut candidate = best.clone();
            let end = (at + chunk).min(candidate.steps.len());
            candidate.steps.drain(at..end);
            if still_fails(&candidate, &mut runs) {
                best = candidate;
                removed_any = true;
                progress(&format!(
                    "{} steps still fail on {property} ({runs} runs)",
                    best.steps.len()
                ));
            } else {
                at += chunk;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        chunk = if removed_any && chunk == 1 {
            1
        } else {
            (chunk / 2).max(1)
        };
    }
    // Whatever the steps no longer need.
    if !out_of_time {
        let simpler: [fn(&mut SwarmPlan) -> bool; 2] = [
            |plan| std::mem::take(&mut plan.clients) != [0; 3],
            |plan| {
                let upgrades = plan
                    .steps
                    .iter()
                    .any(|step| matches!(step.action, Action::Upgrade { .. }));
                !upgrades && std::mem::replace(&mut plan.old_software, false)
            },
        ];
        for simplify in simpler {
            let mut candidate = best.clone();
            if simplify(&mut candidate) && still_fails(&candidate, &mut runs) {
                best = candidate;
            }
        }
    }
    Ok(ShrinkReport {
        property,
        steps_before,
        runs,
        elapsed: started.elapsed(),
        out_of_time,
        replay: Replay {
            seed,
            expect: Some(property.to_string()),
            plan: best,
        },
    })
}
