//! The one decision both attach points share: allowlist first, then blocklist.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    maps::{LpmTrie, lpm_trie::Key},
};
use proxy_common::{AllowEntry, BlockEntry, Counter};

use crate::{
    maps::{ALLOW_V4, ALLOW_V6, BLOCK_V4, BLOCK_V6, COUNTERS},
    packet::{Packet, Source},
};

/// What to do with a packet; each attach point maps it to its own return code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
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

/// Decides the fate of one packet and counts it.
#[inline(always)]
pub fn decide(packet: &Packet) -> Verdict {
    count(Counter::Seen);
    let outcome = match packet.source() {
        Source::V4(addr) => classify(&ALLOW_V4, &BLOCK_V4, &Key::new(32, addr)),
        Source::V6(addr) => classify(&ALLOW_V6, &BLOCK_V6, &Key::new(128, addr)),
        Source::NonIp => Counter::NonIp,
        Source::Malformed => Counter::Malformed,
    };
    if outcome == Counter::DroppedBlocklist {
        count(Counter::DroppedBlocklist);
        return Verdict::Drop;
    }
    if outcome != Counter::Passed {
        count(outcome);
    }
    count(Counter::Passed);
    Verdict::Pass
}
