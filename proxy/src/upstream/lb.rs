//! Upstream load-balancing policies: smooth weighted round robin, weighted least connections,
//! Maglev consistent hashing and weighted power-of-two random choices.
//!
//! A balancer is built once per member list (one config generation) and then asked for a
//! server on every request through [`Balancer::pick`]. What may be picked right now (health,
//! ejection, retry exclusion) and how loaded each server is come from the caller through a
//! [`PickContext`], so balancers hold no per-server health state of their own.
//!
//! Weights of 0 are treated as 1, and every policy answers `None` (never panics) when no
//! member is usable, including for an empty member list.

use std::{
    fmt,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

/// A server as the balancer sees it: a stable identity (used by consistent hashing, e.g.
/// `"10.0.0.1:8080"`) and a weight >= 1.
#[derive(Debug, Clone)]
pub struct Member {
    /// Stable identity; consistent hashing places the member in its table by this string, so
    /// the same id lands on the same slots in every process and after every reload.
    pub id: String,
    /// Relative share of the traffic; 0 is treated as 1.
    pub weight: u32,
}

/// What a pick may look at.
pub struct PickContext<'a> {
    /// Hash key for consistent hashing (client IP bytes, a header or cookie value); `None` for
    /// other policies or when absent (then consistent hashing falls back to a random usable
    /// server).
    pub key: Option<&'a [u8]>,
    /// Whether server `i` may be picked now (healthy, not ejected, not excluded because a
    /// retry must go elsewhere).
    pub usable: &'a dyn Fn(usize) -> bool,
    /// Requests currently in flight to server `i` (for least-connections and two-choices).
    pub load: &'a dyn Fn(usize) -> u32,
}

/// One load-balancing policy over a fixed member list. Implementations are `Send + Sync` and
/// cheap to call on every request (no allocation per pick).
pub trait Balancer: Send + Sync + fmt::Debug {
    /// Picks a usable server index, or `None` when no server is usable.
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize>;
}

/// The load-balancing policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Smooth weighted round robin (nginx's algorithm).
    RoundRobin,
    /// The usable server with the fewest in-flight requests per unit of weight.
    LeastConnections,
    /// Maglev consistent hashing on [`PickContext::key`].
    ConsistentHash,
    /// Two distinct usable servers drawn at random by weight; the less loaded one wins.
    RandomTwoChoices,
}

/// Builds the balancer for `policy` over `members` (non-empty; the caller guarantees it, but
/// an empty list only makes every pick answer `None`).
#[must_use]
pub fn build(policy: Policy, members: &[Member]) -> Box<dyn Balancer> {
    match policy {
        Policy::RoundRobin => Box::new(RoundRobin::new(members)),
        Policy::LeastConnections => Box::new(LeastConnections::new(members)),
        Policy::ConsistentHash => Box::new(Maglev::new(members)),
        Policy::RandomTwoChoices => Box::new(TwoChoices::new(members)),
    }
}

/// A member's effective weight (0 counts as 1).
fn weight_of(member: &Member) -> u32 {
    member.weight.max(1)
}

/// Whether server `a` (load `la`, weight `wa`) is strictly less loaded per unit of weight than
/// server `b`: `la / wa < lb / wb`, computed without floats.
fn less_loaded(la: u32, wa: u32, lb: u32, wb: u32) -> bool {
    u64::from(la) * u64::from(wb) < u64::from(lb) * u64::from(wa)
}

// ---------------------------------------------------------------------------------------------
// Weighted random selection (shared by two-choices and by consistent hashing without a key)
// ---------------------------------------------------------------------------------------------

/// Draws that may be rejected (unusable or already chosen) before falling back to a scan.
const REJECTION_TRIES: usize = 8;

/// Member weights with their prefix sums, for weighted random selection in O(log n).
#[derive(Debug)]
struct Weights {
    /// Effective weight of each member (>= 1).
    weight: Vec<u32>,
    /// `cumulative[i]` = sum of `weight[..=i]`.
    cumulative: Vec<u64>,
}

