//! Bounds-checked packet parsing shared by XDP and TC.
//!
//! Both program types give direct access to the packet as `[data, data_end)`; every read goes
//! through [`Packet::load`], whose explicit bound check is what the verifier needs to see.
use core::mem::size_of;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// The part of a frame the decision needs: the source address, or why there is none.
pub enum Source {
    /// IPv4 source; `syn` for a TCP SYN without ACK (a new connection).
    V4 {
        addr: [u8; 4],
        syn: bool,
    },
    V6 {
        addr: [u8; 16],
        syn: bool,
    },
    /// Not IPv4 or IPv6 (ARP, LLDP, a third VLAN tag, ...).
    NonIp,
    /// Truncated, or an IP header that is not valid.
    Malformed,
}

/// A view of the packet bytes `[start, end)`.
pub struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Reads a `T` at `offset`, or `Err` when it would cross the end of the packet.
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Result<T, ()> {
        let ptr = self.start + offset;
        if ptr + size_of::<T>() > self.end {
            return Err(());
        }
        // SAFETY: [ptr, ptr + size_of::<T>()) lies inside the packet (checked just above), and
        // read_unaligned has no alignment requirement.
        Ok(unsafe { (ptr as *const T).read_unaligned() })
    }

    /// Whether `len` bytes from `offset` lie inside the packet.
    #[inline(always)]
    fn has(&self, offset: usize, len: usize) -> bool {
        self.start + offset + len <= self.end
    }

    /// Parses Ethernet, up to two VLAN tags (802.1Q / 802.1ad), then IPv4 (any IHL) or IPv6.
    #[inline(always)]
    pub fn source(&self) -> Source {
        let Ok(mut proto) = self.load::<u16>(12).map(u16::from_be) else {
            return Source::Malformed;
        };
        let mut l3 = ETH_HLEN;
        // Unrolled: the verifier prefers straight-line code to a bounded loop here.
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let Ok(inner) = self.load::<u16>(l3 + 2).map(u16::from_be) else {
                return Source::Malformed;
            };
            proto = inner;
            l3 += VLAN_HLEN;
            if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
                let Ok(inner) = self.load::<u16>(l3 + 2).map(u16::from_be) else {
                    return Source::Malformed;
                };
                proto = inner;
                l3 += VLAN_HLEN;
            }
        }
        match proto {
            ETH_P_IP => self.ipv4(l3),
            ETH_P_IPV6 => self.ipv6(l3),
            _ => Source::NonIp,
        }
    }

    /// Whether the TCP header at `l4` is a SYN without ACK; a truncated header is not.
    #[inline(always)]
    fn is_syn(&self, l4: usize) -> bool {
        self.load::<u8>(l4 + TCP_FLAGS)
            .is_ok_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN)
    }

    #[inline(always)]
    fn ipv4(&self, l3: usize) -> Source {
        // Read the source address first: a bound check at a fixed offset that LLVM cannot
        // fold into the variable-length check below (the verifier needs to see it).
        let Ok(saddr) = self.load::<[u8; 4]>(l3 + 12) else {
            return Source::Malformed;
        };
        let Ok(version_ihl) = self.load::<u8>(l3) else {
            return Source::Malformed;
        };
        let header_len = usize::from(version_ihl & 0x0f) * 4;
        if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HLEN || !self.has(l3, header_len) {
            return Source::Malformed;
        }
        let syn = self.load::<u8>(l3 + 9) == Ok(IPPROTO_TCP) && self.is_syn(l3 + header_len);
        Source::V4 { addr: saddr, syn }
    }

    #[inline(always)]
    fn ipv6(&self, l3: usize) -> Source {
        let Ok(saddr) = self.load::<[u8; 16]>(l3 + 8) else {
            return Source::Malformed;
        };
        let Ok(first) = self.load::<u8>(l3) else {
            return Source::Malformed;
        };
        if first >> 4 != 6 || !self.has(l3, IPV6_HLEN) {
            return Source::Malformed;
        }
        // Only a TCP header right after the fixed header counts (no extension-header walk).
        let syn = self.load::<u8>(l3 + 6) == Ok(IPPROTO_TCP) && self.is_syn(l3 + IPV6_HLEN);
        Source::V6 { addr: saddr, syn }
    }
}
