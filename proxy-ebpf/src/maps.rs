//! Map definitions. Names, types and sizes come from `proxy-common`; userspace pins every map
//! under `/sys/fs/bpf/proxy/<instance>/` when it loads the object.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, ReusePortSockArray},
};
use proxy_common::{
    ALLOW_MAX, AllowEntry, BLOCK_V4_MAX, BLOCK_V6_MAX, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC,
    BlockEntry, COUNTER_SLOTS, IFINDEX_MAX, IfaceName, LensV6, ListenerKey, MAX_IFACES,
    MAX_LISTENERS, MAX_WORKERS, PrefixV4, PrefixV6, RATE_TRACKED, RateConfig, SYN_PROXY_PORT_WORDS,
    SpreadConfig, SynProxyConfig, TokenBucket, V4_LEN_ENTRIES, V4Addr, V6_LEN_ENTRIES, V6Addr,
    WorkerLoad,
};

#[map]
pub static BLOCK_V4: LpmTrie<V4Addr, BlockEntry> =
    LpmTrie::with_max_entries(BLOCK_V4_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static BLOCK_V6: LpmTrie<V6Addr, BlockEntry> =
    LpmTrie::with_max_entries(BLOCK_V6_MAX, BPF_F_NO_PREALLOC);

// The index has room beyond the tries (allocated on use): the tries are the lists and their
// capacity is the one an operator meets ("BLOCK_V6 is full"), never the index's.
#[map]
pub static BLOCK_HASH_V4: HashMap<PrefixV4, BlockEntry> =
    HashMap::with_max_entries(BLOCK_V4_MAX + BLOCK_V4_MAX / 16, BPF_F_NO_PREALLOC);

#[map]
pub static BLOCK_HASH_V6: HashMap<PrefixV6, BlockEntry> =
    HashMap::with_max_entries(BLOCK_V6_MAX + BLOCK_V6_MAX / 16, BPF_F_NO_PREALLOC);

#[map]
pub static BLOCK_LENS_V4: Array<u64> = Array::with_max_entries(V4_LEN_ENTRIES, BPF_F_MMAPABLE);

#[map]
pub static BLOCK_LENS_V6: Array<LensV6> = Array::with_max_entries(V6_LEN_ENTRIES, BPF_F_MMAPABLE);

#[map]
pub static LIST_FLAGS: Array<u32> = Array::with_max_entries(4, 0);

#[map]
pub static ALLOW_V4: LpmTrie<V4Addr, AllowEntry> =
    LpmTrie::with_max_entries(ALLOW_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static ALLOW_V6: LpmTrie<V6Addr, AllowEntry> =
    LpmTrie::with_max_entries(ALLOW_MAX, BPF_F_NO_PREALLOC);

#[map]
pub static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(COUNTER_SLOTS * MAX_IFACES, 0);

#[map]
pub static IFACE_SLOTS: Array<u32> = Array::with_max_entries(IFINDEX_MAX, 0);

#[map]
pub static IFACE_NAMES: Array<IfaceName> = Array::with_max_entries(MAX_IFACES, 0);

#[map]
pub static RATE_CONFIG: Array<RateConfig> = Array::with_max_entries(1, 0);

#[map]
pub static SYN_BUCKETS_V4: LruHashMap<V4Addr, TokenBucket> =
    LruHashMap::with_max_entries(RATE_TRACKED, 0);

#[map]
pub static SYN_BUCKETS_V6: LruHashMap<V6Addr, TokenBucket> =
    LruHashMap::with_max_entries(RATE_TRACKED, 0);

#[map]
pub static WORKER_LOAD: Array<WorkerLoad> = Array::with_max_entries(MAX_WORKERS, BPF_F_MMAPABLE);

#[map]
pub static SPREAD_CONFIG: Array<SpreadConfig> = Array::with_max_entries(1, 0);

#[map]
pub static LISTENER_SLOTS: HashMap<ListenerKey, u32> = HashMap::with_max_entries(MAX_LISTENERS, 0);

#[map]
pub static WORKER_SOCKETS: ReusePortSockArray =
    ReusePortSockArray::with_max_entries(MAX_LISTENERS * MAX_WORKERS, 0);

#[map]
pub static SYN_PROXY_CONFIG: Array<SynProxyConfig> = Array::with_max_entries(1, 0);

#[map]
pub static SYN_PROXY_PORTS: Array<u32> = Array::with_max_entries(SYN_PROXY_PORT_WORDS, 0);

#[map]
pub static SYN_PROXY_LISTENERS: HashMap<ListenerKey, u32> =
    HashMap::with_max_entries(MAX_LISTENERS * 2, 0);

/// Entry 0: `xdp_synproxy`, for the filter's tail call (set by the loader).
#[map]
pub static SYN_PROXY_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);