impl Weights {
    fn new(members: &[Member]) -> Self {
        let weight: Vec<u32> = members.iter().map(weight_of).collect();
        let mut sum = 0u64;
        let cumulative = weight
            .iter()
            .map(|&w| {
                sum = sum.saturating_add(u64::from(w));
                sum
            })
            .collect();
        Self { weight, cumulative }
    }

    fn len(&self) -> usize {
        self.weight.len()
    }

    fn get(&self, i: usize) -> u32 {
        self.weight.get(i).copied().unwrap_or(1)
    }

    /// A member drawn at random in proportion to its weight, usable or not.
    fn draw(&self) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let r = fastrand::u64(0..total);
        // First prefix sum above `r`; always < len because r < total.
        let i = self.cumulative.partition_point(|&c| c <= r);
        (i < self.len()).then_some(i)
    }

    /// A usable member other than `not`, drawn at random in proportion to its weight among
    /// those; `None` when there is none.
    ///
    /// Tries a few unconditional draws first (rejection sampling: exact, and O(log n) while
    /// most servers are usable), then scans.
    fn random_usable(&self, usable: &dyn Fn(usize) -> bool, not: Option<usize>) -> Option<usize> {
        for _ in 0..REJECTION_TRIES {
            let i = self.draw()?;
            if Some(i) != not && usable(i) {
                return Some(i);
            }
        }
        let available = self.usable_weight(usable, not);
        if available == 0 {
            return None;
        }
        self.nth_usable(fastrand::u64(0..available), usable, not)
    }

    /// Total weight of the usable members other than `not`.
    fn usable_weight(&self, usable: &dyn Fn(usize) -> bool, not: Option<usize>) -> u64 {
        self.weight
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != not && usable(i))
            .fold(0u64, |sum, (_, &w)| sum.saturating_add(u64::from(w)))
    }

    /// The usable member (other than `not`) whose weight range holds `r`, counting only usable
    /// members. If usability changed since `r` was chosen, the last usable member seen.
    fn nth_usable(
        &self,
        mut r: u64,
        usable: &dyn Fn(usize) -> bool,
        not: Option<usize>,
    ) -> Option<usize> {
        let mut last = None;
        for (i, &w) in self.weight.iter().enumerate() {
            if Some(i) == not || !usable(i) {
                continue;
            }
            last = Some(i);
            if r < u64::from(w) {
                return Some(i);
            }
            r -= u64::from(w);
        }
        last
    }
}

// ---------------------------------------------------------------------------------------------
// Smooth weighted round robin
// ---------------------------------------------------------------------------------------------

/// nginx's smooth weighted round robin: each pick adds every usable server's weight to its
/// current weight, picks the largest current weight and subtracts the total usable weight
/// from it. Weights 5,1,1 give `a a b a c a a`, not `a a a a a b c`.
#[derive(Debug)]
struct RoundRobin {
    weight: Vec<i64>,
    /// Current weights; uncontended in practice (a few adds per pick).
    current: Mutex<Vec<i64>>,
}

impl RoundRobin {
    fn new(members: &[Member]) -> Self {
        Self {
            weight: members.iter().map(|m| i64::from(weight_of(m))).collect(),
            current: Mutex::new(vec![0; members.len()]),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        // A panic in a caller's closure while locked leaves the state consistent enough.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, (cur, &w)) in current.iter_mut().zip(&self.weight).enumerate() {
            if !(ctx.usable)(i) {
                continue;
            }
            *cur += w;
            total += w;
            if best.is_none_or(|(_, b)| *cur > b) {
                best = Some((i, *cur));
            }
        }
        let (i, _) = best?;
        if let Some(cur) = current.get_mut(i) {
            *cur -= total;
        }
        Some(i)
    }
}

// ---------------------------------------------------------------------------------------------
// Weighted least connections
// ---------------------------------------------------------------------------------------------

/// The usable server with the smallest `load / weight`; ties go to the first one at or after a
/// start index that advances on every pick, so equally loaded servers share the requests.
#[derive(Debug)]
struct LeastConnections {
    weight: Vec<u32>,
    next: AtomicUsize,
}

