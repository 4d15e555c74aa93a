//! The one decision both attach points share: allowlist first, then blocklist.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    maps::{LpmTrie, LruHashMap, lpm_trie::Key},
};
use proxy_common::{
    AllowEntry, BlockEntry, COUNTER_SLOTS, Counter, IFINDEX_MAX, MAX_IFACES, RateConfig,
    TokenBucket,
};

use crate::{
    maps::{
        ALLOW_V4, ALLOW_V6, BLOCK_V4, BLOCK_V6, COUNTERS, IFACE_SLOTS, RATE_CONFIG, SYN_BUCKETS_V4,
        SYN_BUCKETS_V6,
    },
    packet::{Packet, Source},
};

/// What to do with a packet; each attach point maps it to its own return code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

#[inline(always)]
fn count(base: u32, counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(base + counter as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; nothing else writes it
        // while this program runs on this CPU (programs are not preempted mid-run by themselves).
        unsafe { *value += 1 };
    }
}

/// Allowlist first, then an active blocklist entry: the same rule for both address families.
#[inline(always)]
fn classify<K>(
    allow: &LpmTrie<K, AllowEntry>,
    block: &LpmTrie<K, BlockEntry>,
    key: &Key<K>,
) -> Counter {
    if allow.get(key).is_some() {
        return Counter::PassedAllowlist;
    }
    match block.get(key) {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        Some(entry) if entry.is_active(unsafe { bpf_ktime_get_ns() }) => Counter::DroppedBlocklist,
        _ => Counter::Passed,
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

/// Decides the fate of one packet and counts it.
#[inline(always)]
pub fn decide(packet: &Packet, ifindex: u32) -> Verdict {
    // The interface's block of counters (slot 0 when it has none).
    let slot = if ifindex < IFINDEX_MAX {
        IFACE_SLOTS.get(ifindex).copied().unwrap_or(0)
    } else {
        0
    };
    let base = slot.min(MAX_IFACES - 1) * COUNTER_SLOTS;
    count(base, Counter::Seen);
    let outcome = match packet.source() {
        Source::V4 { addr, syn } => match classify(&ALLOW_V4, &BLOCK_V4, &Key::new(32, addr)) {
            Counter::Passed if syn && !syn_allowed_v4(addr) => Counter::DroppedSynRate,
            other => other,
        },
        Source::V6 { addr, syn } => match classify(&ALLOW_V6, &BLOCK_V6, &Key::new(128, addr)) {
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
    count(base, Counter::Passed);
    Verdict::Pass
}
