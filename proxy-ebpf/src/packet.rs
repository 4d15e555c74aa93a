//! Bounds-checked packet parsing shared by XDP and TC.
//!
//! Both program types give direct access to the packet as `[data, data_end)`; every read goes
//! through [`Packet::load`], whose explicit bound check is what the verifier needs to see.
//!
//! What it reads, and the one rule behind the SYN decision: a packet whose TCP flags the parser
//! cannot see, but which may open a connection once the stack has it (an IPv6 header chain longer
//! than the walk, or cut short; a TCP header cut before its flags byte), is limited like a SYN.
//! Otherwise a SYN flood could walk past the limiter by wearing extension headers or by splitting
//! its TCP header over two fragments. A fragment that is not the first carries no TCP header at
//! all and is never read as one; its source still goes through the lists.
use core::mem::size_of;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const IPV4_MAX_HLEN: usize = 60;
/// Fragment offset bits of the IPv4 flags/fragment-offset field (the low 13).
const IPV4_FRAG_OFFSET: u16 = 0x1fff;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
/// The IPv6 extension headers the walk follows (the ones Linux itself walks to reach TCP).
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
/// Fragment offset bits of the IPv6 fragment header's offset/flags field (the high 13).
const IPV6_FRAG_OFFSET: u16 = 0xfff8;
/// How many extension headers the walk follows before it gives up (and limits the packet like
/// a SYN). Real traffic has one or two; the bound keeps the loop and the verifier's work small.
const IPV6_EXT_MAX: usize = 8;
/// The farthest the TCP header may start after the IPv6 header's first byte for the walk to
/// read it; a longer chain is treated like one longer than [`IPV6_EXT_MAX`]. It also bounds the
/// offsets for the verifier and what the TC program pulls into the linear area.
const IPV6_L4_MAX: usize = 256;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// The most bytes from the start of the frame the parser reads: Ethernet and two VLAN tags,
/// then the longer of an IPv4 header with options and an IPv6 header chain, then the TCP header
/// up to its flags byte. The TC program makes this much linear before parsing.
pub const HEADERS_MAX: usize = ETH_HLEN
    + 2 * VLAN_HLEN
    + if IPV6_L4_MAX > IPV4_MAX_HLEN {
        IPV6_L4_MAX
    } else {
        IPV4_MAX_HLEN
    }
    + TCP_FLAGS
    + 1;

/// The part of a frame the decision needs: the source address, or why there is none.
pub enum Source {
    /// IPv4 source; `syn` for what the SYN limiter counts: a TCP SYN without ACK (a new
    /// connection), or a packet that may be one (see the module documentation).
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
        load_at(self.start, self.end, offset).ok_or(())
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

    /// Whether the TCP header at `l4` may open a connection: a SYN without ACK, or a header cut
    /// before its flags byte. The second can only be the first fragment of a datagram whose
    /// flags come in the next fragment (the tiny-fragment trick of RFC 1858), which the stack
    /// reassembles into whatever SYN it carries; any other cut TCP header is dropped by the
    /// stack anyway, so limiting it costs nothing.
    #[inline(always)]
    fn may_open(&self, l4: usize) -> bool {
        match self.load::<u8>(l4 + TCP_FLAGS) {
            Ok(flags) => flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
            Err(()) => true,
        }
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
        // A fragment other than the first carries no TCP header: what sits where the flags
        // would be is payload, so it is never read as TCP (the first fragment is read normally).
        let first_fragment = self
            .load::<u16>(l3 + 6)
            .is_ok_and(|f| u16::from_be(f) & IPV4_FRAG_OFFSET == 0);
        let syn = first_fragment
            && self.load::<u8>(l3 + 9) == Ok(IPPROTO_TCP)
            && self.may_open(l3 + header_len);
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
        Source::V6 {
            addr: saddr,
            syn: self.ipv6_may_open(l3),
        }
    }

    /// Walks the IPv6 extension headers after the fixed header at `l3` to the upper-layer
    /// header, and tells whether the packet may open a TCP connection (see the module doc).
    #[inline(always)]
    fn ipv6_may_open(&self, l3: usize) -> bool {
        let Ok(mut next) = self.load::<u8>(l3 + 6) else {
            return true;
        };
        // Offset of the current header from `l3`; never above IPV6_L4_MAX, which is what keeps
        // every read below at a bounded offset for the verifier.
        let mut off = IPV6_HLEN;
        for _ in 0..IPV6_EXT_MAX {
            if !is_ipv6_extension(next) {
                // The upper-layer header.
                break;
            }
            // Every extension header starts with its Next Header byte; their lengths differ.
            let Ok([following, len]) = self.load::<[u8; 2]>(l3 + off) else {
                // The chain runs past the end of the packet: what follows cannot be seen.
                return true;
            };
            let header_len = match next {
                // AH counts 4-byte units, minus 2.
                IPV6_AUTH => (usize::from(len) + 2) * 4,
                IPV6_FRAGMENT => {
                    let Ok(offset_flags) = self.load::<u16>(l3 + off + 2) else {
                        return true;
                    };
                    if u16::from_be(offset_flags) & IPV6_FRAG_OFFSET != 0 {
                        // Not the first fragment: no header of the chain follows, only payload.
                        return false;
                    }
                    // Always 8 bytes; its second byte is reserved, not a length.
                    8
                }
                // Hop-by-hop, routing, destination options: 8-byte units, minus 1.
                _ => (usize::from(len) + 1) * 8,
            };
            next = following;
            off += header_len;
            if off > IPV6_L4_MAX {
                return true;
            }
        }
        if next == IPPROTO_TCP {
            self.may_open(l3 + off)
        } else {
            // Still an extension header after IPV6_EXT_MAX of them: limited like a SYN, so that
            // stacking headers is no way around the limiter. Anything else is not TCP.
            is_ipv6_extension(next)
        }
    }
}

/// Reads a `T` at `start + offset` if the packet `[start, end)` holds it (the explicit bound
/// check is what the verifier needs to see). The SYN proxy reads through it too.
#[inline(always)]
pub fn load_at<T: Copy>(start: usize, end: usize, offset: usize) -> Option<T> {
    let ptr = start + offset;
    if ptr + size_of::<T>() > end {
        return None;
    }
    // SAFETY: [ptr, ptr + size_of::<T>()) lies inside the packet (checked just above), and
    // read_unaligned has no alignment requirement.
    Some(unsafe { (ptr as *const T).read_unaligned() })
}

/// Whether `next_header` is one of the IPv6 extension headers the walk follows.
#[inline(always)]
fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_AUTH | IPV6_DEST_OPTS
    )
}
