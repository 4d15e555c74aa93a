//! Map definitions. Names, types and sizes come from `proxy-common`; userspace pins every map
//! under `/sys/fs/bpf/proxy/<instance>/` when it loads the object.
use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, PerCpuArray},
};
use proxy_common::{
    ALLOW_MAX, AllowEntry, BLOCK_V4_MAX, BLOCK_V6_MAX, BPF_F_NO_PREALLOC, BlockEntry,
    COUNTER_COUNT, V4Addr, V6Addr,
};

#[map]
pub static BLOCK_V4: LpmTrie<V4Addr, BlockEntry> =
    LpmTrie::with_max_entries(BLOCK_V4_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static BLOCK_V6: LpmTrie<V6Addr, BlockEntry> =
    LpmTrie::with_max_entries(BLOCK_V6_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static ALLOW_V4: LpmTrie<V4Addr, AllowEntry> =
    LpmTrie::with_max_entries(ALLOW_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static ALLOW_V6: LpmTrie<V6Addr, AllowEntry> =
    LpmTrie::with_max_entries(ALLOW_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);
