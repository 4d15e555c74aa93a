//! Types and constants shared by the kernel programs (`proxy-ebpf`) and the userspace daemon
//! (`proxy`). Everything that crosses the kernel/userspace boundary is defined here, once.
//!
//! Layout rules: every type is `#[repr(C)]`, has no implicit padding, and is `Copy`. The `user`
//! feature adds the `aya::Pod` impls so userspace can use the types as map keys and values.
#![no_std]

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Directory below [`BPFFS`] under which every instance pins its maps:
/// `<BPFFS>/<PIN_SUBDIR>/<instance>/<MAP>`.
pub const PIN_SUBDIR: &str = "proxy";

/// Map names. They are the ELF symbol names of the maps in `proxy-ebpf` and the file names of
/// the pins, so the CLI can open them by name while the daemon runs.
pub mod maps {
    /// `LPM_TRIE` of IPv4 source prefixes to drop: key `Key<V4Addr>`, value [`crate::BlockEntry`].
    pub const BLOCK_V4: &str = "BLOCK_V4";
    /// `LPM_TRIE` of IPv6 source prefixes to drop: key `Key<V6Addr>`, value [`crate::BlockEntry`].
    pub const BLOCK_V6: &str = "BLOCK_V6";
    /// `LPM_TRIE` of IPv4 source prefixes that always pass: value [`crate::AllowEntry`].
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// `LPM_TRIE` of IPv6 source prefixes that always pass: value [`crate::AllowEntry`].
    pub const ALLOW_V6: &str = "ALLOW_V6";
    /// `HASH` of IPv4 prefixes to drop: key [`crate::PrefixV4`] (length, masked address),
    /// value [`crate::BlockEntry`]. The programs look the blocklist up here (one exact match
    /// per populated length, longest first); `BLOCK_V4` holds the same entries for listing.
    pub const BLOCK_HASH_V4: &str = "BLOCK_HASH_V4";
    /// `HASH` of IPv6 prefixes to drop: key [`crate::PrefixV6`], value [`crate::BlockEntry`].
    pub const BLOCK_HASH_V6: &str = "BLOCK_HASH_V6";
    /// `ARRAY` of `u64`: bit `L` of an entry set when an IPv4 prefix of length `L` may hold
    /// the addresses of that entry: [`crate::v4_long`] for /20 to /32, [`crate::v4_mid`] for
    /// /12 to /19, [`crate::v4_low`] for /8 to /11, [`crate::V4_SHORT`] for shorter ones (any
    /// address). A set bit with no prefix costs one lookup, never a verdict.
    pub const BLOCK_LENS_V4: &str = "BLOCK_LENS_V4";
    /// `ARRAY` of [`crate::LensV6`]: the same for IPv6, by [`crate::v6_long`] for lengths
    /// >= 32, [`crate::v6_mid`] for /16 to /31, [`crate::V6_SHORT`] for shorter ones.
    pub const BLOCK_LENS_V6: &str = "BLOCK_LENS_V6";
    /// `ARRAY` of four `u32`: whether the IPv4 / IPv6 allowlist has entries (an empty one
    /// is not walked); entry 2, when not 0, makes the programs look the blocklist up in its
    /// LPM tries instead of the index (a diagnostic switch: `bench lookup` compares both);
    /// entry 3 says the index is built (until then the programs use the tries and walk both
    /// allowlists: maps pinned by a version without the index start empty).
    pub const LIST_FLAGS: &str = "LIST_FLAGS";
    /// `PERCPU_ARRAY` of `u64` packet counters at `slot * COUNTER_SLOTS + Counter`.
    pub const COUNTERS: &str = "COUNTERS";
    /// `ARRAY` of `u32`: interface index -> slot (0: none), set by the daemon at attach.
    pub const IFACE_SLOTS: &str = "IFACE_SLOTS";
    /// `ARRAY` of [`crate::IfaceName`]: slot -> interface name, for `proxy stats`.
    pub const IFACE_NAMES: &str = "IFACE_NAMES";

