//! Finding the difference between two session catalogs in messages proportional to the
//! difference, not to the catalogs (sans-IO).
//!
//! Each session contributes a leaf hash `blake3(origin ‖ sequence ‖ root)`. A range of one
//! origin's sequence numbers is summarized by its count and the XOR of its leaf hashes: order
//! independent, so it is cheap to compute from any ordered index and to keep up to date. Ranges
//! form a fixed fan-out tree: the range `[start, start + 16^level)` has 16 children of width
//! `16^(level-1)`. Reconciliation walks down only where summaries differ: a first exchange
//! compares per-origin summaries, then each round asks the peer for the children (or, once a
//! range is small, the items) of every range that still differs. For `d` differences among `n`
//! sessions that is `O(d · log16 n)` bytes in `O(log16 n)` round trips.
//!
//! One side (the [`Reconciler`]) drives and learns all three kinds of difference; the other
//! only [`answer`]s, statelessly. Requests and responses are plain structs; the lead carries
//! them in wire messages, and `encoded_len` gives the bytes such a message takes with a
//! straightforward fixed layout (tag, `u32` counts, fixed-size fields), so tests and benches
//! can count bytes exchanged.

use std::collections::{BTreeMap, BTreeSet};

use dyad_wire::{NodeId, SessionId};

/// Children per range.
pub const FANOUT: u64 = 16;
/// A range with at most this many sessions on the answering side is answered with its items.
pub const ITEMS_MAX: u64 = 16;
/// Most ranges one request may ask about; bounds a response (about 640 bytes per range).
pub const MAX_RANGES_PER_REQUEST: usize = 8192;
/// Most origins one response may list.
pub const MAX_ORIGINS: usize = 4096;
/// Rounds after which a reconciliation gives up (the tree has at most 17 levels).
pub const MAX_ROUNDS: u32 = 24;
/// Highest range level: `16^16` covers every `u64` sequence.
pub const MAX_LEVEL: u8 = 16;

/// Count and XOR of leaf hashes of the sessions in a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeSummary {
    pub count: u64,
    pub hash: [u8; 32],
}

impl RangeSummary {
    fn add(&mut self, leaf: &[u8; 32]) {
        self.count += 1;
        self.toggle(leaf);
    }

    /// Takes back an [`RangeSummary::add`] of `leaf` (XOR undoes itself).
    fn take(&mut self, leaf: &[u8; 32]) {
        self.count -= 1;
        self.toggle(leaf);
    }

    fn toggle(&mut self, leaf: &[u8; 32]) {
        for (a, b) in self.hash.iter_mut().zip(leaf) {
            *a ^= b;
        }
    }
}

/// One origin's summary: all its sessions, and its highest sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginSummary {
    pub origin: NodeId,
    pub max_sequence: u64,
    pub summary: RangeSummary,
}

/// The range `[start, start + 16^level)` of `origin`'s sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeQuery {
    pub origin: NodeId,
    pub start: u64,
    pub level: u8,
}

impl RangeQuery {
    /// One past the last sequence of the range (as u128: the top range ends at 2^64).
    fn end(&self) -> u128 {
        u128::from(self.start) + FANOUT_U128.pow(u32::from(self.level))
    }

    fn child(&self, index: u64) -> RangeQuery {
        let width = FANOUT.pow(u32::from(self.level) - 1);
        RangeQuery {
            origin: self.origin,
            start: self.start + index * width,
            level: self.level - 1,
        }
    }
}

const FANOUT_U128: u128 = FANOUT as u128;

/// A question from the [`Reconciler`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SummaryRequest {
    /// "Summarize each of your origins."
    Origins,
    /// "Summarize these ranges."
    Ranges(Vec<RangeQuery>),
}

/// The answer about one range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The summaries of the range's [`FANOUT`] children, in order.
    Children(Vec<RangeSummary>),
    /// Every session in the range: sequence and root, ascending.
    Items(Vec<(u64, [u8; 32])>),
}

/// An answer to a [`SummaryRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SummaryResponse {
    Origins(Vec<OriginSummary>),
    Ranges(Vec<RangeAnswer>),
}

const RANGE_SUMMARY_LEN: usize = 8 + 32;

