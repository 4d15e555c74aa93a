//! `sk_reuseport`: picks the worker socket for each new connection from the load the workers
//! publish in `WORKER_LOAD`, instead of the kernel's blind 4-tuple hash.
use core::ptr::read_volatile;

use aya_ebpf::{bindings::sk_action, macros::sk_reuseport, programs::SkReuseportContext};
use proxy_common::{ListenerKey, MAX_WORKERS, SpreadPolicy};

use crate::maps::{LISTENER_SLOTS, SPREAD_CONFIG, WORKER_LOAD, WORKER_SOCKETS};

const AF_INET: u32 = 2;
/// Score of a dead worker, and "no worker".
const DEAD: u32 = u32::MAX;

#[sk_reuseport]
pub fn reuseport_select(ctx: SkReuseportContext) -> u32 {
    match try_reuseport_select(&ctx) {
        Ok(action) => action,
        // No decision: the kernel falls back to its own hash over the group.
        Err(()) => sk_action::SK_PASS,
    }
}

/// Score of a worker: lower is less loaded; `DEAD` for a worker that is not alive. Open
/// connections first, counting those picked for it and not accepted yet (`pending`; the
/// worker's decrement may have run ahead of a daemon correction: read as signed, below zero
/// as zero); requests in flight only break ties. Adding the two made a worker whose keep-alive
/// connections happened to be mid-request look busier than one holding more connections, and
/// connections placed by that momentary reading stay where they were put.
#[inline(always)]
fn score(worker: u32) -> u32 {
    match WORKER_LOAD.get(worker) {
        Some(load) if load.alive != 0 => {
            let pending = (load.pending as i32).max(0) as u32;
            let open = load.connections.saturating_add(pending).min(0x00FF_FFFE);
            (open << 8) | load.inflight.min(0xFF)
        }
        _ => DEAD,
    }
}

/// Counts a connection picked for `worker` until the worker accepts it. A plain
/// read-modify-write (the BPF target has no 32-bit atomics in `core`): two picks for one
/// worker on two CPUs at the same instant, or a worker's decrement in between, may lose one
/// step; the daemon's reset every second bounds the drift, as the SYN limiter's lost updates
/// are bounded by its refill.
#[inline(always)]
fn add_pending(worker: u32) {
    if let Some(load) = WORKER_LOAD.get_ptr_mut(worker) {
        // SAFETY: a pointer to the map value, valid for this run; volatile so that the
        // compiler keeps one load and one store of the 4-byte field.
        unsafe {
            let field = &raw mut (*load).pending;
            field.write_volatile(field.read_volatile().wrapping_add(1));
        }
    }
}

/// The live worker with the lowest score, or `DEAD`; the scan starts at `start` so that ties
/// spread out. Plain integers only: the verifier has to walk every iteration.
#[inline(always)]
fn least_loaded(workers: u32, start: u32) -> u32 {
    let mut best = DEAD;
    let mut best_score = DEAD;
    let mut i = 0;
    while i < MAX_WORKERS {
        if i >= workers {
            break;
        }
        let w = (start + i) % workers;
        let s = score(w);
        if s < best_score {
            best = w;
            best_score = s;
        }
        i += 1;
    }
    best
}

/// Two distinct workers from the hash; the less loaded live one wins.
#[inline(always)]
fn two_choices(workers: u32, hash: u32) -> u32 {
    let a = hash % workers;
    if workers == 1 {
        return a;
    }
    let b = (a + 1 + (hash >> 16) % (workers - 1)) % workers;
    let (sa, sb) = (score(a), score(b));
    if sa == DEAD && sb == DEAD {
        return least_loaded(workers, a);
    }
    if sb < sa { b } else { a }
}

#[inline(always)]
fn try_reuseport_select(ctx: &SkReuseportContext) -> Result<u32, ()> {
    // SAFETY: `sk` of an sk_reuseport context is the listening socket the kernel looked up; the
    // verifier types it as a non-null PTR_TO_SOCKET whose fields may be read, one load at a
    // constant offset each (volatile, so LLVM cannot turn them into pointer arithmetic, which
    // the verifier forbids on sockets).
    let key = unsafe {
        let sk = (*ctx.md).__bindgen_anon_3.sk;
        let family = read_volatile(&raw const (*sk).family);
        let port = read_volatile(&raw const (*sk).src_port);
        let addr = if family == AF_INET {
            [read_volatile(&raw const (*sk).src_ip4), 0, 0, 0]
        } else {
            [
                read_volatile(&raw const (*sk).src_ip6[0]),
                read_volatile(&raw const (*sk).src_ip6[1]),
                read_volatile(&raw const (*sk).src_ip6[2]),
                read_volatile(&raw const (*sk).src_ip6[3]),
            ]
        };
        ListenerKey { family, port, addr }
    };
    // SAFETY: a plain hash map lookup; the value is a u32 copied out at once.
    let slot = unsafe { *LISTENER_SLOTS.get(&key).ok_or(())? };
    let config = SPREAD_CONFIG.get(0).ok_or(())?;
    let workers = config.workers.min(MAX_WORKERS);
    if workers == 0 {
        return Err(());
    }
    // SAFETY: reading the hash field of the context.
    let hash = unsafe { (*ctx.md).hash };
    let worker = if config.policy == SpreadPolicy::LeastLoaded as u32 {
        least_loaded(workers, hash % workers)
    } else if config.policy == SpreadPolicy::P2c as u32 {
        two_choices(workers, hash)
    } else {
        hash % workers
    };
    if worker == DEAD {
        return Err(());
    }
    // A failed selection (the worker's socket is gone) leaves the pick to the kernel.
    WORKER_SOCKETS
        .select_reuseport(ctx, slot * MAX_WORKERS + worker)
        .map_err(|_| ())?;
    if config.policy != SpreadPolicy::Hash as u32 {
        add_pending(worker);
    }
    Ok(sk_action::SK_PASS)
}
