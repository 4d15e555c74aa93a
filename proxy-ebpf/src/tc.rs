//! TC ingress classifier: the same decision as XDP, for interfaces where XDP cannot attach.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::{
    filter::{Verdict, decide},
    packet::{HEADERS_MAX, Packet},
};

#[classifier]
pub fn tc_filter(ctx: TcContext) -> i32 {
    match try_tc_filter(&ctx) {
        Ok(action) => action,
        Err(()) => TC_ACT_OK,
    }
}

#[inline(always)]
fn try_tc_filter(ctx: &TcContext) -> Result<i32, ()> {
    // Direct access only covers the linear part of the skb, and a driver may leave no more than
    // the Ethernet header there: pull in every byte the parser may read (VLAN tags, IPv4
    // options, IPv6 extension headers, the TCP flags), or the whole packet when it is shorter,
    // so that the verdict depends on the packet and not on how the driver laid it out. If the
    // pull fails the parser sees only the linear part; a header cut there is limited like a SYN
    // or counted malformed (packet.rs), as a packet really cut there would be.
    let linear = ctx.data_end() - ctx.data();
    if linear < HEADERS_MAX && ctx.len() as usize > linear {
        let _ = ctx.pull_data(ctx.len().min(HEADERS_MAX as u32));
    }
    // SAFETY: reading a field of the skb the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    Ok(
        // The SYN proxy is XDP's only (the daemon refuses it on a TC attachment).
        match decide(&Packet::new(ctx.data(), ctx.data_end()), ifindex, || None) {
            Verdict::Pass | Verdict::Tx => TC_ACT_OK,
            Verdict::Drop => TC_ACT_SHOT,
        },
    )
}