    /// `ARRAY` (mmapable) of [`crate::WorkerLoad`], one per worker: written by the workers
    /// through shared memory, read by the `sk_reuseport` program and by `proxy stats`.
    pub const WORKER_LOAD: &str = "WORKER_LOAD";
    /// `ARRAY` of one [`crate::RateConfig`], set by the daemon at start.
    pub const RATE_CONFIG: &str = "RATE_CONFIG";
    /// `LRU_HASH` of IPv4 prefix -> [`crate::TokenBucket`].
    pub const SYN_BUCKETS_V4: &str = "SYN_BUCKETS_V4";
    /// `LRU_HASH` of IPv6 prefix -> [`crate::TokenBucket`].
    pub const SYN_BUCKETS_V6: &str = "SYN_BUCKETS_V6";
    /// `ARRAY` of one [`crate::SpreadConfig`]: the spreading policy, set by the daemon.
    pub const SPREAD_CONFIG: &str = "SPREAD_CONFIG";
    /// `HASH` from [`crate::ListenerKey`] to the listener's slot (`u32`).
    pub const LISTENER_SLOTS: &str = "LISTENER_SLOTS";
    /// `REUSEPORT_SOCKARRAY` of worker sockets at `slot * MAX_WORKERS + worker`.
    pub const WORKER_SOCKETS: &str = "WORKER_SOCKETS";
    /// `ARRAY` of one [`crate::SynProxyConfig`]: the XDP SYN proxy's options, set by the
    /// daemon at start (not pinned: a new load starts with it off).
    pub const SYN_PROXY_CONFIG: &str = "SYN_PROXY_CONFIG";
    /// `ARRAY` of [`crate::SYN_PROXY_PORT_WORDS`] `u32`: bit `port % 32` of word `port / 32`
    /// set when a listener on that port has the SYN proxy (the one lookup every TCP packet
    /// pays).
    pub const SYN_PROXY_PORTS: &str = "SYN_PROXY_PORTS";
    /// `HASH` of [`crate::ListenerKey`] -> `u32` (1): the listeners with the SYN proxy; a
    /// wildcard listener has an all-zero address.
    pub const SYN_PROXY_LISTENERS: &str = "SYN_PROXY_LISTENERS";
    /// `PROG_ARRAY`: entry 0 is the `xdp_synproxy` program, which `xdp_filter` tail-calls.
    pub const SYN_PROXY_PROG: &str = "SYN_PROXY_PROG";

    /// Every map that is pinned per instance.
    pub const PINNED: [&str; 14] = [
        BLOCK_V4,
        BLOCK_V6,
        ALLOW_V4,
        ALLOW_V6,
        BLOCK_HASH_V4,
        BLOCK_HASH_V6,
        BLOCK_LENS_V4,
        BLOCK_LENS_V6,
        LIST_FLAGS,
        COUNTERS,
        WORKER_LOAD,
        SPREAD_CONFIG,
        IFACE_SLOTS,
        IFACE_NAMES,
    ];
}

/// Program names (ELF symbol names of the entry points).
pub mod programs {
    /// XDP entry point.
    pub const XDP_FILTER: &str = "xdp_filter";
    /// The XDP SYN proxy, tail-called by [`XDP_FILTER`].
    pub const XDP_SYNPROXY: &str = "xdp_synproxy";
    /// TC ingress classifier entry point (same decision as XDP).
    pub const TC_FILTER: &str = "tc_filter";
    /// `sk_reuseport` program that picks the worker socket for each new connection.
    pub const REUSEPORT_SELECT: &str = "reuseport_select";
}

/// Most workers (threads) one instance runs.
pub const MAX_WORKERS: u32 = 64;
/// Most listeners whose connections are spread by the `sk_reuseport` program.
pub const MAX_LISTENERS: u32 = 32;

