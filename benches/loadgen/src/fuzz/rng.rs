//! The fuzzers' seeded generator (SplitMix64, written out so no dependency decides the
//! sequence): one run's `--seed` fixes what every fuzz connection sends, so a failure replays.

pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator of one fuzz worker: its sequence depends only on the run's seed and the
    /// worker's number, not on how the workers' timings interleave.
    pub(crate) fn for_worker(seed: u64, worker: usize) -> Self {
        let mut mixer = Self::new(seed ^ (worker as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        Self::new(mixer.next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` 0 gives 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Multiply-shift instead of modulo: no bias worth mentioning at these bounds.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below((high.saturating_sub(low) as u64) + 1) as usize
    }

    /// True once in `times` on average.
    pub(crate) fn one_in(&mut self, times: u64) -> bool {
        self.below(times) == 0
    }

    /// One of `items` (not empty).
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *self.pick_ref(items)
    }

    pub(crate) fn pick_ref<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub(crate) fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let random = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&random[..chunk.len()]);
        }
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.fill(&mut bytes);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_worker_give_the_same_sequence() {
        let (mut a, mut b) = (SplitMix64::for_worker(7, 3), SplitMix64::for_worker(7, 3));
        let mut other = SplitMix64::for_worker(7, 4);
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, (0..4).map(|_| other.next_u64()).collect::<Vec<_>>());
    }

    #[test]
    fn between_stays_within_its_bounds() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            let n = rng.between(3, 5);
            assert!((3..=5).contains(&n));
        }
    }
}
