//! The one decision both attach points share: allowlist first, then blocklist.
//! The blocklist is looked up in exact-match hash maps, one probe per populated prefix
//! length, longest first (Cilium's prefilter keeps /32 and /128 in a hash map the same way);
//! a per-bucket mask of populated lengths keeps the probes to the lengths near the address.
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_loop},
    maps::{LpmTrie, LruHashMap, lpm_trie::Key},
};
use proxy_common::{
    BlockEntry, COUNTER_SLOTS, Counter, IFINDEX_MAX, MAX_IFACES, PrefixV4, PrefixV6, RateConfig,
    TokenBucket, V4_SHORT, V6_SHORT, v4_long, v4_low, v4_mid, v6_long, v6_mid,
};

use crate::{
    maps::{
        ALLOW_V4, ALLOW_V6, BLOCK_HASH_V4, BLOCK_HASH_V6, BLOCK_LENS_V4, BLOCK_LENS_V6, BLOCK_V4,
        BLOCK_V6, COUNTERS, IFACE_SLOTS, LIST_FLAGS, RATE_CONFIG, SYN_BUCKETS_V4, SYN_BUCKETS_V6,
    },
    packet::{Packet, Source},
};

/// What to do with a packet; each attach point maps it to its own return code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Sent back out of the interface it came in on (XDP only: the SYN proxy's SYN-ACKs).
    Tx,
}

#[inline(always)]
fn count(base: u32, counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(base + counter as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; nothing else writes it
        // while this program runs on this CPU (programs are not preempted mid-run by themselves).
        unsafe { *value += 1 };
    }
}

/// Adds one to `counter` in the block of counters at `base` (see [`iface_base`]).
#[inline(always)]
pub fn count_in(base: u32, counter: Counter) {
    count(base, counter);
}

/// The first counter of an interface's block (slot 0's when it has none).
#[inline(always)]
pub fn iface_base(ifindex: u32) -> u32 {
    let slot = if ifindex < IFINDEX_MAX {
        IFACE_SLOTS.get(ifindex).copied().unwrap_or(0)
    } else {
        0
    };
    slot.min(MAX_IFACES - 1) * COUNTER_SLOTS
}

/// State of one blocklist lookup, carried through `bpf_loop` (the verifier checks the probe
/// once, whatever the number of lengths; an open-coded loop of probes exceeds its budget).
#[repr(C)]
struct Probe {
    /// The address as two big-endian halves (IPv4: `hi` holds it in its top 32 bits).
    hi: u64,
    lo: u64,
    /// Lengths still to try, as bits: word 2 holds length 128, word 0 lengths 0 to 63.
    lens: [u64; 3],
    /// The word being tried.
    word: u32,
    /// 0: no prefix found; 1: found and in force; 2: found, expired.
    verdict: u32,
}

/// `len` leading one bits in a 64-bit word, without branching on `len` (0 to 64).
#[inline(always)]
fn ones(len: u32) -> u64 {
    // Two shifts so that neither is by 64: `len` 0 gives 0, 64 gives all ones.
    let len = u64::from(len.min(64));
    !((u64::MAX >> (len >> 1)) >> (len - (len >> 1)))
}

/// Takes the longest length left, probes the hash map for it; 1 stops the loop.
#[inline(always)]
fn probe_next(p: &mut Probe, v6: bool) -> i64 {
    let mut w = p.word.min(2) as usize;
    while p.lens[w] == 0 {
        if w == 0 {
            return 1;
        }
        w -= 1;
    }
    p.word = w as u32;
    let bit = 63 - p.lens[w].leading_zeros();
    p.lens[w] &= !(1u64 << bit);
    let len = w as u32 * 64 + bit;
    let net_hi = p.hi & ones(len.min(64));
    let net_lo = p.lo & ones(len.saturating_sub(64));
    let found = if v6 {
        let mut key = PrefixV6 { len, addr: [0; 16] };
        key.addr[..8].copy_from_slice(&net_hi.to_be_bytes());
        key.addr[8..].copy_from_slice(&net_lo.to_be_bytes());
        // SAFETY: the value is copied out at once.
        unsafe { BLOCK_HASH_V6.get(&key) }.copied()
    } else {
        let key = PrefixV4 {
            len,
            addr: ((net_hi >> 32) as u32).to_be_bytes(),
        };
        // SAFETY: the value is copied out at once.
        unsafe { BLOCK_HASH_V4.get(&key) }.copied()
    };
    match found {
        Some(entry) => {
            // The clock only for an entry that expires: the helper costs as much as the
            // rest of a lookup.
            let active = entry.expires_at_ns == 0 || {
                // SAFETY: bpf_ktime_get_ns has no preconditions.
                let now = unsafe { bpf_ktime_get_ns() };
                entry.is_active(now)
            };
            p.verdict = if active { 1 } else { 2 };
            1
        }
        None => 0,
    }
}