/// Load of one worker, as the kernel sees it. Each worker writes only its own entry, through
/// an mmap of the map (no syscall per connection).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Open client connections.
    pub connections: u32,
    /// Requests being forwarded right now.
    pub inflight: u32,
    /// 1 while the worker accepts connections; 0 before it starts and once it stops.
    pub alive: u32,
    /// Connections the `sk_reuseport` program gave the worker that it has not accepted yet:
    /// added to by the program at each pick (a plain read and write: a racing pick or accept
    /// may lose one step), taken from by the worker at each accept, corrected by the daemon
    /// every second (below zero, or stuck above zero: handshakes that never completed). Read
    /// as signed. Without it, a burst of connections sees the same published load and piles
    /// onto one worker.
    pub pending: u32,
}

/// How the `sk_reuseport` program picks a worker for a new connection.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpreadPolicy {
    /// The 4-tuple hash modulo the worker count: the kernel's own behaviour.
    Hash = 0,
    /// The live worker with the fewest connections + in-flight requests.
    LeastLoaded = 1,
    /// Power of two choices: two workers from the hash, the less loaded wins.
    P2c = 2,
}

/// The one entry of `SPREAD_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpreadConfig {
    /// A [`SpreadPolicy`] code.
    pub policy: u32,
    /// Number of workers (at most [`MAX_WORKERS`]).
    pub workers: u32,
}

/// Identifies a listener from its listening socket as the `sk_reuseport` program sees it
/// (`struct bpf_sock`): family, local port (host order), local address (network order; all
/// zero for a wildcard bind; IPv4 in `addr[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub family: u32,
    pub port: u32,
    pub addr: [u32; 4],
}

/// Words of the `SYN_PROXY_PORTS` bitmap (one bit per TCP port).
pub const SYN_PROXY_PORT_WORDS: u32 = 65536 / 32;

/// The one entry of `SYN_PROXY_CONFIG`: what the SYN-ACKs the XDP program sends advertise,
/// as the listening sockets would (the daemon derives them from the interfaces' MTU and the
/// stack's sysctls). `enabled` 0 turns the SYN proxy off whatever the listeners say.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynProxyConfig {
    /// MSS advertised to IPv4 clients.
    pub mss4: u16,
    /// MSS advertised to IPv6 clients.
    pub mss6: u16,
    /// Window scale advertised (0 to 14), when the client offers window scaling.
    pub wscale: u8,
    /// TTL of the IPv4 SYN-ACKs.
    pub ttl: u8,
    /// 1: on.
    pub enabled: u8,
    /// Hop limit of the IPv6 SYN-ACKs.
    pub hop_limit: u8,
}

/// Capacity of the IPv4 blocklist (prefixes). LPM tries allocate on demand, so a large bound
/// costs nothing until used.
pub const BLOCK_V4_MAX: u32 = 1 << 20;
/// Capacity of the IPv6 blocklist (prefixes).
pub const BLOCK_V6_MAX: u32 = 1 << 18;
/// Capacity of each allowlist (prefixes).
pub const ALLOW_MAX: u32 = 1 << 16;

/// `BPF_F_NO_PREALLOC`: required for `LPM_TRIE` maps.
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// `BPF_F_MMAPABLE`: an `ARRAY` userspace can mmap.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Address part of an IPv4 LPM key, in network byte order. The map key is
/// `lpm_trie::Key<V4Addr>` (aya's on both sides: `u32` prefix length, then the address).
pub type V4Addr = [u8; 4];
/// Address part of an IPv6 LPM key, in network byte order.
pub type V6Addr = [u8; 16];

/// Key of [`maps::BLOCK_HASH_V4`]: a prefix length and the address with the bits past it
/// cleared (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixV4 {
    pub len: u32,
    pub addr: V4Addr,
}

/// Key of [`maps::BLOCK_HASH_V6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixV6 {
    pub len: u32,
    pub addr: V6Addr,
}

/// Populated IPv6 prefix lengths: bit `L % 64` of word `L / 64` (lengths 0 to 128).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LensV6 {
    pub bits: [u64; 3],
}