impl LeastConnections {
    fn new(members: &[Member]) -> Self {
        Self {
            weight: members.iter().map(weight_of).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Balancer for LeastConnections {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.weight.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u32, u32)> = None;
        for i in (start..n).chain(0..start) {
            if !(ctx.usable)(i) {
                continue;
            }
            let (load, weight) = ((ctx.load)(i), self.weight[i]);
            if best.is_none_or(|(_, bl, bw)| less_loaded(load, weight, bl, bw)) {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

// ---------------------------------------------------------------------------------------------
// Maglev consistent hashing
// ---------------------------------------------------------------------------------------------

/// Maglev lookup table size: a prime, so every `skip` in `1..M` walks all slots.
const TABLE_SIZE: usize = 65_537;
/// Hash seeds: the key, and the member id's two permutation hashes.
const SEED_KEY: u64 = 0;
const SEED_OFFSET: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SEED_SKIP: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
/// Table entries walked past before checking that any member is usable at all, so a pool
/// that is entirely down costs O(n) per pick rather than a walk of the whole table.
const PROBES_BEFORE_SCAN: usize = 16;
/// An unfilled table slot (only ever seen while building).
const EMPTY: u32 = u32::MAX;

/// FNV-1a 64 offset basis and prime.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `state`.
fn fnv1a64(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// MurmurHash3's 64-bit finalizer: spreads FNV's weak low-entropy bits over the whole word.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The stable hash used for keys and member ids: FNV-1a 64 over the seed's little-endian
/// bytes then `bytes`, finalized with `fmix64`. Fixed constants only, so it is the same in
/// every process, build and platform (unlike std's `RandomState`).
fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    fmix64(fnv1a64(fnv1a64(FNV_BASIS, &seed.to_le_bytes()), bytes))
}

/// Maglev (Eisenbud et al., NSDI 2016): a lookup table of prime size in which each member
/// fills slots along its own permutation `(offset + j * skip) mod M`, members taking turns,
/// with a member of weight `w` taking `w / max_weight` turns per round (so slots are shared in
/// proportion to weight at any weight scale). A key goes to `table[hash(key) mod M]`; when
/// that server is unusable the walk goes on to the following slots, so only the keys of the
/// failed server move, and they spread over the others.
struct Maglev {
    table: Vec<u32>,
    weights: Weights,
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table.len())
            .field("weights", &self.weights.weight)
            .finish()
    }
}

impl Maglev {
    fn new(members: &[Member]) -> Self {
        Self {
            table: Self::populate(members),
            weights: Weights::new(members),
        }
    }

    /// Fills the lookup table (empty when there are no members).
    fn populate(members: &[Member]) -> Vec<u32> {
        // Table entries are u32; a member list that long cannot exist in memory anyway.
        let members = &members[..members.len().min(EMPTY as usize)];
        if members.is_empty() {
            return Vec::new();
        }
        let m = TABLE_SIZE as u64;
        let mut position: Vec<u64> = members
            .iter()
            .map(|mb| stable_hash(SEED_OFFSET, mb.id.as_bytes()) % m)
            .collect();
        let skip: Vec<u64> = members
            .iter()
            .map(|mb| stable_hash(SEED_SKIP, mb.id.as_bytes()) % (m - 1) + 1)
            .collect();
        let weight: Vec<u64> = members.iter().map(|mb| u64::from(weight_of(mb))).collect();
        let max_weight = weight.iter().copied().max().unwrap_or(1);
        let mut credit = vec![0u64; members.len()];
        let mut table = vec![EMPTY; TABLE_SIZE];
        let mut filled = 0usize;
        // Each round the heaviest member takes a turn and fills a slot, so this ends within
        // TABLE_SIZE rounds; a turn's walk ends because the permutation visits every slot and
        // the table is not full yet.
        loop {
            for (i, member_index) in (0..members.len()).zip(0u32..) {
                credit[i] += weight[i];
                if credit[i] < max_weight {
                    continue;
                }
                credit[i] -= max_weight;
                loop {
                    #[expect(
                        clippy::cast_possible_truncation,
                        reason = "a position is below TABLE_SIZE (65 537)"
                    )]
                    let slot = position[i] as usize;
                    position[i] = (position[i] + skip[i]) % m;
                    if table[slot] == EMPTY {
                        table[slot] = member_index;
                        break;
                    }
                }
                filled += 1;
                if filled == TABLE_SIZE {
                    return table;
                }
            }
        }
    }
}

impl Balancer for Maglev {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let Some(key) = ctx.key else {
            return self.weights.random_usable(ctx.usable, None);
        };
        if self.table.is_empty() {
            return None;
        }
        let hash = stable_hash(SEED_KEY, key);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the remainder is below TABLE_SIZE (65 537)"
        )]
        let start = (hash % TABLE_SIZE as u64) as usize;
        let mut last_checked = EMPTY;
        for (step, &server) in self.table[start..]
            .iter()
            .chain(&self.table[..start])
            .enumerate()
        {
            // Runs of one server are common; ask about it once.
            if server != last_checked {
                let i = server as usize;
                if i < self.weights.len() && (ctx.usable)(i) {
                    return Some(i);
                }
                last_checked = server;
            }
            if step == PROBES_BEFORE_SCAN && self.weights.usable_weight(ctx.usable, None) == 0 {
                return None;
            }
        }
        // Every server in the table is unusable, yet some member is usable: it holds no slot
        // (only possible with extreme weight ratios or more members than slots). Stay
        // deterministic per key.
        let available = self.weights.usable_weight(ctx.usable, None);
        if available == 0 {
            return None;
        }
        self.weights.nth_usable(hash % available, ctx.usable, None)
    }
}