extern "C" fn probe_v4(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Probe` on the caller's stack that `bpf_loop` passes back.
    probe_next(unsafe { &mut *ctx.cast::<Probe>() }, false)
}

extern "C" fn probe_v6(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `probe_v4`.
    probe_next(unsafe { &mut *ctx.cast::<Probe>() }, true)
}

/// Whether the longest blocklist prefix holding an IPv4 address is in force: one
/// exact-match probe per prefix length that the address's bucket (or the short prefixes)
/// may hold, longest first.
#[inline(always)]
fn blocked_v4(addr: [u8; 4]) -> bool {
    let get = |i: u32| BLOCK_LENS_V4.get(i).copied().unwrap_or(0);
    let lens = get(V4_SHORT) | get(v4_low(addr)) | get(v4_mid(addr)) | get(v4_long(addr));
    if lens == 0 {
        return false;
    }
    let mut p = Probe {
        hi: u64::from(u32::from_be_bytes(addr)) << 32,
        lo: 0,
        // Lengths above 32 cannot be IPv4's.
        lens: [lens & ((1u64 << 33) - 1), 0, 0],
        word: 0,
        verdict: 0,
    };
    // The longest candidate inline: most addresses have one (the loop's set-up costs as
    // much as a probe).
    if probe_next(&mut p, false) == 1 {
        return p.verdict == 1;
    }
    // SAFETY: `probe_v4` is a static function with bpf_loop's callback signature, and `p`
    // outlives the call.
    unsafe {
        bpf_loop(
            33,
            probe_v4 as *mut c_void,
            core::ptr::from_mut(&mut p).cast(),
            0,
        );
    }
    p.verdict == 1
}

/// [`blocked_v4`] for IPv6 (lengths 0 to 128 in three words).
#[inline(always)]
fn blocked_v6(addr: [u8; 16]) -> bool {
    let get = |i: u32| BLOCK_LENS_V6.get(i).copied().unwrap_or_default();
    let (short, mid, bucket) = (get(V6_SHORT), get(v6_mid(&addr)), get(v6_long(&addr)));
    let lens = [
        short.bits[0] | mid.bits[0] | bucket.bits[0],
        short.bits[1] | mid.bits[1] | bucket.bits[1],
        (short.bits[2] | mid.bits[2] | bucket.bits[2]) & 1,
    ];
    if lens == [0, 0, 0] {
        return false;
    }
    let mut p = Probe {
        hi: u64::from_be_bytes([
            addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
        ]),
        lo: u64::from_be_bytes([
            addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
        ]),
        lens,
        word: 2,
        verdict: 0,
    };
    if probe_next(&mut p, true) == 1 {
        return p.verdict == 1;
    }
    // SAFETY: as in `blocked_v4`.
    unsafe {
        bpf_loop(
            129,
            probe_v6 as *mut c_void,
            core::ptr::from_mut(&mut p).cast(),
            0,
        );
    }
    p.verdict == 1
}

/// Whether the index is built (`LIST_FLAGS[3]`, set by the daemon once it has made the
/// index match the tries).
#[inline(always)]
fn index_ready() -> bool {
    LIST_FLAGS.get(3).is_some_and(|f| *f != 0)
}

/// Whether the blocklist is looked up in its LPM tries instead of the index: until the
/// index is built, or when `LIST_FLAGS[2]` says so (a diagnostic switch, used by
/// `bench lookup` to compare both in one run).
#[inline(always)]
fn lpm_mode() -> bool {
    !index_ready() || LIST_FLAGS.get(2).is_some_and(|f| *f != 0)
}

/// Whether an allowlist is walked: when it has entries, or until the index (with the
/// flags) is built.
#[inline(always)]
fn walk_allowlist(family: u32) -> bool {
    !index_ready() || LIST_FLAGS.get(family).is_some_and(|f| *f != 0)
}

/// The blocklist's LPM trie: the longest prefix holding `key`, if in force.
#[inline(always)]
fn blocked_lpm<K>(trie: &LpmTrie<K, BlockEntry>, key: &Key<K>) -> bool {
    match trie.get(key) {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        Some(e) => e.expires_at_ns == 0 || e.is_active(unsafe { bpf_ktime_get_ns() }),
        None => false,
    }
}

/// Allowlist first (walked only when it has entries), then an active blocklist entry.
#[inline(always)]
fn classify_v4(addr: [u8; 4]) -> Counter {
    if walk_allowlist(0) && ALLOW_V4.get(&Key::new(32, addr)).is_some() {
        return Counter::PassedAllowlist;
    }
    let blocked = if lpm_mode() {
        blocked_lpm(&BLOCK_V4, &Key::new(32, addr))
    } else {
        blocked_v4(addr)
    };
    if blocked {
        Counter::DroppedBlocklist
    } else {
        Counter::Passed
    }
}

#[inline(always)]
fn classify_v6(addr: [u8; 16]) -> Counter {
    if walk_allowlist(1) && ALLOW_V6.get(&Key::new(128, addr)).is_some() {
        return Counter::PassedAllowlist;
    }
    let blocked = if lpm_mode() {
        blocked_lpm(&BLOCK_V6, &Key::new(128, addr))
    } else {
        blocked_v6(addr)
    };
    if blocked {
        Counter::DroppedBlocklist
    } else {
        Counter::Passed
    }
}

/// Takes a token from the bucket of a source prefix; false when it is empty. One bucket per
/// prefix for all CPUs (an LRU hash); SYNs of one source handled on two CPUs at the same
/// instant may both see the same token (a lost update lets at most one extra SYN through per
/// collision), which keeps the hot path free of locks and atomics.
#[inline(always)]
fn take_token<K>(buckets: &LruHashMap<K, TokenBucket>, key: &K, config: &RateConfig) -> bool {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let burst = u64::from(config.syn_burst.max(1)) * 1000;
    match buckets.get_ptr_mut(key) {
        Some(bucket) => {
            // SAFETY: a pointer to the map value, valid for this program run; concurrent
            // writers on other CPUs can only race on the counts (see above), never on memory.
            let b = unsafe { &mut *bucket };
            let elapsed = now.saturating_sub(b.last_ns);
            // tokens * 1000 gained: elapsed_ns * rate / 1e6, capped first to avoid overflow.
            let gained = elapsed.min(10_000_000_000) * u64::from(config.syn_rate) / 1_000_000;
            b.tokens_milli = (b.tokens_milli + gained).min(burst);
            b.last_ns = now;
            if b.tokens_milli >= 1000 {
                b.tokens_milli -= 1000;
                true
            } else {
                false
            }
        }
        None => {
            let fresh = TokenBucket {
                tokens_milli: burst - 1000,
                last_ns: now,
            };
            let _ = buckets.insert(key, &fresh, 0);
            true
        }
    }
}

#[inline(always)]
fn rate_config() -> Option<&'static RateConfig> {
    RATE_CONFIG.get(0).filter(|c| c.syn_rate != 0)
}

#[inline(always)]
fn syn_allowed_v4(addr: [u8; 4]) -> bool {
    let Some(config) = rate_config() else {
        return true;
    };
    let prefix = config.prefix_v4.min(32);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let key = (u32::from_be_bytes(addr) & mask).to_be_bytes();
    take_token(&SYN_BUCKETS_V4, &key, config)
}

#[inline(always)]
fn syn_allowed_v6(addr: [u8; 16]) -> bool {
    let Some(config) = rate_config() else {
        return true;
    };
    let prefix = config.prefix_v6.min(128);
    // Two 64-bit halves: BPF has no 128-bit shifts.
    let mask = |bits: u32| {
        if bits == 0 {
            0
        } else {
            u64::MAX << (64 - bits.min(64))
        }
    };
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]) & mask(prefix.min(64));
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]) & mask(prefix.saturating_sub(64));
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&hi.to_be_bytes());
    key[8..].copy_from_slice(&lo.to_be_bytes());
    take_token(&SYN_BUCKETS_V6, &key, config)
}

/// Decides the fate of one packet and counts it. `then` gets the packets the lists and the
/// SYN limiter let through (XDP: the SYN proxy; TC: nothing) and may decide otherwise.
#[inline(always)]
pub fn decide(
    packet: &Packet,
    ifindex: u32,
    then: impl FnOnce() -> Option<crate::synproxy::Outcome>,
) -> Verdict {
    let base = iface_base(ifindex);
    count(base, Counter::Seen);
    let outcome = match packet.source() {
        Source::V4 { addr, syn } => match classify_v4(addr) {
            Counter::Passed if syn && !syn_allowed_v4(addr) => Counter::DroppedSynRate,
            other => other,
        },
        Source::V6 { addr, syn } => match classify_v6(addr) {
            Counter::Passed if syn && !syn_allowed_v6(addr) => Counter::DroppedSynRate,
            other => other,
        },
        Source::NonIp => Counter::NonIp,
        Source::Malformed => Counter::Malformed,
    };
    if outcome == Counter::DroppedBlocklist || outcome == Counter::DroppedSynRate {
        count(base, outcome);
        return Verdict::Drop;
    }
    if outcome != Counter::Passed {
        count(base, outcome);
    }
    if (outcome == Counter::Passed || outcome == Counter::PassedAllowlist)
        && let Some(answer) = then()
    {
        if let Some(counter) = answer.counter {
            count(base, counter);
        }
        if answer.verdict != Verdict::Pass {
            return answer.verdict;
        }
    }
    count(base, Counter::Passed);
    Verdict::Pass
}
