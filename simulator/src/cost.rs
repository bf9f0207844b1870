//! What a run costs the machine: wall time and the process's CPU time, so a scenario's speed
//! target (CPU, not wall: other work on the machine stretches the wall clock) can be read off
//! a single run.

use std::time::Instant;

/// Wall and CPU time spent by one measured piece of work.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub wall_ms: u64,
    /// User plus system time of the whole process (all its threads, finished ones included),
    /// at the kernel's 10 ms accounting resolution; `None` where `/proc` is unavailable.
    pub cpu_ms: Option<u64>,
}

/// Runs `work` and returns its result with what it cost.
pub fn measure<T>(work: impl FnOnce() -> T) -> (T, Cost) {
    let cpu_before = process_cpu_ms();
    let started = Instant::now();
    let result = work();
    let wall_ms = started.elapsed().as_millis() as u64;
    let cpu_ms = match (cpu_before, process_cpu_ms()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    (result, Cost { wall_ms, cpu_ms })
}

/// The process's user + system CPU time so far, from `/proc/self/stat` (Linux).
pub fn process_cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ms(&stat)
}

/// Clock ticks per second of `/proc`'s time fields (`USER_HZ`, 100 on every Linux platform).
const TICKS_PER_SECOND: u64 = 100;

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` line, in milliseconds. The
/// command name (field 2) may hold spaces and parentheses, so fields count from its last `)`.
fn parse_cpu_ms(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user_ticks: u64 = fields.next()?.parse().ok()?;
    let system_ticks: u64 = fields.next()?.parse().ok()?;
    Some((user_ticks + system_ticks) * 1000 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_ticks_after_an_awkward_name() {
        let line = "4242 (dyad sim) (x)) R 1 4242 4242 0 -1 4194304 500 0 0 0 23 7 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ms(line), Some(300));
        assert_eq!(parse_cpu_ms("garbage"), None);
    }

    #[test]
    fn measuring_work_counts_its_cpu() {
        // Other tests run on other threads of this process and count too, so only a lower
        // bound holds: work that burned 30 ms of the process's CPU measures at least that.
        let (_, cost) = measure(|| {
            let Some(begin) = process_cpu_ms() else {
                return;
            };
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while Instant::now() < deadline && process_cpu_ms().is_some_and(|now| now < begin + 30)
            {
                std::hint::spin_loop();
            }
        });
        if let Some(cpu_ms) = cost.cpu_ms {
            assert!(cpu_ms >= 30 || cost.wall_ms >= 10_000, "{cost:?}");
        }
    }
}