// ---------------------------------------------------------------------------------------------
// Power of two random choices
// ---------------------------------------------------------------------------------------------

/// Two distinct usable servers drawn at random in proportion to weight (without replacement);
/// the one with the smaller `load / weight` wins, the first drawn on a tie. With one usable
/// server, that one.
#[derive(Debug)]
struct TwoChoices {
    weights: Weights,
}

impl TwoChoices {
    fn new(members: &[Member]) -> Self {
        Self {
            weights: Weights::new(members),
        }
    }
}

impl Balancer for TwoChoices {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let a = self.weights.random_usable(ctx.usable, None)?;
        let Some(b) = self.weights.random_usable(ctx.usable, Some(a)) else {
            return Some(a);
        };
        let (wa, wb) = (self.weights.get(a), self.weights.get(b));
        if less_loaded((ctx.load)(b), wb, (ctx.load)(a), wa) {
            Some(b)
        } else {
            Some(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Member {
                id: format!("10.0.0.{}:8080", i + 1),
                weight,
            })
            .collect()
    }

    fn all(_: usize) -> bool {
        true
    }

    fn idle(_: usize) -> u32 {
        0
    }

    fn pick_with(
        b: &dyn Balancer,
        key: Option<&[u8]>,
        usable: &dyn Fn(usize) -> bool,
        load: &dyn Fn(usize) -> u32,
    ) -> Option<usize> {
        b.pick(&PickContext { key, usable, load })
    }

    fn pick(b: &dyn Balancer) -> Option<usize> {
        pick_with(b, None, &all, &idle)
    }

    fn counts(n: usize, picks: impl IntoIterator<Item = Option<usize>>) -> Vec<usize> {
        let mut c = vec![0; n];
        for p in picks {
            c[p.expect("a server")] += 1;
        }
        c
    }

    // --- round robin ---

