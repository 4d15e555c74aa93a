//! XDP entry point: the earliest place a denied source can be dropped.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{
    filter::{Verdict, decide},
    packet::Packet,
    synproxy,
};

#[xdp]
pub fn xdp_filter(ctx: XdpContext) -> u32 {
    match try_xdp_filter(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn try_xdp_filter(ctx: &XdpContext) -> Result<u32, ()> {
    // SAFETY: reading a field of the XDP context the kernel passed in.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    Ok(
        match decide(&Packet::new(ctx.data(), ctx.data_end()), ifindex, || {
            synproxy::handle(ctx)
        }) {
            Verdict::Pass => xdp_action::XDP_PASS,
            Verdict::Drop => xdp_action::XDP_DROP,
            Verdict::Tx => xdp_action::XDP_TX,
        },
    )
}
