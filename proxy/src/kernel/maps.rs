//! Typed access to an instance's pinned maps. The daemon and the CLI both go through here.
use std::{net::IpAddr, path::Path};

use aya::maps::{
    Array, HashMap, Map, MapData, MapError, PerCpuArray, lpm_trie::Key, lpm_trie::LpmTrie,
};
use proxy_common::{
    AllowEntry, BlockEntry, COUNTER_COUNT, COUNTER_SLOTS, Counter, IfaceName, LensV6, MAX_IFACES,
    PrefixV4, PrefixV6, V4_LEN_ENTRIES, V4_LONG_BITS, V4_LOW_BITS, V4_MID_BITS, V4_SHORT, V4Addr,
    V6_LEN_ENTRIES, V6_LONG_BITS, V6_MID_BITS, V6_SHORT, V6Addr, maps, v4_long, v4_low, v4_mid,
    v6_long, v6_mid,
};

use super::KernelError;
use crate::cidr::Cidr;

/// The maps of one instance, opened from their pins.
pub struct KernelMaps {
    block_v4: LpmTrie<MapData, V4Addr, BlockEntry>,
    block_v6: LpmTrie<MapData, V6Addr, BlockEntry>,
    allow_v4: LpmTrie<MapData, V4Addr, AllowEntry>,
    allow_v6: LpmTrie<MapData, V6Addr, AllowEntry>,
    /// The programs' blocklist index (see `proxy_common::maps::BLOCK_HASH_V4`): the tries
    /// above are the list, these are how the programs look it up.
    hash_v4: HashMap<MapData, PrefixV4, BlockEntry>,
    hash_v6: HashMap<MapData, PrefixV6, BlockEntry>,
    /// The length masks, mapped into this process (`BPF_F_MMAPABLE`): a ban sets a bit with
    /// one atomic OR, a rebuild compares a million entries in memory, not by syscalls.
    lens_v4: Words,
    lens_v6: Words,
    list_flags: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    iface_names: aya::maps::Array<MapData, IfaceName>,
}

