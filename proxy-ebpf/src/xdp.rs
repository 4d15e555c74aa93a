//! XDP entry point: the earliest place a denied source can be dropped.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{
    filter::{Verdict, count_in, decide, iface_base},
    maps::SYN_PROXY_PROG,
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
            if synproxy::wanted(ctx) {
                // SAFETY: a tail call into `xdp_synproxy` (same program type, same context);
                // it does not return when it succeeds, and the packet passes when it fails.
                unsafe { SYN_PROXY_PROG.tail_call(ctx, 0) };
            }
            None
        }) {
            Verdict::Pass => xdp_action::XDP_PASS,
            Verdict::Drop => xdp_action::XDP_DROP,
            Verdict::Tx => xdp_action::XDP_TX,
        },
    )
}

/// The SYN proxy (see `synproxy.rs`), entered from `xdp_filter` with a tail call once the
/// lists and the SYN limiter have let the packet through.
#[xdp]
pub fn xdp_synproxy(ctx: XdpContext) -> u32 {
    // SAFETY: reading a field of the XDP context the kernel passed in.
    let base = iface_base(unsafe { (*ctx.ctx).ingress_ifindex });
    let outcome = synproxy::handle(&ctx);
    let verdict = match outcome {
        Some(o) => {
            if let Some(counter) = o.counter {
                count_in(base, counter);
            }
            o.verdict
        }
        None => Verdict::Pass,
    };
    match verdict {
        Verdict::Pass => {
            count_in(base, proxy_common::Counter::Passed);
            xdp_action::XDP_PASS
        }
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Tx => xdp_action::XDP_TX,
    }
}