    #[test]
    fn round_robin_is_smooth_for_5_1_1() {
        let b = build(Policy::RoundRobin, &members(&[5, 1, 1]));
        let seq: Vec<usize> = (0..7).map(|_| pick(&*b).unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_proportions_are_exact() {
        let b = build(Policy::RoundRobin, &members(&[5, 1, 1]));
        assert_eq!(counts(3, (0..7000).map(|_| pick(&*b))), [5000, 1000, 1000]);
        let b = build(Policy::RoundRobin, &members(&[3, 0, 2]));
        assert_eq!(counts(3, (0..600).map(|_| pick(&*b))), [300, 100, 200]);
    }

    #[test]
    fn round_robin_skips_unusable() {
        let b = build(Policy::RoundRobin, &members(&[5, 1, 1]));
        let not_first = |i: usize| i != 0;
        let c = counts(
            3,
            (0..1000).map(|_| pick_with(&*b, None, &not_first, &idle)),
        );
        assert_eq!(c, [0, 500, 500]);
        // Back to all usable: server 0 is picked again, and proportions settle.
        let c = counts(3, (0..7000).map(|_| pick(&*b)));
        assert!(c[0] >= 4990, "{c:?}");
    }

    #[test]
    fn round_robin_none_when_all_unusable() {
        let b = build(Policy::RoundRobin, &members(&[5, 1, 1]));
        assert_eq!(pick_with(&*b, None, &|_| false, &idle), None);
    }

    #[test]
    fn round_robin_is_exact_across_threads() {
        let b = build(Policy::RoundRobin, &members(&[5, 1, 1]));
        let c = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1750).map(|_| pick(&*b)).collect::<Vec<_>>()))
                .collect();
            counts(3, handles.into_iter().flat_map(|h| h.join().unwrap()))
        });
        assert_eq!(c, [5000, 1000, 1000]);
    }

    // --- least connections ---

    #[test]
    fn least_connections_picks_min_load_per_weight() {
        let b = build(Policy::LeastConnections, &members(&[1, 2, 4]));
        let loads = [3u32, 5, 9]; // 3, 2.5, 2.25
        let load = |i: usize| loads[i];
        for _ in 0..10 {
            assert_eq!(pick_with(&*b, None, &all, &load), Some(2));
        }
        let loads = [1u32, 5, 9]; // 1, 2.5, 2.25
        let load = |i: usize| loads[i];
        for _ in 0..10 {
            assert_eq!(pick_with(&*b, None, &all, &load), Some(0));
        }
    }

    #[test]
    fn least_connections_ties_rotate() {
        let b = build(Policy::LeastConnections, &members(&[1, 1, 1]));
        let seq: Vec<usize> = (0..6).map(|_| pick(&*b).unwrap()).collect();
        assert_eq!(counts(3, seq.iter().map(|&i| Some(i))), [2, 2, 2]);
        // Weighted tie: 2/2 == 1/1; both share, server 2 (3/1) never.
        let b = build(Policy::LeastConnections, &members(&[2, 1, 1]));
        let loads = [2u32, 1, 3];
        let load = |i: usize| loads[i];
        let c = counts(3, (0..600).map(|_| pick_with(&*b, None, &all, &load)));
        assert_eq!(c[2], 0);
        assert!(c[0] > 0 && c[1] > 0, "{c:?}");
    }

    #[test]
    fn least_connections_skips_unusable() {
        let b = build(Policy::LeastConnections, &members(&[1, 1, 1]));
        let loads = [0u32, 7, 3];
        let load = |i: usize| loads[i];
        let not_first = |i: usize| i != 0;
        for _ in 0..10 {
            assert_eq!(pick_with(&*b, None, &not_first, &load), Some(2));
        }
        assert_eq!(pick_with(&*b, None, &|_| false, &load), None);
    }

    // --- consistent hash ---

    fn key(i: u32) -> Vec<u8> {
        format!("client-{i}").into_bytes()
    }

    fn hash_pick(b: &dyn Balancer, k: &[u8], usable: &dyn Fn(usize) -> bool) -> usize {
        pick_with(b, Some(k), usable, &idle).expect("a server")
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Published FNV-1a 64 test vectors: the hash must never depend on the process.
        assert_eq!(fnv1a64(FNV_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            stable_hash(SEED_KEY, b"10.0.0.1"),
            stable_hash(SEED_KEY, b"10.0.0.1")
        );
        assert_ne!(stable_hash(SEED_OFFSET, b"x"), stable_hash(SEED_SKIP, b"x"));
    }

    #[test]
    fn consistent_hash_is_stable_across_builds() {
        let m = members(&[1, 1, 2, 3]);
        let (a, b) = (
            build(Policy::ConsistentHash, &m),
            build(Policy::ConsistentHash, &m),
        );
        for i in 0..10_000 {
            let k = key(i);
            assert_eq!(hash_pick(&*a, &k, &all), hash_pick(&*b, &k, &all));
            assert_eq!(hash_pick(&*a, &k, &all), hash_pick(&*a, &k, &all));
        }
    }

    #[test]
    fn consistent_hash_table_shares_follow_weights() {
        let table = Maglev::populate(&members(&[1, 1, 2]));
        assert!(table.iter().all(|&s| s < 3));
        let c = counts(3, table.iter().map(|&s| Some(s as usize)));
        let quarter = TABLE_SIZE / 4;
        for (share, expected) in c.iter().zip([quarter, quarter, 2 * quarter]) {
            assert!(share.abs_diff(expected) <= 2, "{c:?}");
        }
    }

    #[test]
    fn consistent_hash_distribution_follows_weights() {
        let b = build(Policy::ConsistentHash, &members(&[1, 1, 2]));
        let n = 100_000;
        let c = counts(3, (0..n).map(|i| Some(hash_pick(&*b, &key(i), &all))));
        for (got, share) in c.iter().zip([0.25, 0.25, 0.5]) {
            let expected = share * f64::from(n);
            let got = f64::from(u32::try_from(*got).unwrap());
            assert!((got - expected).abs() <= 0.1 * expected, "{c:?}");
        }
    }

    #[test]
    fn consistent_hash_failure_moves_only_the_failed_servers_keys() {
        let b = build(Policy::ConsistentHash, &members(&[1, 1, 1, 1, 1]));
        let without_2 = |i: usize| i != 2;
        let mut moved = vec![0; 5];
        for i in 0..100_000 {
            let k = key(i);
            let before = hash_pick(&*b, &k, &all);
            let after = hash_pick(&*b, &k, &without_2);
            assert_ne!(after, 2);
            if before == 2 {
                moved[after] += 1;
            } else {
                assert_eq!(before, after, "key {i} moved off a healthy server");
            }
        }
        // The failed server's keys spread over all the others.
        assert!(
            moved.iter().enumerate().all(|(i, &c)| (i == 2) == (c == 0)),
            "{moved:?}"
        );
    }

    #[test]
    fn consistent_hash_adding_a_member_moves_about_a_sixth() {
        let five = build(Policy::ConsistentHash, &members(&[1; 5]));
        let six = build(Policy::ConsistentHash, &members(&[1; 6]));
        let n = 100_000;
        let moved = (0..n)
            .filter(|&i| hash_pick(&*five, &key(i), &all) != hash_pick(&*six, &key(i), &all))
            .count();
        let fraction = f64::from(u32::try_from(moved).unwrap()) / f64::from(n);
        assert!((0.10..=0.25).contains(&fraction), "{fraction}");
    }

    #[test]
    fn consistent_hash_without_key_picks_a_usable_server() {
        let b = build(Policy::ConsistentHash, &members(&[1, 1, 1, 1]));
        let usable = |i: usize| i == 1 || i == 3;
        let c = counts(4, (0..2000).map(|_| pick_with(&*b, None, &usable, &idle)));
        assert_eq!((c[0], c[2]), (0, 0));
        assert!(c[1] > 0 && c[3] > 0, "{c:?}");
        assert_eq!(pick_with(&*b, None, &|_| false, &idle), None);
    }

    #[test]
    fn consistent_hash_none_when_all_unusable() {
        let b = build(Policy::ConsistentHash, &members(&[1, 2, 3]));
        assert_eq!(pick_with(&*b, Some(b"k"), &|_| false, &idle), None);
    }

    #[test]
    fn consistent_hash_extreme_weights_still_reach_usable_members() {
        // Member 1 gets no slot at this ratio; the fallback must still find it.
        let b = build(Policy::ConsistentHash, &members(&[u32::MAX, 1]));
        let only_1 = |i: usize| i == 1;
        assert_eq!(pick_with(&*b, Some(b"k"), &only_1, &idle), Some(1));
        assert_eq!(pick_with(&*b, Some(b"k"), &all, &idle), Some(0));
    }

    // --- two choices ---

    #[test]
    fn two_choices_never_picks_the_loaded_server() {
        let b = build(Policy::RandomTwoChoices, &members(&[1, 1, 1, 1]));
        let loads = [100u32, 0, 0, 0];
        let load = |i: usize| loads[i];
        let c = counts(4, (0..10_000).map(|_| pick_with(&*b, None, &all, &load)));
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1..].iter().all(|&x| x > 0), "{c:?}");
    }

    #[test]
    fn two_choices_spreads_equal_loads() {
        let b = build(Policy::RandomTwoChoices, &members(&[1, 1, 1, 1, 1]));
        let c = counts(5, (0..10_000).map(|_| pick(&*b)));
        assert!(c.iter().all(|&x| x > 1000), "{c:?}");
    }

    #[test]
    fn two_choices_honours_weights() {
        // Both are always drawn; on equal loads the first drawn wins, which is 3:1 weighted.
        let b = build(Policy::RandomTwoChoices, &members(&[1, 3]));
        let c = counts(2, (0..20_000).map(|_| pick(&*b)));
        assert!((14_000..=16_000).contains(&c[1]), "{c:?}");
        // Per unit of weight, 2 in flight on weight 3 is less than 1 on weight 1, so the
        // heavier server wins whichever is drawn first.
        let loads = [1u32, 2];
        let load = |i: usize| loads[i];
        assert!((0..100).all(|_| pick_with(&*b, None, &all, &load) == Some(1)));
    }

    #[test]
    fn two_choices_skips_unusable() {
        let b = build(Policy::RandomTwoChoices, &members(&[1, 1, 1, 1]));
        let usable = |i: usize| i != 1 && i != 2;
        let c = counts(4, (0..5000).map(|_| pick_with(&*b, None, &usable, &idle)));
        assert_eq!((c[1], c[2]), (0, 0), "{c:?}");
        assert!(c[0] > 0 && c[3] > 0, "{c:?}");
        assert_eq!(pick_with(&*b, None, &|_| false, &idle), None);
    }

    #[test]
    fn two_choices_single_usable_server() {
        let b = build(Policy::RandomTwoChoices, &members(&[1, 1, 1, 1]));
        let loads = [0u32, 0, 500, 0];
        let load = |i: usize| loads[i];
        let only_2 = |i: usize| i == 2;
        assert!((0..100).all(|_| pick_with(&*b, None, &only_2, &load) == Some(2)));
        let one = build(Policy::RandomTwoChoices, &members(&[4]));
        assert_eq!(pick(&*one), Some(0));
    }

    // --- every policy ---

    #[test]
    fn empty_member_list_never_panics() {
        for policy in [
            Policy::RoundRobin,
            Policy::LeastConnections,
            Policy::ConsistentHash,
            Policy::RandomTwoChoices,
        ] {
            let b = build(policy, &[]);
            assert_eq!(pick(&*b), None);
            assert_eq!(pick_with(&*b, Some(b"k"), &all, &idle), None);
            assert!(!format!("{b:?}").is_empty());
        }
    }

    #[test]
    fn zero_and_huge_weights_never_panic() {
        let m = members(&[0, u32::MAX, 1, u32::MAX]);
        let heavy = |_: usize| u32::MAX;
        for policy in [
            Policy::RoundRobin,
            Policy::LeastConnections,
            Policy::ConsistentHash,
            Policy::RandomTwoChoices,
        ] {
            let b = build(policy, &m);
            for i in 0..100u32 {
                let k = i.to_le_bytes();
                assert!(pick_with(&*b, Some(&k), &all, &heavy).is_some_and(|s| s < 4));
            }
        }
    }
}
