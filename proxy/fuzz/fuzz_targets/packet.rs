//! The kernel's packet parser (`proxy-ebpf/src/packet.rs`, the same source file) built for the
//! host, over arbitrary frames. Under AddressSanitizer, any read outside `[start, end)` (a
//! bound check the verifier would have had to catch) is a crash here.
//!
//! The result is only checked loosely, so the target stays valid while the parser learns new
//! headers: an IP source needs at least an Ethernet header and the fixed IP header.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../../proxy-ebpf/src/packet.rs"]
#[allow(
    dead_code,
    reason = "the kernel programs use more of the parser than this target"
)]
mod packet;

use packet::{Packet, Source};

const ETH_HLEN: usize = 14;

fuzz_target!(|data: &[u8]| {
    // Owned, so that the allocation ends exactly at `end` and overreads hit a redzone.
    let frame = data.to_vec().into_boxed_slice();
    let start = frame.as_ptr() as usize;
    let end = start + frame.len();
    match Packet::new(start, end).source() {
        Source::V4 { addr, .. } => {
            assert!(
                frame.len() >= ETH_HLEN + 20,
                "IPv4 source from a {}-byte frame",
                frame.len()
            );
            assert!(
                frame.windows(4).any(|w| w == addr),
                "IPv4 source not in the frame"
            );
        }
        Source::V6 { addr, .. } => {
            assert!(
                frame.len() >= ETH_HLEN + 40,
                "IPv6 source from a {}-byte frame",
                frame.len()
            );
            assert!(
                frame.windows(16).any(|w| w == addr),
                "IPv6 source not in the frame"
            );
        }
        _ => {}
    }
});
