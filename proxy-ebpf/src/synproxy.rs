//! The SYN proxy in XDP: SYNs to a listener that has it are answered here with a SYN cookie
//! (the SYN-ACK is built in place and sent back with `XDP_TX`), so a spoofed flood never
//! reaches the stack; an ACK that belongs to no connection is passed on only when its cookie
//! checks out, and the stack's own SYN proxy (nftables `synproxy` with conntrack, set up by the
//! daemon) then opens the connection to the listener.
//!
//! The cookies are the kernel's (`bpf_tcp_raw_gen_syncookie_*`), so nftables validates them
//! again with the same secret; the timestamp carries the client's window scale and SACK in its
//! low bits the way nftables' synproxy encodes them (`tsval = ms & ~0x3f | wscale | sack << 4`),
//! so the connection it opens to the listener has the options the client asked for.
//!
//! Only plain frames are answered here: Ethernet without VLAN tags, IPv4 without options (and
//! a header checksum that verifies) or IPv6 without extension headers, no fragment, no
//! payload. Anything else to the port goes to the stack, where nftables' synproxy answers it
//! (slower, but still without a socket per SYN); the SYNs it looked at and left are counted
//! (`syn_proxy_passed_to_stack`), frames it does not parse count as passed.
//!
//! The SYN's TCP checksum is not verified (xdp-tools' `xdpcookie` makes it optional too): a
//! frame from a local sender (a veth, a container) carries only the pseudo-header sum there
//! (checksum offload: the stack knows, XDP cannot), and answering a damaged SYN costs one
//! SYN-ACK whose cookie no one can use. The answer's checksums are always computed in full.
use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, BPF_TCP_LISTEN, bpf_sock_tuple},
    cty::c_void,
    helpers::{
        bpf_ktime_get_ns, bpf_loop, bpf_sk_release, bpf_skc_lookup_tcp,
        bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail,
    },
    programs::XdpContext,
};
use proxy_common::{Counter, ListenerKey, SynProxyConfig};

use crate::{
    filter::Verdict,
    maps::{SYN_PROXY_CONFIG, SYN_PROXY_LISTENERS, SYN_PROXY_PORTS},
    packet::load_at as load,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// The longest TCP header (doff 15).
const TCP_MAX: usize = 60;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// What the SYN proxy made of a packet.
pub struct Outcome {
    pub verdict: Verdict,
    /// The counter it adds to, if any.
    pub counter: Option<Counter>,
}

impl Outcome {
    #[inline(always)]
    fn new(verdict: Verdict, counter: Counter) -> Self {
        Self {
            verdict,
            counter: Some(counter),
        }
    }

    /// A packet of a connection the stack knows: on to it, counted as passed.
    #[inline(always)]
    fn pass() -> Self {
        Self {
            verdict: Verdict::Pass,
            counter: None,
        }
    }

    #[inline(always)]
    fn to_stack() -> Self {
        Self::new(Verdict::Pass, Counter::SynProxyToStack)
    }
}

/// The frame's length, as a number the compiler cannot fold back into arithmetic on the end
/// pointer (which the verifier refuses).
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    core::hint::black_box(ctx.data_end() - ctx.data())
}

/// Writes a `T` at `data + offset` if the packet has room for it.
#[inline(always)]
fn store<T: Copy>(data: usize, end: usize, offset: usize, value: T) -> Option<()> {
    let ptr = data + offset;
    if ptr + size_of::<T>() > end {
        return None;
    }
    // SAFETY: as in `load`; XDP packet data is writable.
    unsafe { (ptr as *mut T).write_unaligned(value) };
    Some(())
}