impl SummaryRequest {
    /// Bytes of this request in a fixed layout: a tag, a count, 25 bytes per range.
    pub fn encoded_len(&self) -> usize {
        match self {
            SummaryRequest::Origins => 1,
            SummaryRequest::Ranges(queries) => 1 + 4 + queries.len() * (16 + 8 + 1),
        }
    }
}

impl SummaryResponse {
    /// Bytes of this response in a fixed layout: a tag, counts, fixed-size fields.
    pub fn encoded_len(&self) -> usize {
        match self {
            SummaryResponse::Origins(origins) => {
                1 + 4 + origins.len() * (16 + 8 + RANGE_SUMMARY_LEN)
            }
            SummaryResponse::Ranges(answers) => {
                1 + 4
                    + answers
                        .iter()
                        .map(|answer| match answer {
                            RangeAnswer::Children(children) => {
                                1 + children.len() * RANGE_SUMMARY_LEN
                            }
                            RangeAnswer::Items(items) => 1 + 4 + items.len() * (8 + 32),
                        })
                        .sum::<usize>()
            }
        }
    }
}

/// A peer's request or response does not follow the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryError {
    pub problem: String,
}

impl std::fmt::Display for SummaryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peer broke the catalog summary protocol: {}",
            self.problem
        )
    }
}

impl std::error::Error for SummaryError {}

fn protocol_error(problem: impl Into<String>) -> SummaryError {
    SummaryError {
        problem: problem.into(),
    }
}

/// A session's root and its leaf hash.
type RootAndLeaf = ([u8; 32], [u8; 32]);

/// The catalog as the summary sees it: per origin, sequence → root. Kept in memory by the
/// store and updated on every publish and withdrawal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryIndex {
    /// Per origin: sequence → (root, leaf hash). The leaf hash is kept so that summarizing a
    /// range is XORs only.
    origins: BTreeMap<NodeId, BTreeMap<u64, RootAndLeaf>>,
    /// Per origin, the summary of all its sessions, kept up to date on every change: a sync
    /// with nothing to do compares only these, and must not cost a pass over the catalog.
    totals: BTreeMap<NodeId, RangeSummary>,
}

/// The leaf hash of one session.
pub fn leaf_hash(id: &SessionId, root: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&id.origin.0);
    hasher.update(&id.sequence.to_le_bytes());
    hasher.update(root);
    *hasher.finalize().as_bytes()
}

impl SummaryIndex {
    pub fn insert(&mut self, id: SessionId, root: [u8; 32]) {
        let leaf = leaf_hash(&id, &root);
        let replaced = self
            .origins
            .entry(id.origin)
            .or_default()
            .insert(id.sequence, (root, leaf));
        let total = self.totals.entry(id.origin).or_default();
        if let Some((_, old_leaf)) = replaced {
            total.take(&old_leaf);
        }
        total.add(&leaf);
    }

