//! Each appliance's wall clock, as a simulated part of its own.
//!
//! The world keeps one true time; an appliance sees it through its [`SimClock`]: an offset, a
//! drift, and whatever jumps an operator or a fault gave it. Every time the world hands the
//! engine is this local time, and the world maps a local deadline back to the true time it
//! falls at. Pure arithmetic on integers: it imports nothing from the crate, so the world and
//! whatever builds appliances (hardware migrations) share it without depending on each other.

/// An appliance's wall clock: true time plus an offset, a drift, and whatever jumps it took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimClock {
    /// Local minus true time at `anchor_ms`.
    pub offset_ms: i64,
    /// Parts per million the local clock gains (positive) or loses, since `anchor_ms`.
    pub drift_ppm: i64,
    pub anchor_ms: u64,
}

/// Drift beyond this is not a clock, it is a fault of another kind; keeps the inverse exact.
pub const DRIFT_PPM_MAX: i64 = 10_000;

impl SimClock {
    /// The local reading at true time `true_ms`.
    pub fn local(&self, true_ms: u64) -> u64 {
        let elapsed = i128::from(true_ms) - i128::from(self.anchor_ms);
        let local = i128::from(true_ms)
            + i128::from(self.offset_ms)
            + elapsed * i128::from(self.drift_ppm) / 1_000_000;
        local.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// The first true time at which the local clock reads at least `local_ms`.
    pub fn true_time_of(&self, local_ms: u64) -> u64 {
        let target = i128::from(local_ms) - i128::from(self.anchor_ms) - i128::from(self.offset_ms);
        let scale = 1_000_000 + i128::from(self.drift_ppm);
        // ceil(target * 1e6 / scale), with scale > 0.
        let elapsed = -((-target * 1_000_000).div_euclid(scale));
        let mut at = (i128::from(self.anchor_ms) + elapsed).clamp(0, i128::from(u64::MAX)) as u64;
        // Integer rounding in `local` can leave us a millisecond short.
        while self.local(at) < local_ms {
            at += 1;
        }
        while at > 0 && self.local(at - 1) >= local_ms {
            at -= 1;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_maps_back_to_the_first_true_time_it_reads_a_value() {
        for (offset_ms, drift_ppm) in [(0, 0), (3_600_000, 250), (-7_200_000, -900), (5, 10_000)] {
            let clock = SimClock {
                offset_ms,
                drift_ppm,
                anchor_ms: 1_800_000_000_000,
            };
            for true_ms in [1_800_000_000_000u64, 1_800_000_123_457, 1_800_090_000_001] {
                let local = clock.local(true_ms);
                let back = clock.true_time_of(local);
                assert!(back <= true_ms, "{offset_ms} {drift_ppm} {true_ms}");
                assert_eq!(clock.local(back), local.max(clock.local(back)));
                assert!(clock.local(back) >= local);
                assert!(back == 0 || clock.local(back - 1) < local);
            }
        }
    }
}
