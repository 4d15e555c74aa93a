//! TC ingress classifier: the same decision as XDP, for interfaces where XDP cannot attach.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::{
    filter::{Verdict, decide},
    packet::Packet,
};

/// Bytes of headers the parser may read: Ethernet + two VLAN tags + an IPv6 header.
const HEADERS_MAX: u32 = 14 + 8 + 40;

#[classifier]
pub fn tc_filter(ctx: TcContext) -> i32 {
    match try_tc_filter(&ctx) {
        Ok(action) => action,
        Err(()) => TC_ACT_OK,
    }
}

#[inline(always)]
fn try_tc_filter(ctx: &TcContext) -> Result<i32, ()> {
    // Direct access only covers the linear part of the skb: pull the headers in if needed.
    let linear = ctx.data_end() - ctx.data();
    if linear < HEADERS_MAX as usize && ctx.len() > linear as u32 {
        let _ = ctx.pull_data(ctx.len().min(HEADERS_MAX));
    }
    // SAFETY: reading a field of the skb the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    Ok(
        match decide(&Packet::new(ctx.data(), ctx.data_end()), ifindex) {
            Verdict::Pass => TC_ACT_OK,
            Verdict::Drop => TC_ACT_SHOT,
        },
    )
}