    pub fn remove(&mut self, id: &SessionId) {
        if let Some(sessions) = self.origins.get_mut(&id.origin) {
            if let Some((_, leaf)) = sessions.remove(&id.sequence) {
                if let Some(total) = self.totals.get_mut(&id.origin) {
                    total.take(&leaf);
                }
            }
            if sessions.is_empty() {
                self.origins.remove(&id.origin);
                self.totals.remove(&id.origin);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.origins.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// Highest sequence per origin.
    pub fn high_water_marks(&self) -> BTreeMap<NodeId, u64> {
        self.origins
            .iter()
            .filter_map(|(origin, sessions)| {
                sessions
                    .last_key_value()
                    .map(|(sequence, _)| (*origin, *sequence))
            })
            .collect()
    }

    /// Sequence, root and leaf hash of each session in the range.
    fn entries<'a>(
        &'a self,
        query: &'a RangeQuery,
    ) -> impl Iterator<Item = (u64, &'a [u8; 32], &'a [u8; 32])> + 'a {
        let end = query.end();
        self.origins
            .get(&query.origin)
            .into_iter()
            .flat_map(move |sessions| {
                sessions
                    .range(query.start..)
                    .take_while(move |(sequence, _)| u128::from(**sequence) < end)
                    .map(|(sequence, (root, leaf))| (*sequence, root, leaf))
            })
    }

    fn items<'a>(
        &'a self,
        query: &'a RangeQuery,
    ) -> impl Iterator<Item = (u64, &'a [u8; 32])> + 'a {
        self.entries(query)
            .map(|(sequence, root, _)| (sequence, root))
    }

    fn summarize(&self, query: &RangeQuery) -> RangeSummary {
        if query.start == 0 && query.level == MAX_LEVEL {
            // The whole origin: kept up to date, no pass over its sessions.
            return self.totals.get(&query.origin).copied().unwrap_or_default();
        }
        let mut summary = RangeSummary::default();
        for (_, _, leaf) in self.entries(query) {
            summary.add(leaf);
        }
        summary
    }

    fn children(&self, query: &RangeQuery) -> Vec<RangeSummary> {
        let mut children = vec![RangeSummary::default(); FANOUT as usize];
        let width = u128::from(FANOUT).pow(u32::from(query.level) - 1);
        for (sequence, _, leaf) in self.entries(query) {
            let index = ((u128::from(sequence) - u128::from(query.start)) / width) as usize;
            children[index].add(leaf);
        }
        children
    }

    fn origin_summaries(&self) -> Vec<OriginSummary> {
        self.origins
            .iter()
            .filter_map(|(origin, sessions)| {
                let (max_sequence, _) = sessions.last_key_value()?;
                Some(OriginSummary {
                    origin: *origin,
                    max_sequence: *max_sequence,
                    summary: self.summarize(&RangeQuery {
                        origin: *origin,
                        start: 0,
                        level: MAX_LEVEL,
                    }),
                })
            })
            .collect()
    }
}

/// Answers a peer's request from our catalog (the responding side).
pub fn answer(
    index: &SummaryIndex,
    request: &SummaryRequest,
) -> Result<SummaryResponse, SummaryError> {
    match request {
        SummaryRequest::Origins => {
            let origins = index.origin_summaries();
            if origins.len() > MAX_ORIGINS {
                return Err(protocol_error(
                    "this catalog has more origins than the protocol allows",
                ));
            }
            Ok(SummaryResponse::Origins(origins))
        }
        SummaryRequest::Ranges(queries) => {
            if queries.len() > MAX_RANGES_PER_REQUEST {
                return Err(protocol_error(format!(
                    "{} ranges in one request, the limit is {MAX_RANGES_PER_REQUEST}",
                    queries.len()
                )));
            }
            let mut answers = Vec::with_capacity(queries.len());
            for query in queries {
                let aligned = match query.level {
                    level if level > MAX_LEVEL => false,
                    MAX_LEVEL => query.start == 0,
                    level => query.start % FANOUT.pow(u32::from(level)) == 0,
                };
                if !aligned {
                    return Err(protocol_error("a range is not aligned to its level"));
                }
                let count = index.items(query).take(ITEMS_MAX as usize + 1).count() as u64;
                if count <= ITEMS_MAX || query.level <= 1 {
                    let items = index.items(query).map(|(s, root)| (s, *root)).collect();
                    answers.push(RangeAnswer::Items(items));
                } else {
                    answers.push(RangeAnswer::Children(index.children(query)));
                }
            }
            Ok(SummaryResponse::Ranges(answers))
        }
    }
}

/// What reconciliation found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Differences {
    /// Sessions the peer has and we lack.
    pub only_theirs: Vec<SessionId>,
    /// Sessions we have and the peer lacks.
    pub only_ours: Vec<SessionId>,
    /// Sessions both have with different roots (to be reported, never merged).
    pub different_roots: Vec<SessionId>,
}

/// Messages and bytes a reconciliation exchanged, both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    pub messages: u64,
    pub bytes: u64,
    pub rounds: u32,
}

/// The driving side of a reconciliation. Send [`Reconciler::start`]'s request, feed each
/// response to [`Reconciler::handle_response`], send the request it returns, until it returns
/// `None`; then [`Reconciler::finish`].
#[derive(Debug, Default)]
pub struct Reconciler {
    pending: Vec<RangeQuery>,
    started: bool,
    differences: Differences,
    stats: ExchangeStats,
}

impl Reconciler {
    pub fn new() -> Reconciler {
        Reconciler::default()
    }

    /// The first request.
    pub fn start(&mut self) -> SummaryRequest {
        self.started = true;
        self.count(&SummaryRequest::Origins);
        SummaryRequest::Origins
    }