// The `BLOCK_LENS_*` arrays: per bucket of the address space, the prefix lengths that may
// hold an address. Three tiers per family: long prefixes by their leading bits (many
// buckets, few prefixes each), middle ones by fewer leading bits, and the shortest in one
// entry. A packet reads one entry of each tier.

/// IPv4 prefixes of at least this length are counted by their top 20 bits.
pub const V4_LONG_BITS: u32 = 20;
/// IPv4 prefixes from this length (to /19) are counted by their top 12 bits.
pub const V4_MID_BITS: u32 = 12;
/// IPv4 prefixes from this length (to /11) are counted by their first byte; shorter ones in
/// [`V4_SHORT`].
pub const V4_LOW_BITS: u32 = 8;
/// First middle entry of `BLOCK_LENS_V4` (entries before it: the long buckets).
pub const V4_MID: u32 = 1 << V4_LONG_BITS;
/// First low entry of `BLOCK_LENS_V4`.
pub const V4_LOW: u32 = V4_MID + (1 << V4_MID_BITS);
/// The `BLOCK_LENS_V4` entry of the shortest prefixes.
pub const V4_SHORT: u32 = V4_LOW + (1 << V4_LOW_BITS);
/// Entries of `BLOCK_LENS_V4`.
pub const V4_LEN_ENTRIES: u32 = V4_SHORT + 1;

/// IPv6 prefixes of at least this length are counted by their top 32 bits, hashed to
/// [`V6_LONG_BUCKETS`] buckets.
pub const V6_LONG_BITS: u32 = 32;
/// Long-prefix buckets of `BLOCK_LENS_V6`.
pub const V6_LONG_BUCKETS: u32 = 1 << 18;
/// IPv6 prefixes from this length (to /31) are counted by their top 16 bits, hashed to 4096
/// buckets; shorter ones in [`V6_SHORT`].
pub const V6_MID_BITS: u32 = 16;
/// First middle entry of `BLOCK_LENS_V6`.
pub const V6_MID: u32 = V6_LONG_BUCKETS;
/// The `BLOCK_LENS_V6` entry of the shortest prefixes.
pub const V6_SHORT: u32 = V6_MID + (1 << 12);
/// Entries of `BLOCK_LENS_V6`.
pub const V6_LEN_ENTRIES: u32 = V6_SHORT + 1;

/// The `BLOCK_LENS_V4` long bucket of an address.
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called from the XDP/TC programs, where it must be inlined into the caller"
)]
#[must_use]
pub fn v4_long(addr: V4Addr) -> u32 {
    u32::from_be_bytes(addr) >> (32 - V4_LONG_BITS)
}

/// The `BLOCK_LENS_V4` middle entry of an address.
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called from the XDP/TC programs, where it must be inlined into the caller"
)]
#[must_use]
pub fn v4_mid(addr: V4Addr) -> u32 {
    V4_MID + (u32::from_be_bytes(addr) >> (32 - V4_MID_BITS))
}

/// The `BLOCK_LENS_V4` low entry of an address (its first byte).
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called from the XDP/TC programs, where it must be inlined into the caller"
)]
#[must_use]
pub fn v4_low(addr: V4Addr) -> u32 {
    V4_LOW + u32::from(addr[0])
}

/// The `BLOCK_LENS_V6` long bucket of an address (its top 32 bits, multiplicatively hashed:
/// allocated space shares its leading bits).
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called from the XDP/TC programs, where it must be inlined into the caller"
)]
#[must_use]
pub fn v6_long(addr: &V6Addr) -> u32 {
    let top = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
    top.wrapping_mul(0x9e37_79b1) >> (32 - 18)
}

/// The `BLOCK_LENS_V6` middle entry of an address.
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called from the XDP/TC programs, where it must be inlined into the caller"
)]
#[must_use]
pub fn v6_mid(addr: &V6Addr) -> u32 {
    let top = (u32::from(addr[0]) << 8) | u32::from(addr[1]);
    V6_MID + (top.wrapping_mul(0x9e37_79b1) >> (32 - 12))
}