/// Adds a 32-bit word (network order, as loaded) to a one's complement sum, as two 16-bit
/// words.
#[inline(always)]
fn add32(sum: u32, raw: u32) -> u32 {
    let w = u32::from_be(raw);
    sum + (w >> 16) + (w & 0xffff)
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Whether a listener with the SYN proxy owns `family` / `addr` (network order words) /
/// `port` (the port's bit was tested by the filter before its tail call, in [`wanted`]).
#[inline(always)]
fn proxied(family: u32, addr: [u32; 4], port: u16) -> bool {
    let mut key = ListenerKey {
        family,
        port: u32::from(port),
        addr,
    };
    // SAFETY: the values are only tested for presence.
    if unsafe { SYN_PROXY_LISTENERS.get(&key) }.is_some() {
        return true;
    }
    key.addr = [0; 4];
    // SAFETY: as above.
    unsafe { SYN_PROXY_LISTENERS.get(&key) }.is_some()
}

/// Options of the client's SYN that the answer depends on, parsed with `bpf_loop` (one
/// option per call) from a copy of the option bytes (positions are plain numbers there: the
/// verifier checks the callback once, where packet pointers that move would make it walk
/// every length).
#[repr(C)]
struct Options {
    /// The 40 bytes after the fixed TCP header, as loaded.
    bytes: [u32; 10],
    /// Where the next option starts and where the options end, from the first option byte.
    pos: u32,
    end: u32,
    /// 0xf: no window scale option; else the client's shift (at most 14).
    wscale: u32,
    sack: u32,
    timestamp: u32,
    /// The client's TSval (network order), echoed in our TSecr.
    tsval: u32,
}

impl Options {
    #[inline(always)]
    fn byte(&self, at: u32) -> u32 {
        if at >= 40 {
            return 0;
        }
        // Little-endian (bpfel): byte `k` of a loaded word is bits 8k to 8k + 7. Shifts, not
        // an index into the word's bytes (a stack address the verifier cannot follow).
        (self.bytes[(at / 4) as usize] >> ((at % 4) * 8)) & 0xff
    }
}

extern "C" fn parse_option(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Options` on the caller's stack that `bpf_loop` passes back.
    let o = unsafe { &mut *ctx.cast::<Options>() };
    let pos = o.pos;
    if pos >= o.end || pos >= 40 {
        return 1;
    }
    let kind = o.byte(pos);
    match kind {
        // End of options.
        0 => return 1,
        // NOP.
        1 => {
            o.pos = pos + 1;
            return 0;
        }
        _ => {}
    }
    let len = o.byte(pos + 1);
    if len < 2 || pos + len > o.end {
        return 1;
    }
    match (kind, len) {
        (3, 3) => o.wscale = o.byte(pos + 2).min(14),
        (4, 2) => o.sack = 1,
        (8, 10) => {
            o.timestamp = 1;
            o.tsval = u32::from_ne_bytes([
                o.byte(pos + 2) as u8,
                o.byte(pos + 3) as u8,
                o.byte(pos + 4) as u8,
                o.byte(pos + 5) as u8,
            ]);
        }
        _ => {}
    }
    o.pos = pos + len;
    0
}

/// Whether the packet may be for the SYN proxy: it is on, and the packet is a plain IPv4 or
/// IPv6 TCP frame to a port with the SYN proxy. The filter then hands the packet to
/// `xdp_synproxy` with a tail call (a program of its own: its stack is not added to the
/// filter's, and the verifier's bound is 512 bytes for the whole chain).
#[inline(always)]
pub fn wanted(ctx: &XdpContext) -> bool {
    if SYN_PROXY_CONFIG.get(0).is_none_or(|c| c.enabled == 0) {
        return false;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    let (l4, protocol) = match load::<u16>(data, end, 12).map(u16::from_be) {
        Some(ETH_P_IP) => (L4_V4, load::<u8>(data, end, ETH_HLEN + 9)),
        Some(ETH_P_IPV6) => (L4_V6, load::<u8>(data, end, ETH_HLEN + 6)),
        _ => return false,
    };
    if protocol != Some(IPPROTO_TCP) {
        return false;
    }
    let Some(dport) = load::<u16>(data, end, l4 + 2).map(u16::from_be) else {
        return false;
    };
    let word = SYN_PROXY_PORTS
        .get(u32::from(dport) / 32)
        .copied()
        .unwrap_or(0);
    word & (1 << (dport % 32)) != 0
}

/// The SYN proxy's decision for a packet the lists let through (in `xdp_synproxy`): `None`
/// when the packet is not TCP to a listener with the SYN proxy (or not a plain frame).
#[inline(always)]
pub fn handle(ctx: &XdpContext) -> Option<Outcome> {
    let config = *SYN_PROXY_CONFIG.get(0)?;
    if config.enabled == 0 {
        return None;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    match u16::from_be(load::<u16>(data, end, 12)?) {
        ETH_P_IP => v4(ctx, &config),
        ETH_P_IPV6 => v6(ctx, &config),
        _ => None,
    }
}

const L4_V4: usize = ETH_HLEN + 20;
const L4_V6: usize = ETH_HLEN + 40;

/// The TCP fields the decision needs: ports (as loaded), header length, flags.
struct Tcp {
    ports: u32,
    doff: u8,
    flags: u8,
}

#[inline(always)]
fn tcp_at(data: usize, end: usize, l4: usize) -> Option<Tcp> {
    let ports: u32 = load(data, end, l4)?;
    let [doff, flags]: [u8; 2] = load(data, end, l4 + 12)?;
    Some(Tcp { ports, doff, flags })
}

impl Tcp {
    /// The destination port, host order.
    #[inline(always)]
    fn dport(&self) -> u16 {
        u16::from_be((self.ports >> 16) as u16)
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        u32::from(self.doff >> 4) * 4
    }
}

#[inline(always)]
fn v4(ctx: &XdpContext, config: &SynProxyConfig) -> Option<Outcome> {
    let (data, end) = (ctx.data(), ctx.data_end());
    let (w0, w1, w2): (u32, u32, u32) = (
        load(data, end, ETH_HLEN)?,
        load(data, end, ETH_HLEN + 4)?,
        load(data, end, ETH_HLEN + 8)?,
    );
    let (saddr, daddr): (u32, u32) = (
        load(data, end, ETH_HLEN + 12)?,
        load(data, end, ETH_HLEN + 16)?,
    );
    let [version_ihl, _, len_hi, len_lo] = w0.to_ne_bytes();
    let [_, _, frag_hi, frag_lo] = w1.to_ne_bytes();
    let [_, protocol, _, _] = w2.to_ne_bytes();
    // IHL 5 (no options), TCP, not a fragment (MF clear, offset 0).
    if version_ihl != 0x45
        || protocol != IPPROTO_TCP
        || (u16::from_be_bytes([frag_hi, frag_lo]) & 0x3fff) != 0
    {
        return None;
    }
    let tcp = tcp_at(data, end, L4_V4)?;
    if !proxied(AF_INET, [daddr, 0, 0, 0], tcp.dport()) {
        return None;
    }
    if tcp.flags & (SYN | ACK | RST | FIN) != SYN {
        return Some(not_syn(ctx, false, &tcp));
    }
    let tot_len = u32::from(u16::from_be_bytes([len_hi, len_lo]));
    let tcp_len = tcp.len();
    // No payload (TFO data or a bogus length: the stack sorts those out); a source the stack
    // would not answer (this network, loopback, multicast, reserved, broadcast: it decides).
    let first = saddr.to_ne_bytes()[0];
    if tcp_len < 20 || tot_len != 20 + tcp_len || first == 0 || first == 127 || first >= 224 {
        return Some(Outcome::to_stack());
    }
    if !unicast_to_us(data, end) || connection_exists(ctx, false, &tcp) {
        return Some(Outcome::to_stack());
    }
    let ip_sum = add32(add32(add32(add32(add32(0, w0), w1), w2), saddr), daddr);
    if fold(ip_sum) != 0 {
        return Some(Outcome::to_stack());
    }
    let pseudo = add32(add32(u32::from(IPPROTO_TCP), saddr), daddr);
    Some(syn(ctx, config, tcp_len, pseudo, L4_V4))
}

#[inline(always)]
fn v6(ctx: &XdpContext, config: &SynProxyConfig) -> Option<Outcome> {
    let (data, end) = (ctx.data(), ctx.data_end());
    let [first, second]: [u32; 2] = load(data, end, ETH_HLEN)?;
    let [version, _, _, _] = first.to_ne_bytes();
    let [len_hi, len_lo, next, _] = second.to_ne_bytes();
    // No extension headers.
    if version >> 4 != 6 || next != IPPROTO_TCP {
        return None;
    }
    let tcp = tcp_at(data, end, L4_V6)?;
    let daddr: [u32; 4] = load(data, end, ETH_HLEN + 24)?;
    if !proxied(AF_INET6, daddr, tcp.dport()) {
        return None;
    }
    if tcp.flags & (SYN | ACK | RST | FIN) != SYN {
        return Some(not_syn(ctx, true, &tcp));
    }
    let payload_len = u32::from(u16::from_be_bytes([len_hi, len_lo]));
    let tcp_len = tcp.len();
    if tcp_len < 20 || payload_len != tcp_len {
        return Some(Outcome::to_stack());
    }
    // A source the stack would not answer (multicast, unspecified, loopback: it decides).
    let src: [u32; 4] = load(data, end, ETH_HLEN + 8)?;
    let [s0, _, _, _] = src[0].to_ne_bytes();
    if s0 == 0xff || src == [0, 0, 0, 0] || src == [0, 0, 0, 1u32.to_be()] {
        return Some(Outcome::to_stack());
    }
    if !unicast_to_us(data, end) || connection_exists(ctx, true, &tcp) {
        return Some(Outcome::to_stack());
    }
    let mut pseudo = u32::from(IPPROTO_TCP);
    let mut i = 0;
    while i < 8 {
        pseudo = add32(pseudo, load(data, end, ETH_HLEN + 8 + i * 4)?);
        i += 1;
    }
    Some(syn(ctx, config, tcp_len, pseudo, L4_V6))
}

/// Whether the frame's destination MAC is a unicast address (a SYN to a broadcast or
/// multicast MAC is not answered from here: the answer would carry that as its source).
#[inline(always)]
fn unicast_to_us(data: usize, end: usize) -> bool {
    load::<u8>(data, end, 0).is_some_and(|b| b & 1 == 0)
}

/// Whether the stack has a socket for the packet's tuple other than the listener: an
/// established connection, one being set up, or its `TIME_WAIT`.
#[inline(always)]
fn connection_exists(ctx: &XdpContext, v6: bool, tcp: &Tcp) -> bool {
    let (data, end) = (ctx.data(), ctx.data_end());
    // SAFETY: an all-zero tuple is a valid value of this plain-data union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let sport = tcp.ports as u16;
    let dport = (tcp.ports >> 16) as u16;
    let size = if v6 {
        let Some(addrs) = load::<[[u32; 4]; 2]>(data, end, ETH_HLEN + 8) else {
            return false;
        };
        // SAFETY: writing the IPv6 member of the union.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv6;
            t.saddr = addrs[0];
            t.daddr = addrs[1];
            t.sport = sport;
            t.dport = dport;
        }
        36
    } else {
        let Some(addrs) = load::<[u32; 2]>(data, end, ETH_HLEN + 12) else {
            return false;
        };
        // SAFETY: writing the IPv4 member of the union.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv4;
            t.saddr = addrs[0];
            t.daddr = addrs[1];
            t.sport = sport;
            t.dport = dport;
        }
        12
    };
    has_connection(ctx, &mut tuple, size)
}

/// A packet to a proxied listener that is not a SYN: on to the stack when a connection (or
/// its TIME_WAIT) exists; else only an ACK whose cookie checks out.
#[inline(always)]
fn not_syn(ctx: &XdpContext, v6: bool, tcp: &Tcp) -> Outcome {
    if connection_exists(ctx, v6, tcp) {
        return Outcome::pass();
    }
    if tcp.flags & (SYN | ACK | RST) != ACK {
        return Outcome::new(Verdict::Drop, Counter::SynCookieAcksInvalid);
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    let r = if v6 {
        if data + L4_V6 + 20 > end {
            return Outcome::pass();
        }
        // SAFETY: the IPv6 header (40 bytes) and the TCP header (20) lie inside the packet
        // (checked above): what the helper reads.
        unsafe {
            bpf_tcp_raw_check_syncookie_ipv6((data + ETH_HLEN) as *mut _, (data + L4_V6) as *mut _)
        }
    } else {
        if data + L4_V4 + 20 > end {
            return Outcome::pass();
        }
        // SAFETY: as above (20 and 20 bytes).
        unsafe {
            bpf_tcp_raw_check_syncookie_ipv4((data + ETH_HLEN) as *mut _, (data + L4_V4) as *mut _)
        }
    };
    if r == 0 {
        Outcome::new(Verdict::Pass, Counter::SynCookieAcksValid)
    } else {
        Outcome::new(Verdict::Drop, Counter::SynCookieAcksInvalid)
    }
}

/// Whether the stack has a socket for the tuple other than the listener: an established
/// connection, one being set up, or its TIME_WAIT.
#[inline(always)]
fn has_connection(ctx: &XdpContext, tuple: &mut bpf_sock_tuple, size: u32) -> bool {
    // SAFETY: `tuple` is a valid tuple of `size` bytes on the stack; the returned reference
    // is released below on every path.
    let sk =
        unsafe { bpf_skc_lookup_tcp(ctx.ctx.cast(), tuple, size, BPF_F_CURRENT_NETNS as u64, 0) };
    if sk.is_null() {
        return false;
    }
    // SAFETY: `sk` is a non-null socket reference from the lookup; `state` is readable on
    // every socket kind it returns.
    let state = unsafe { (*sk).state };
    // SAFETY: releasing the reference taken by the lookup, once.
    unsafe { bpf_sk_release(sk.cast()) };
    state != BPF_TCP_LISTEN
}

/// Answers a SYN whose IP header (at 14) and TCP header (at `L4`, `tcp_len` bytes, no
/// payload) were checked, with the SYN-ACK built in place. `pseudo` is the sum of the
/// pseudo-header without the length (the same for the answer: its addresses are only
/// swapped).
#[inline(always)]
fn syn(ctx: &XdpContext, config: &SynProxyConfig, tcp_len: u32, pseudo: u32, l4: usize) -> Outcome {
    let v6 = l4 == L4_V6;
    // Room for the longest TCP header, so that every read and write below is at a fixed
    // offset inside the packet (the frame shrinks to the answer's size at the end).
    let len = frame_len(ctx);
    if len < l4 + TCP_MAX {
        // SAFETY: growing the XDP frame; the kernel checks the tailroom.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (l4 + TCP_MAX - len) as i32) } != 0 {
            return Outcome::to_stack();
        }
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + l4 + TCP_MAX > end {
        return Outcome::to_stack();
    }
    let tcp_len = tcp_len.min(TCP_MAX as u32);
    // SAFETY: the IP header (20 or 40 bytes) at 14 and `tcp_len` (20 to 60) bytes at `L4`
    // lie inside the packet (checked above).
    let cookie = unsafe {
        if v6 {
            bpf_tcp_raw_gen_syncookie_ipv6(
                (data + ETH_HLEN) as *mut _,
                (data + l4) as *mut _,
                tcp_len,
            )
        } else {
            bpf_tcp_raw_gen_syncookie_ipv4(
                (data + ETH_HLEN) as *mut _,
                (data + l4) as *mut _,
                tcp_len,
            )
        }
    };
    if cookie < 0 {
        return Outcome::to_stack();
    }
    let mut o = Options {
        bytes: [0; 10],
        pos: 0,
        end: tcp_len - 20,
        wscale: 0xf,
        sack: 0,
        timestamp: 0,
        tsval: 0,
    };
    let mut i = 0;
    while i < 10 {
        match load(data, end, l4 + 20 + i * 4) {
            Some(w) => o.bytes[i] = w,
            None => return Outcome::to_stack(),
        }
        i += 1;
    }
    // SAFETY: `parse_option` is a static function with bpf_loop's callback signature, and
    // `o` outlives the call.
    unsafe {
        bpf_loop(
            40,
            parse_option as *mut c_void,
            core::ptr::from_mut(&mut o).cast(),
            0,
        );
    }
    // None: partly rewritten (cannot happen after the checks above), so it cannot go on.
    build(ctx, config, &o, cookie as u32, pseudo, v6, l4).unwrap_or(Outcome {
        verdict: Verdict::Drop,
        counter: None,
    })
}

/// Rewrites the frame into the SYN-ACK and trims it.
#[inline(always)]
fn build(
    ctx: &XdpContext,
    config: &SynProxyConfig,
    o: &Options,
    cookie: u32,
    pseudo: u32,
    v6: bool,
    l4: usize,
) -> Option<Outcome> {
    let (data, end) = (ctx.data(), ctx.data_end());
    // Our options, as the listener's SYN-ACK would carry them: MSS; with timestamps, SACK and
    // window scale when the client offered them (without timestamps the cookie cannot carry
    // them, as with the kernel's own cookies).
    // (Scalars, not arrays: the stack is shared with the rest of the program.)
    let mss = if v6 { config.mss6 } else { config.mss4 };
    let o0 = (0x0204_0000 | u32::from(mss)).to_be();
    let (mut o1, mut o2, mut o3, mut o4) = (0u32, 0u32, 0u32, 0u32);
    let mut words = 1;
    if o.timestamp != 0 {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        let ms = (unsafe { bpf_ktime_get_ns() } / 1_000_000) as u32;
        let tsval = (ms & !0x3f) | (o.wscale & 0xf) | if o.sack != 0 { 1 << 4 } else { 0 };
        o1 = if o.sack != 0 {
            0x0402_080au32
        } else {
            0x0101_080a
        }
        .to_be();
        o2 = tsval.to_be();
        o3 = o.tsval;
        words = 4;
        if o.wscale != 0xf {
            o4 = (0x0103_0300 | u32::from(config.wscale.min(14))).to_be();
            words = 5;
        }
    }
    let tcp_len = 20 + words * 4;
    // Ports swapped, our cookie as sequence number, their sequence + 1 acknowledged, a zero
    // window until the connection to the listener exists (nftables' synproxy opens it).
    let ports: u32 = load(data, end, l4)?;
    let seq: u32 = load(data, end, l4 + 4)?;
    let h0 = ports.rotate_left(16);
    let h1 = cookie.to_be();
    let h2 = u32::from_be(seq).wrapping_add(1).to_be();
    let h3 = (((tcp_len / 4) << 28) | (u32::from(SYN | ACK) << 16)).to_be();
    // Unused option words are 0: they add nothing to the sum.
    let mut sum = pseudo + tcp_len;
    for w in [h0, h1, h2, h3, o0, o1, o2, o3, o4] {
        sum = add32(sum, w);
    }
    let check = fold(sum);
    store(data, end, l4, h0)?;
    store(data, end, l4 + 4, h1)?;
    store(data, end, l4 + 8, h2)?;
    store(data, end, l4 + 12, h3)?;
    store(data, end, l4 + 16, (u32::from(check) << 16).to_be())?;
    store(data, end, l4 + 20, o0)?;
    store(data, end, l4 + 24, o1)?;
    store(data, end, l4 + 28, o2)?;
    store(data, end, l4 + 32, o3)?;
    store(data, end, l4 + 36, o4)?;
    // MAC addresses swapped.
    let (d0, d1): (u32, u16) = (load(data, end, 0)?, load(data, end, 4)?);
    let (s0, s1): (u16, u32) = (load(data, end, 6)?, load(data, end, 8)?);
    store(data, end, 0, s0)?;
    store(data, end, 2, s1)?;
    store(data, end, 6, d0)?;
    store(data, end, 10, d1)?;
    // Addresses swapped.
    if v6 {
        let mut i = 0;
        while i < 16 {
            let a: u32 = load(data, end, ETH_HLEN + 8 + i)?;
            let b: u32 = load(data, end, ETH_HLEN + 24 + i)?;
            store(data, end, ETH_HLEN + 8 + i, b)?;
            store(data, end, ETH_HLEN + 24 + i, a)?;
            i += 4;
        }
        store(data, end, ETH_HLEN, 0x6000_0000u32.to_be())?;
        let [l0, l1] = (tcp_len as u16).to_be_bytes();
        store(
            data,
            end,
            ETH_HLEN + 4,
            u32::from_ne_bytes([l0, l1, IPPROTO_TCP, config.hop_limit]),
        )?;
    } else {
        let a: u32 = load(data, end, ETH_HLEN + 12)?;
        let b: u32 = load(data, end, ETH_HLEN + 16)?;
        let [l0, l1] = ((20 + tcp_len) as u16).to_be_bytes();
        // ID 0, don't fragment (as the stack sends SYN-ACKs).
        let w0 = u32::from_ne_bytes([0x45, 0, l0, l1]);
        let w1 = u32::from_ne_bytes([0, 0, 0x40, 0]);
        let w2 = u32::from_ne_bytes([config.ttl, IPPROTO_TCP, 0, 0]);
        let sum = add32(add32(add32(add32(add32(0, w0), w1), w2), a), b);
        store(data, end, ETH_HLEN, w0)?;
        store(data, end, ETH_HLEN + 4, w1)?;
        store(data, end, ETH_HLEN + 8, w2)?;
        store(data, end, ETH_HLEN + 10, fold(sum).to_be())?;
        store(data, end, ETH_HLEN + 12, b)?;
        store(data, end, ETH_HLEN + 16, a)?;
    }
    // At least the 60 bytes of a minimal Ethernet frame (the IP length says where the packet
    // ends; the rest is padding).
    let delta = (l4 as u32 + tcp_len).max(60) as i32 - frame_len(ctx) as i32;
    // SAFETY: shrinking the XDP frame to the answer's length.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return None;
    }
    Some(Outcome::new(Verdict::Tx, Counter::SynCookiesSent))
}