    fn count(&mut self, request: &SummaryRequest) {
        self.stats.messages += 1;
        self.stats.bytes += request.encoded_len() as u64;
    }

    /// Consumes the peer's answer to the last request; returns the next request, or `None`
    /// when the differences are complete.
    pub fn handle_response(
        &mut self,
        ours: &SummaryIndex,
        response: &SummaryResponse,
    ) -> Result<Option<SummaryRequest>, SummaryError> {
        if !self.started {
            return Err(protocol_error("a response arrived before any request"));
        }
        self.stats.messages += 1;
        self.stats.bytes += response.encoded_len() as u64;
        self.stats.rounds += 1;
        if self.stats.rounds > MAX_ROUNDS {
            return Err(protocol_error(
                "reconciliation took more rounds than the tree has levels",
            ));
        }
        let mut next = Vec::new();
        match response {
            SummaryResponse::Origins(theirs) => {
                if theirs.len() > MAX_ORIGINS {
                    return Err(protocol_error("too many origins"));
                }
                let ours_by_origin: BTreeMap<NodeId, OriginSummary> = ours
                    .origin_summaries()
                    .into_iter()
                    .map(|summary| (summary.origin, summary))
                    .collect();
                let mut seen = BTreeSet::new();
                for summary in theirs {
                    if !seen.insert(summary.origin) {
                        return Err(protocol_error("an origin is listed twice"));
                    }
                    let mine = ours_by_origin.get(&summary.origin);
                    if mine.map(|m| m.summary) == Some(summary.summary) {
                        continue;
                    }
                    let max = summary.max_sequence.max(mine.map_or(0, |m| m.max_sequence));
                    next.push(RangeQuery {
                        origin: summary.origin,
                        start: 0,
                        level: level_covering(max),
                    });
                }
                for (origin, _) in ours_by_origin.iter().filter(|(o, _)| !seen.contains(*o)) {
                    let all = ours.origins.get(origin).into_iter().flatten();
                    self.differences
                        .only_ours
                        .extend(all.map(|(sequence, _)| SessionId {
                            origin: *origin,
                            sequence: *sequence,
                        }));
                }
            }
            SummaryResponse::Ranges(answers) => {
                if answers.len() != self.pending.len() {
                    return Err(protocol_error(
                        "the number of answers does not match the questions",
                    ));
                }
                let pending = std::mem::take(&mut self.pending);
                for (query, answer) in pending.iter().zip(answers) {
                    self.absorb(ours, query, answer, &mut next)?;
                }
            }
        }
        if next.is_empty() {
            return Ok(None);
        }
        if next.len() > MAX_RANGES_PER_REQUEST {
            return Err(protocol_error(
                "the differences are too many for one request; resync in parts",
            ));
        }
        self.pending = next.clone();
        let request = SummaryRequest::Ranges(next);
        self.count(&request);
        Ok(Some(request))
    }

    fn absorb(
        &mut self,
        ours: &SummaryIndex,
        query: &RangeQuery,
        answer: &RangeAnswer,
        next: &mut Vec<RangeQuery>,
    ) -> Result<(), SummaryError> {
        match answer {
            RangeAnswer::Children(children) => {
                if query.level == 0 || children.len() != FANOUT as usize {
                    return Err(protocol_error("wrong number of children"));
                }
                let mine = ours.children(query);
                for (index, (theirs, mine)) in children.iter().zip(&mine).enumerate() {
                    if theirs == mine {
                        continue;
                    }
                    let child = query.child(index as u64);
                    if theirs.count == 0 {
                        self.differences.only_ours.extend(ours.items(&child).map(
                            |(sequence, _)| SessionId {
                                origin: query.origin,
                                sequence,
                            },
                        ));
                    } else {
                        next.push(child);
                    }
                }
            }
            RangeAnswer::Items(items) => {
                if items.len() as u64 > ITEMS_MAX.max(FANOUT) && query.level > 1 {
                    return Err(protocol_error("too many items for one range"));
                }
                let mut previous: Option<u64> = None;
                for (sequence, _) in items {
                    if u128::from(*sequence) < u128::from(query.start)
                        || u128::from(*sequence) >= query.end()
                        || previous.is_some_and(|p| p >= *sequence)
                    {
                        return Err(protocol_error("items out of range or order"));
                    }
                    previous = Some(*sequence);
                }
                let theirs: BTreeMap<u64, [u8; 32]> = items.iter().copied().collect();
                let mine: BTreeMap<u64, [u8; 32]> =
                    ours.items(query).map(|(s, root)| (s, *root)).collect();
                let id = |sequence: u64| SessionId {
                    origin: query.origin,
                    sequence,
                };
                for (sequence, root) in &theirs {
                    match mine.get(sequence) {
                        None => self.differences.only_theirs.push(id(*sequence)),
                        Some(my_root) if my_root != root => {
                            self.differences.different_roots.push(id(*sequence))
                        }
                        Some(_) => {}
                    }
                }
                for sequence in mine.keys().filter(|s| !theirs.contains_key(s)) {
                    self.differences.only_ours.push(id(*sequence));
                }
            }
        }
        Ok(())
    }