/// Value of a blocklist entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    /// `CLOCK_MONOTONIC` time in ns (`bpf_ktime_get_ns`) after which the entry counts as absent;
    /// 0 = never expires.
    pub expires_at_ns: u64,
    /// Why the entry exists: a [`Reason`] code.
    pub reason: u32,
    /// Reserved, must be 0.
    pub flags: u32,
}

impl BlockEntry {
    /// Whether the entry is still in force at monotonic time `now_ns`.
    #[inline(always)]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP/TC programs, where it must be inlined into the caller"
    )]
    #[must_use]
    pub fn is_active(&self, now_ns: u64) -> bool {
        self.expires_at_ns == 0 || now_ns < self.expires_at_ns
    }
}

/// Value of an allowlist entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AllowEntry {
    /// Reserved, must be 0.
    pub flags: u32,
}

/// Reason codes stored in [`BlockEntry::reason`]. The free text an operator gives is kept in
/// the userspace state file; the kernel only needs the class.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No reason recorded.
    Unspecified = 0,
    /// Added by an operator (`proxy blocklist add`).
    Manual = 1,
    /// Loaded from a list file (`proxy blocklist import`).
    Import = 2,
    /// Added automatically by the layer-7 defenses.
    L7Abuse = 3,
}

impl Reason {
    /// The code's name as shown by the CLI.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Manual => "manual",
            Self::Import => "import",
            Self::L7Abuse => "l7-abuse",
        }
    }

    /// Decodes a code read from a map; unknown codes read as `Unspecified`.
    #[must_use]
    pub const fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Manual,
            2 => Self::Import,
            3 => Self::L7Abuse,
            _ => Self::Unspecified,
        }
    }
}

/// Indexes of the per-CPU packet counters in the `COUNTERS` map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the program ran on.
    Seen = 0,
    /// Packets passed on to the stack (includes the three kinds below).
    Passed = 1,
    /// Packets dropped because the source matched an active blocklist entry.
    DroppedBlocklist = 2,
    /// Packets passed because the source matched the allowlist.
    PassedAllowlist = 3,
    /// Truncated or malformed IP packets (passed, never dropped on a guess).
    Malformed = 4,
    /// Packets that are not IPv4/IPv6 (ARP, LLDP, ...): passed.
    NonIp = 5,
    /// TCP SYNs dropped because their source prefix exceeded `syn_rate`.
    DroppedSynRate = 6,
    /// SYNs to a SYN-proxied listener answered in XDP with a SYN cookie (`XDP_TX`); the SYN
    /// never reaches the stack.
    SynCookiesSent = 7,
    /// ACKs (handshake completions) whose cookie the XDP program validated: passed on to the
    /// stack, where nftables' synproxy opens the connection to the listener.
    SynCookieAcksValid = 8,
    /// Packets to a SYN-proxied listener that belong to no connection and carry no valid
    /// cookie (forged or stale ACKs, stray RSTs): dropped.
    SynCookieAcksInvalid = 9,
    /// SYNs to a SYN-proxied listener that the XDP program left to the stack's own
    /// (nftables) SYN proxy: payload, an IPv4 header checksum that does not verify, a
    /// broadcast/multicast MAC, a martian source, a tuple the stack already has, or no room to
    /// build the answer. (Frames it does not parse, VLAN tags, IPv4 options, IPv6 extension
    /// headers, fragments, go there too and count as passed.)
    SynProxyToStack = 10,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Seen,
        Counter::Passed,
        Counter::DroppedBlocklist,
        Counter::PassedAllowlist,
        Counter::Malformed,
        Counter::NonIp,
        Counter::DroppedSynRate,
        Counter::SynCookiesSent,
        Counter::SynCookieAcksValid,
        Counter::SynCookieAcksInvalid,
        Counter::SynProxyToStack,
    ];

    /// Stable snake-case name, used by `proxy stats` and metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Seen => "packets_seen",
            Self::Passed => "packets_passed",
            Self::DroppedBlocklist => "packets_dropped_blocklist",
            Self::PassedAllowlist => "packets_passed_allowlist",
            Self::Malformed => "packets_malformed",
            Self::NonIp => "packets_non_ip",
            Self::DroppedSynRate => "packets_dropped_syn_rate",
            Self::SynCookiesSent => "syn_cookies_sent",
            Self::SynCookieAcksValid => "syn_cookie_acks_valid",
            Self::SynCookieAcksInvalid => "syn_cookie_acks_invalid",
            Self::SynProxyToStack => "syn_proxy_passed_to_stack",
        }
    }
}

