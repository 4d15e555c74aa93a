//! The proxy's kernel programs.
//!
//! One file per attach point (`xdp.rs`, `tc.rs`); both call the same parser (`packet.rs`) and
//! the same decision (`filter.rs`), over the maps in `maps.rs`. Entry points are tiny:
//! `fn prog(ctx) -> u32 { match try_prog(&ctx) { .. } }`.
#![no_std]
#![no_main]

mod filter;
mod maps;
mod packet;
mod reuseport;
mod synproxy;
mod tc;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never called at run time.
    loop {}
}