    /// Messages and bytes so far.
    pub fn stats(&self) -> ExchangeStats {
        self.stats
    }

    /// The differences found, each list sorted.
    pub fn finish(mut self) -> (Differences, ExchangeStats) {
        self.differences.only_theirs.sort();
        self.differences.only_ours.sort();
        self.differences.different_roots.sort();
        (self.differences, self.stats)
    }
}

/// The smallest level whose range from 0 covers `max_sequence`.
fn level_covering(max_sequence: u64) -> u8 {
    let mut level = 1u8;
    while level < MAX_LEVEL && u128::from(max_sequence) >= FANOUT_U128.pow(u32::from(level)) {
        level += 1;
    }
    level
}

/// Runs a whole reconciliation between two in-memory catalogs (tests and benches).
pub fn reconcile_locally(
    ours: &SummaryIndex,
    theirs: &SummaryIndex,
) -> Result<(Differences, ExchangeStats), SummaryError> {
    let mut reconciler = Reconciler::new();
    let mut request = reconciler.start();
    loop {
        let response = answer(theirs, &request)?;
        match reconciler.handle_response(ours, &response)? {
            Some(next) => request = next,
            None => return Ok(reconciler.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The per-origin totals kept on every insert, replacement and removal equal a fresh
        /// pass over the sessions.
        #[test]
        fn kept_totals_equal_a_fresh_summary(
            ops in proptest::collection::vec((0u8..3, 0u64..40, any::<bool>(), any::<u64>()), 1..200)
        ) {
            let mut index = SummaryIndex::default();
            for (origin, sequence, insert, seed) in ops {
                let id = id(origin, sequence);
                if insert {
                    index.insert(id, root(seed));
                } else {
                    index.remove(&id);
                }
            }
            for origin in 0u8..3 {
                let query = RangeQuery { origin: NodeId([origin; 16]), start: 0, level: MAX_LEVEL };
                let mut fresh = RangeSummary::default();
                for (_, _, leaf) in index.entries(&query) {
                    fresh.add(leaf);
                }
                prop_assert_eq!(index.summarize(&query), fresh);
            }
            prop_assert_eq!(index.totals.len(), index.origins.len());
        }
    }

    fn id(origin: u8, sequence: u64) -> SessionId {
        SessionId {
            origin: NodeId([origin; 16]),
            sequence,
        }
    }

    fn root(seed: u64) -> [u8; 32] {
        *blake3::hash(&seed.to_le_bytes()).as_bytes()
    }

    fn catalogs(n: u64, d: u64) -> (SummaryIndex, SummaryIndex, Differences) {
        let mut a = SummaryIndex::default();
        let mut b = SummaryIndex::default();
        let mut expected = Differences::default();
        for sequence in 1..=n {
            a.insert(id(1, sequence), root(sequence));
            b.insert(id(1, sequence), root(sequence));
        }
        // Spread the differences across the range, of every kind.
        let step = n / (d + 1);
        for k in 0..d {
            let sequence = 1 + step * (k + 1);
            match k % 3 {
                0 => {
                    b.remove(&id(1, sequence));
                    expected.only_ours.push(id(1, sequence));
                }
                1 => {
                    a.remove(&id(1, sequence));
                    expected.only_theirs.push(id(1, sequence));
                }
                _ => {
                    b.insert(id(1, sequence), root(sequence + 1_000_000_000));
                    expected.different_roots.push(id(1, sequence));
                }
            }
        }
        (a, b, expected)
    }

    #[test]
    fn finds_exactly_the_differences() {
        let (a, b, expected) = catalogs(3000, 10);
        let (found, _) = reconcile_locally(&a, &b).expect("honest peers");
        assert_eq!(found, expected);
        let (same, stats) = reconcile_locally(&a, &a).expect("honest peers");
        assert_eq!(same, Differences::default());
        assert_eq!(stats.messages, 2, "equal catalogs settle in one exchange");
    }

    #[test]
    fn whole_origins_missing_on_either_side() {
        let mut a = SummaryIndex::default();
        let mut b = SummaryIndex::default();
        a.insert(id(1, 5), root(5));
        b.insert(id(2, 7), root(7));
        b.insert(id(2, u64::MAX), root(8));
        let (found, _) = reconcile_locally(&a, &b).expect("honest peers");
        assert_eq!(found.only_ours, vec![id(1, 5)]);
        assert_eq!(found.only_theirs, vec![id(2, 7), id(2, u64::MAX)]);
    }

    /// The cost is a count, not a time, so the growth requirement is asserted here too: ten
    /// times the catalog costs at most 1.5 times the messages and bytes.
    #[test]
    fn cost_grows_with_log_of_catalog_size() {
        let (a, b, _) = catalogs(2_000, 10);
        let (_, small) = reconcile_locally(&a, &b).expect("honest");
        let (a, b, _) = catalogs(20_000, 10);
        let (_, large) = reconcile_locally(&a, &b).expect("honest");
        assert!(
            large.messages * 2 <= small.messages * 3,
            "{small:?} vs {large:?}"
        );
        assert!(large.bytes * 2 <= small.bytes * 3, "{small:?} vs {large:?}");
    }

    #[test]
    fn hostile_responses_are_refused() {
        let (a, _, _) = catalogs(100, 0);
        let mut reconciler = Reconciler::new();
        reconciler.start();
        let lying = SummaryResponse::Ranges(vec![RangeAnswer::Items(vec![])]);
        assert!(reconciler.handle_response(&a, &lying).is_err());
        let mut reconciler = Reconciler::new();
        reconciler.start();
        let duplicated = SummaryResponse::Origins(vec![
            OriginSummary {
                origin: NodeId([9; 16]),
                max_sequence: 1,
                summary: RangeSummary::default(),
            };
            2
        ]);
        assert!(reconciler.handle_response(&a, &duplicated).is_err());
        let unaligned = SummaryRequest::Ranges(vec![RangeQuery {
            origin: NodeId([1; 16]),
            start: 3,
            level: 2,
        }]);
        assert!(answer(&a, &unaligned).is_err());
    }

    proptest! {
        #[test]
        fn random_catalogs_reconcile(
            shared in proptest::collection::btree_set((0u8..3, 0u64..5000), 0..200),
            only_a in proptest::collection::btree_set((0u8..3, 0u64..5000), 0..20),
            only_b in proptest::collection::btree_set((0u8..3, 0u64..5000), 0..20),
        ) {
            let mut a = SummaryIndex::default();
            let mut b = SummaryIndex::default();
            for (origin, sequence) in &shared {
                a.insert(id(*origin, *sequence), root(*sequence));
                b.insert(id(*origin, *sequence), root(*sequence));
            }
            for (origin, sequence) in &only_a {
                a.insert(id(*origin, *sequence), root(*sequence + 7));
            }
            for (origin, sequence) in &only_b {
                b.insert(id(*origin, *sequence), root(*sequence + 9));
            }
            let mut expected = Differences::default();
            let all: BTreeSet<SessionId> = shared.iter().chain(&only_a).chain(&only_b)
                .map(|(o, s)| id(*o, *s)).collect();
            for session in all {
                let ra = a.origins.get(&session.origin).and_then(|m| m.get(&session.sequence));
                let rb = b.origins.get(&session.origin).and_then(|m| m.get(&session.sequence));
                match (ra, rb) {
                    (Some(_), None) => expected.only_ours.push(session),
                    (None, Some(_)) => expected.only_theirs.push(session),
                    (Some(x), Some(y)) if x != y => expected.different_roots.push(session),
                    _ => {}
                }
            }
            let (found, _) = reconcile_locally(&a, &b).expect("honest peers");
            prop_assert_eq!(found, expected);
        }
    }
}