/// Number of counters in use.
pub const COUNTER_COUNT: u32 = 11;
/// Counters per interface slot: room for counters added later without changing the pinned map.
pub const COUNTER_SLOTS: u32 = 32;
/// Interface slots: `COUNTERS[slot * COUNTER_SLOTS + counter]`; slot 0 counts packets of
/// interfaces without a slot of their own.
pub const MAX_IFACES: u32 = 16;
/// Interface indexes below this get a slot lookup in `IFACE_SLOTS` (an array).
pub const IFINDEX_MAX: u32 = 4096;
/// An interface name in `IFACE_NAMES` (NUL-padded, like `IFNAMSIZ`).
pub type IfaceName = [u8; 16];

/// The one entry of `RATE_CONFIG`: the in-kernel SYN rate limit (0 = off).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateConfig {
    /// SYNs per second per source prefix.
    pub syn_rate: u32,
    /// Bucket depth.
    pub syn_burst: u32,
    pub prefix_v4: u32,
    pub prefix_v6: u32,
}

/// A token bucket in the kernel: tokens in thousandths, refilled from `last_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    pub tokens_milli: u64,
    pub last_ns: u64,
}

/// Sources tracked by the SYN limiter (LRU: the least recent are forgotten).
pub const RATE_TRACKED: u32 = 65536;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] plain data (u64 + u32 + u32), no padding, every bit pattern valid,
    // which is what aya::Pod requires.
    unsafe impl aya::Pod for super::BlockEntry {}
    // SAFETY: as above (one u32).
    unsafe impl aya::Pod for super::AllowEntry {}
    // SAFETY: as above (four u32).
    unsafe impl aya::Pod for super::WorkerLoad {}
    // SAFETY: as above (two u32).
    unsafe impl aya::Pod for super::SpreadConfig {}
    // SAFETY: as above (four u32).
    unsafe impl aya::Pod for super::RateConfig {}
    // SAFETY: as above (two u64).
    unsafe impl aya::Pod for super::TokenBucket {}
    // SAFETY: as above (six u32).
    unsafe impl aya::Pod for super::ListenerKey {}
    // SAFETY: repr(C), integers and byte arrays only, no padding (4 + 4 and 4 + 16 bytes).
    unsafe impl aya::Pod for super::PrefixV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PrefixV6 {}
    // SAFETY: repr(C), three u64.
    unsafe impl aya::Pod for super::LensV6 {}
    // SAFETY: repr(C), two u16 and four u8: 8 bytes, no padding.
    unsafe impl aya::Pod for super::SynProxyConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<BlockEntry>(), 16);
        assert_eq!(core::mem::size_of::<AllowEntry>(), 4);
        assert_eq!(core::mem::size_of::<SynProxyConfig>(), 8);
    }

    #[test]
    fn expiry() {
        let never = BlockEntry {
            expires_at_ns: 0,
            reason: 1,
            flags: 0,
        };
        assert!(never.is_active(u64::MAX));
        let e = BlockEntry {
            expires_at_ns: 100,
            reason: 1,
            flags: 0,
        };
        assert!(e.is_active(99));
        assert!(!e.is_active(100));
    }

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert_eq!(Reason::from_code(Reason::Import as u32), Reason::Import);
        assert_eq!(Reason::from_code(99), Reason::Unspecified);
    }
}