/// A prefix as the IPv4 index keys it, and its length-mask entry.
fn index_v4(cidr: &Cidr) -> (PrefixV4, u32) {
    let len = u32::from(cidr.prefix_len()).min(32);
    let IpAddr::V4(a) = cidr.addr() else {
        unreachable!("caller checked the family")
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let addr = (u32::from(a) & mask).to_be_bytes();
    let bucket = if len >= V4_LONG_BITS {
        v4_long(addr)
    } else if len >= V4_MID_BITS {
        v4_mid(addr)
    } else if len >= V4_LOW_BITS {
        v4_low(addr)
    } else {
        V4_SHORT
    };
    (PrefixV4 { len, addr }, bucket)
}

/// A prefix as the IPv6 index keys it, and its length-mask entry.
fn index_v6(cidr: &Cidr) -> (PrefixV6, u32) {
    let len = u32::from(cidr.prefix_len()).min(128);
    let IpAddr::V6(a) = cidr.addr() else {
        unreachable!("caller checked the family")
    };
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    let addr = (u128::from(a) & mask).to_be_bytes();
    let bucket = if len >= V6_LONG_BITS {
        v6_long(&addr)
    } else if len >= V6_MID_BITS {
        v6_mid(&addr)
    } else {
        V6_SHORT
    };
    (PrefixV6 { len, addr }, bucket)
}

/// An mmapable array map of `u64` words (values of 8 or 24 bytes: whole words, stored
/// contiguously), mapped shared into this process when first used. A rebuild touches every
/// page; it drops the mapping afterwards so that the pages do not stay in this process's
/// resident memory (the map keeps the data).
struct Words {
    path: std::path::PathBuf,
    name: &'static str,
    len: usize,
    /// Opened with the rest of the maps (as root: the pins are 0700), mapped when needed,
    /// also after the daemon dropped its privileges.
    map: MapData,
    mapping: Option<Mapping>,
}

struct Mapping {
    base: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    bytes: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics; the pointer stays valid
// until Drop unmaps it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `Words::mapping`; no reference outlives
        // `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

impl Words {
    fn open(pin_dir: &Path, name: &'static str, len: usize) -> Result<Self, KernelError> {
        let path = pin_dir.join(name);
        let map = MapData::from_pin(&path).map_err(|source| KernelError::OpenMap {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            name,
            len,
            map,
            mapping: None,
        })
    }

    fn mapping(&mut self) -> Result<&Mapping, KernelError> {
        if self.mapping.is_none() {
            let bytes = self.len * 8;
            let base = super::mmap_map(&self.map, bytes, &self.path)?.cast();
            self.mapping = Some(Mapping { base, bytes });
        }
        self.mapping.as_ref().ok_or(KernelError::Mmap {
            path: self.path.clone(),
            source: std::io::Error::other(self.name),
        })
    }

    fn word(&mut self, i: usize) -> Result<&std::sync::atomic::AtomicU64, KernelError> {
        let len = self.len;
        assert!(i < len, "word {i} outside the map ({len} words)");
        let m = self.mapping()?;
        // SAFETY: `i` is inside the mapping, which holds `len` aligned u64 (page-aligned
        // base); the kernel's programs only load them.
        Ok(unsafe { &*m.base.as_ptr().add(i) })
    }

    fn get(&mut self, i: usize) -> Result<u64, KernelError> {
        Ok(self.word(i)?.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn or(&mut self, i: usize, bits: u64) -> Result<(), KernelError> {
        self.word(i)?
            .fetch_or(bits, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn set(&mut self, i: usize, value: u64) -> Result<(), KernelError> {
        self.word(i)?
            .store(value, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Drops the mapping (the next use maps the map again).
    fn release(&mut self) {
        self.mapping = None;
    }
}

fn map_err(op: &'static str, map: &'static str) -> impl Fn(MapError) -> KernelError {
    move |source| KernelError::Map { op, map, source }
}

/// Kernel packet counters, summed over CPUs, indexed by [`Counter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; COUNTER_COUNT as usize]);

impl Counters {
    #[must_use]
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }
}

fn open<T: TryFrom<Map, Error = MapError>>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<T, KernelError> {
    let path = pin_dir.join(name);
    let err = |source| KernelError::OpenMap {
        path: path.clone(),
        source,
    };
    let data = MapData::from_pin(&path).map_err(err)?;
    let map = Map::from_map_data(data).map_err(err)?;
    T::try_from(map).map_err(err)
}

fn v4(cidr: &Cidr) -> Key<V4Addr> {
    match cidr.addr() {
        IpAddr::V4(a) => Key::new(u32::from(cidr.prefix_len()), a.octets()),
        IpAddr::V6(_) => unreachable!("caller checked the family"),
    }
}

fn v6(cidr: &Cidr) -> Key<V6Addr> {
    match cidr.addr() {
        IpAddr::V6(a) => Key::new(u32::from(cidr.prefix_len()), a.octets()),
        IpAddr::V4(_) => unreachable!("caller checked the family"),
    }
}

fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Removes a key; `Ok(false)` when it was not there.
fn remove_key<K: aya::Pod, V: aya::Pod>(
    map: &mut LpmTrie<MapData, K, V>,
    key: &Key<K>,
    name: &'static str,
) -> Result<bool, KernelError> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(source) => Err(KernelError::Map {
            op: "remove",
            map: name,
            source,
        }),
    }
}

fn collect<K: aya::Pod, V: aya::Pod>(
    map: &LpmTrie<MapData, K, V>,
    name: &'static str,
    to_addr: impl Fn(K) -> IpAddr,
) -> Result<Vec<(Cidr, V)>, KernelError> {
    let mut out = Vec::new();
    for item in map {
        let (key, value) = item.map_err(|source| KernelError::Map {
            op: "iterate",
            map: name,
            source,
        })?;
        let len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
        out.push((Cidr::new_truncating(to_addr(key.data()), len), value));
    }
    Ok(out)
}

/// Looks up `key`; `None` when no prefix matches.
fn lookup<K: aya::Pod, V: aya::Pod>(
    map: &LpmTrie<MapData, K, V>,
    key: &Key<K>,
    name: &'static str,
) -> Result<Option<V>, KernelError> {
    match map.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(source) => Err(KernelError::Map {
            op: "lookup",
            map: name,
            source,
        }),
    }
}

impl KernelMaps {
    /// Opens the maps pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, KernelError> {
        Ok(Self {
            block_v4: open(pin_dir, maps::BLOCK_V4)?,
            block_v6: open(pin_dir, maps::BLOCK_V6)?,
            allow_v4: open(pin_dir, maps::ALLOW_V4)?,
            allow_v6: open(pin_dir, maps::ALLOW_V6)?,
            hash_v4: open(pin_dir, maps::BLOCK_HASH_V4)?,
            hash_v6: open(pin_dir, maps::BLOCK_HASH_V6)?,
            lens_v4: Words::open(pin_dir, maps::BLOCK_LENS_V4, V4_LEN_ENTRIES as usize)?,
            lens_v6: Words::open(pin_dir, maps::BLOCK_LENS_V6, V6_LEN_ENTRIES as usize * 3)?,
            list_flags: open(pin_dir, maps::LIST_FLAGS)?,
            counters: open(pin_dir, maps::COUNTERS)?,
            iface_names: open(pin_dir, maps::IFACE_NAMES)?,
        })
    }

    /// Inserts or replaces a blocklist entry: in the programs' index (the hash entry, then
    /// its length bit), then in the list; if the list refuses it, the hash entry goes again
    /// (a bit without entries costs a probe, never a verdict).
    pub fn block(&mut self, cidr: &Cidr, entry: BlockEntry) -> Result<(), KernelError> {
        if cidr.is_ipv4() {
            let (key, bucket) = index_v4(cidr);
            self.hash_v4
                .insert(key, entry, 0)
                .map_err(map_err("insert", maps::BLOCK_HASH_V4))?;
            self.lens_v4.or(bucket as usize, 1u64 << key.len)?;
            // The list last: an entry it shows is one the programs enforce.
            if let Err(e) = self.block_v4.insert(&v4(cidr), entry, 0) {
                let _ = self.hash_v4.remove(&key);
                return Err(map_err("insert", maps::BLOCK_V4)(e));
            }
        } else {
            let (key, bucket) = index_v6(cidr);
            self.hash_v6
                .insert(key, entry, 0)
                .map_err(map_err("insert", maps::BLOCK_HASH_V6))?;
            self.lens_v6.or(
                bucket as usize * 3 + (key.len / 64) as usize,
                1u64 << (key.len % 64),
            )?;
            if let Err(e) = self.block_v6.insert(&v6(cidr), entry, 0) {
                let _ = self.hash_v6.remove(&key);
                return Err(map_err("insert", maps::BLOCK_V6)(e));
            }
        }
        Ok(())
    }

    /// Removes a blocklist entry; `Ok(false)` when there was none. Its length bit stays
    /// until [`KernelMaps::rebuild_index`] (a bit without entries costs a lookup, nothing
    /// else).
    pub fn unblock(&mut self, cidr: &Cidr) -> Result<bool, KernelError> {
        if cidr.is_ipv4() {
            match self.hash_v4.remove(&index_v4(cidr).0) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err("remove", maps::BLOCK_HASH_V4)(e)),
            }
            remove_key(&mut self.block_v4, &v4(cidr), maps::BLOCK_V4)
        } else {
            match self.hash_v6.remove(&index_v6(cidr).0) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err("remove", maps::BLOCK_HASH_V6)(e)),
            }
            remove_key(&mut self.block_v6, &v6(cidr), maps::BLOCK_V6)
        }
    }

    /// Makes the programs' index match the lists exactly: every listed prefix in the hash
    /// maps, nothing else, the length masks recomputed, the allowlist flags set. Additions
    /// come first and removals last, so no listed prefix is ever invisible meanwhile.
    pub fn rebuild_index(&mut self) -> Result<(), KernelError> {
        let blocked = self.blocked()?;
        let have_v4: std::collections::HashSet<PrefixV4> =
            self.hash_v4.keys().filter_map(Result::ok).collect();
        let have_v6: std::collections::HashSet<PrefixV6> =
            self.hash_v6.keys().filter_map(Result::ok).collect();
        let mut want_v4: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        let mut want_v6: std::collections::HashMap<u32, LensV6> = std::collections::HashMap::new();
        let mut keep_v4 = std::collections::HashSet::new();
        let mut keep_v6 = std::collections::HashSet::new();
        for (cidr, entry) in &blocked {
            if cidr.is_ipv4() {
                let (key, bucket) = index_v4(cidr);
                if !have_v4.contains(&key) {
                    self.block(cidr, *entry)?;
                }
                *want_v4.entry(bucket).or_default() |= 1u64 << key.len;
                keep_v4.insert(key);
            } else {
                let (key, bucket) = index_v6(cidr);
                if !have_v6.contains(&key) {
                    self.block(cidr, *entry)?;
                }
                want_v6.entry(bucket).or_default().bits[(key.len / 64) as usize] |=
                    1u64 << (key.len % 64);
                keep_v6.insert(key);
            }
        }
        let stale_v4: Vec<PrefixV4> = have_v4.difference(&keep_v4).copied().collect();
        for k in stale_v4 {
            let _ = self.hash_v4.remove(&k);
        }
        let stale_v6: Vec<PrefixV6> = have_v6.difference(&keep_v6).copied().collect();
        for k in stale_v6 {
            let _ = self.hash_v6.remove(&k);
        }
        for bucket in 0..V4_LEN_ENTRIES {
            let want = want_v4.get(&bucket).copied().unwrap_or(0);
            if self.lens_v4.get(bucket as usize)? != want {
                self.lens_v4.set(bucket as usize, want)?;
            }
        }
        for bucket in 0..V6_LEN_ENTRIES {
            let want = want_v6.get(&bucket).copied().unwrap_or_default();
            for (w, bits) in want.bits.into_iter().enumerate() {
                let i = bucket as usize * 3 + w;
                if self.lens_v6.get(i)? != bits {
                    self.lens_v6.set(i, bits)?;
                }
            }
        }
        self.lens_v4.release();
        self.lens_v6.release();
        self.set_allow_flags()?;
        // From now on the programs trust the index (until then they use the tries and walk
        // the allowlist whatever its flag says: maps pinned by a version without the index
        // start empty).
        self.list_flags
            .set(3, 1, 0)
            .map_err(map_err("update", maps::LIST_FLAGS))
    }

    /// Makes the programs look the blocklist up in its LPM tries (`true`) or in the index
    /// (`false`, the default): a diagnostic switch for comparing the two.
    pub fn set_lpm_lookup(&mut self, on: bool) -> Result<(), KernelError> {
        self.list_flags
            .set(2, u32::from(on), 0)
            .map_err(map_err("update", maps::LIST_FLAGS))
    }

    /// Tells the programs whether each allowlist has entries.
    fn set_allow_flags(&mut self) -> Result<(), KernelError> {
        let v4 = u32::from(self.allow_v4.keys().next().is_some());
        let v6 = u32::from(self.allow_v6.keys().next().is_some());
        for (i, v) in [(0u32, v4), (1, v6)] {
            self.list_flags
                .set(i, v, 0)
                .map_err(map_err("update", maps::LIST_FLAGS))?;
        }
        Ok(())
    }

    /// Every blocklist entry in the kernel, v4 then v6.
    pub fn blocked(&self) -> Result<Vec<(Cidr, BlockEntry)>, KernelError> {
        let mut all = collect(&self.block_v4, maps::BLOCK_V4, IpAddr::from)?;
        all.extend(collect(&self.block_v6, maps::BLOCK_V6, |a| {
            IpAddr::from(a)
        })?);
        Ok(all)
    }

    /// Inserts an allowlist entry.
    pub fn allow(&mut self, cidr: &Cidr) -> Result<(), KernelError> {
        let entry = AllowEntry::default();
        let result = if cidr.is_ipv4() {
            self.allow_v4
                .insert(&v4(cidr), entry, 0)
                .map_err(|s| (maps::ALLOW_V4, s))
        } else {
            self.allow_v6
                .insert(&v6(cidr), entry, 0)
                .map_err(|s| (maps::ALLOW_V6, s))
        };
        result.map_err(|(map, source)| KernelError::Map {
            op: "insert",
            map,
            source,
        })?;
        // Flag after the entry: the programs start walking a list that has it.
        let i = u32::from(!cidr.is_ipv4());
        self.list_flags
            .set(i, 1, 0)
            .map_err(map_err("update", maps::LIST_FLAGS))
    }

    /// Removes an allowlist entry; `Ok(false)` when there was none.
    pub fn disallow(&mut self, cidr: &Cidr) -> Result<bool, KernelError> {
        let removed = if cidr.is_ipv4() {
            remove_key(&mut self.allow_v4, &v4(cidr), maps::ALLOW_V4)?
        } else {
            remove_key(&mut self.allow_v6, &v6(cidr), maps::ALLOW_V6)?
        };
        self.set_allow_flags()?;
        Ok(removed)
    }

    /// Every allowlist entry in the kernel.
    pub fn allowed(&self) -> Result<Vec<Cidr>, KernelError> {
        let mut all: Vec<Cidr> = collect(&self.allow_v4, maps::ALLOW_V4, IpAddr::from)?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        all.extend(
            collect(&self.allow_v6, maps::ALLOW_V6, IpAddr::from)?
                .into_iter()
                .map(|(c, _)| c),
        );
        Ok(all)
    }

    /// The kernel's decision for a source address, for enforcement in userspace (attach mode
    /// `none`): allowlist first, then an active blocklist entry.
    pub fn is_denied(&self, ip: IpAddr, now_ns: u64) -> Result<bool, KernelError> {
        let entry = match ip {
            IpAddr::V4(a) => {
                let key = Key::new(32, a.octets());
                if lookup(&self.allow_v4, &key, maps::ALLOW_V4)?.is_some() {
                    return Ok(false);
                }
                lookup(&self.block_v4, &key, maps::BLOCK_V4)?
            }
            IpAddr::V6(a) => {
                let key = Key::new(128, a.octets());
                if lookup(&self.allow_v6, &key, maps::ALLOW_V6)?.is_some() {
                    return Ok(false);
                }
                lookup(&self.block_v6, &key, maps::BLOCK_V6)?
            }
        };
        Ok(entry.is_some_and(|e| e.is_active(now_ns)))
    }

    /// Whether `ip` is in the allowlist (such clients are never banned).
    pub fn is_allowed(&self, ip: IpAddr) -> Result<bool, KernelError> {
        Ok(match ip {
            IpAddr::V4(a) => {
                lookup(&self.allow_v4, &Key::new(32, a.octets()), maps::ALLOW_V4)?.is_some()
            }
            IpAddr::V6(a) => {
                lookup(&self.allow_v6, &Key::new(128, a.octets()), maps::ALLOW_V6)?.is_some()
            }
        })
    }

    /// The packet counters of one interface slot, summed over CPUs.
    fn slot_counters(&self, slot: u32) -> Result<Counters, KernelError> {
        let mut out = Counters::default();
        for counter in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&(slot * COUNTER_SLOTS + counter as u32), 0)
                .map_err(|source| KernelError::Map {
                    op: "read",
                    map: maps::COUNTERS,
                    source,
                })?;
            out.0[counter as usize] = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// The packet counters of every interface, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, KernelError> {
        let mut total = Counters::default();
        for slot in 0..MAX_IFACES {
            let c = self.slot_counters(slot)?;
            for (t, v) in total.0.iter_mut().zip(c.0) {
                *t += v;
            }
        }
        Ok(total)
    }

    /// The packet counters per interface (slot 0, packets of interfaces without a slot of
    /// their own, is named `other` and only listed when it counted something).
    pub fn counters_by_interface(&self) -> Result<Vec<(String, Counters)>, KernelError> {
        let mut out = Vec::new();
        for slot in 0..MAX_IFACES {
            let name = self
                .iface_names
                .get(&slot, 0)
                .map_err(|source| KernelError::Map {
                    op: "read",
                    map: maps::IFACE_NAMES,
                    source,
                })?;
            let name = String::from_utf8_lossy(&name)
                .trim_end_matches('\0')
                .to_owned();
            let c = self.slot_counters(slot)?;
            if slot == 0 {
                if c.get(Counter::Seen) > 0 {
                    out.push(("other".to_owned(), c));
                }
            } else if !name.is_empty() {
                out.push((name, c));
            }
        }
        Ok(out)
    }
}
