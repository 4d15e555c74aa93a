//! Loads the embedded eBPF object, pins (or reuses) the instance's maps, and attaches the
//! packet filter to interfaces.
use std::{
    fmt,
    path::{Path, PathBuf},
};

use std::os::fd::AsFd;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, ProgramArray, ReusePortSockArray},
    programs::{
        LinkOrder, SchedClassifier, SkReuseport, TcAttachType, TestRun, TestRunOptions, Xdp,
        XdpMode,
        tc::{self, NlOptions, TcAttachOptions},
    },
};
use proxy_common::{
    IFINDEX_MAX, IfaceName, ListenerKey, MAX_IFACES, MAX_LISTENERS, MAX_WORKERS, RateConfig,
    SYN_PROXY_PORT_WORDS, SpreadConfig, SpreadPolicy, SynProxyConfig, maps, programs,
};
use tracing::{info, warn};

use super::KernelError;
use crate::config::AttachMode;

/// The kernel programs, built by `build.rs` (empty when built with `PROXY_SKIP_EBPF`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/proxy-ebpf.o"));

/// How the filter ended up attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedAs {
    XdpNative,
    XdpGeneric,
    TcTcx,
    TcClsact,
}

impl fmt::Display for AttachedAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::XdpNative => "xdp (native)",
            Self::XdpGeneric => "xdp (generic)",
            Self::TcTcx => "tc (tcx)",
            Self::TcClsact => "tc (clsact)",
        })
    }
}

/// The loaded programs and maps of one instance. Dropping it detaches every program it
/// attached; the pinned maps stay.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    attached: Vec<(String, AttachedAs)>,
    /// The link of each attachment (netlink clsact has none that can be kept).
    links: Vec<(String, AttachedAs, LinkId)>,
    /// Interfaces that have their own block of counters (index = slot - 1).
    counter_slots: Vec<String>,
    /// Why `xdp_synproxy` could not be loaded, if it could not.
    syn_proxy_error: Option<String>,
}

/// A link this process owns.
enum LinkId {
    Xdp(aya::programs::xdp::XdpLinkId),
    Tc(aya::programs::tc::SchedClassifierLinkId),
}

impl AttachedAs {
    /// Suffix of a kept link's pin: `<pin_dir>/links/<iface>:<suffix>` (bpffs refuses '.' in
    /// names; ':' cannot appear in an interface name).
    fn suffix(self) -> &'static str {
        match self {
            Self::XdpNative => "xdp-native",
            Self::XdpGeneric => "xdp-generic",
            Self::TcTcx => "tcx",
            Self::TcClsact => "clsact",
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        [Self::XdpNative, Self::XdpGeneric, Self::TcTcx]
            .into_iter()
            .find(|a| a.suffix() == s)
    }

    /// Whether an attachment of this kind satisfies the configured mode.
    fn satisfies(self, mode: AttachMode) -> bool {
        match mode {
            AttachMode::Auto => true,
            AttachMode::Xdp => self == Self::XdpNative,
            AttachMode::XdpGeneric => self == Self::XdpGeneric,
            AttachMode::Tc => matches!(self, Self::TcTcx | Self::TcClsact),
            AttachMode::None => false,
        }
    }
}

impl Datapath {
    /// Whether this binary carries kernel programs.
    #[must_use]
    pub fn available() -> bool {
        !OBJECT.is_empty()
    }

    /// Loads the object; maps already pinned in `pin_dir` are reused (so their contents survive
    /// a restart), missing ones are created and pinned there.
    pub fn load(pin_dir: &Path) -> Result<Self, KernelError> {
        if !Self::available() {
            return Err(KernelError::NoKernelPrograms);
        }
        // Only root looks into the pins (0700), the instance's and the one above it.
        let private = |dir: &Path| {
            crate::safe_fs::make_private_dir(dir).map_err(|source| KernelError::PinDir {
                path: dir.to_owned(),
                source,
            })
        };
        if let Some(parent) = pin_dir.parent() {
            private(parent)?;
        }
        private(pin_dir)?;
        let paths: Vec<(&'static str, PathBuf)> =
            maps::PINNED.iter().map(|m| (*m, pin_dir.join(m))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(OBJECT).map_err(|source| KernelError::Load {
            pin_dir: pin_dir.to_owned(),
            source: Box::new(source),
        })?;
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            attached: Vec::new(),
            links: Vec::new(),
            counter_slots: Vec::new(),
            syn_proxy_error: None,
        })
    }

    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Interfaces attached so far, and how.
    #[must_use]
    pub fn attached(&self) -> &[(String, AttachedAs)] {
        &self.attached
    }

    /// The XDP program, loaded into the kernel on first use.
    pub fn xdp(&mut self) -> Result<&mut Xdp, KernelError> {
        let name = programs::XDP_FILTER;
        let prog: &mut Xdp = self.xdp_program(name)?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| load_error(name, &e))?;
            // Its helpers need Linux 6.0; without it the filter's tail call finds nothing and
            // the packet passes: the filter works on, `syn_proxy` is refused.
            if let Err(e) = self.load_syn_proxy() {
                warn!("the XDP SYN proxy is unavailable (it needs Linux 6.0): {e}");
                self.syn_proxy_error = Some(e.to_string());
            }
        }
        let prog: &mut Xdp = self.xdp_program(name)?;
        Ok(prog)
    }

    /// The XDP program `name` of the object.
    fn xdp_program(&mut self, name: &'static str) -> Result<&mut Xdp, KernelError> {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
                kind: "XDP program",
                name,
            })
    }

    /// The map `name` of the object.
    fn map_named(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, KernelError> {
        self.ebpf
            .map_mut(name)
            .ok_or(KernelError::Missing { kind: "map", name })
    }

    /// Loads `xdp_synproxy` and puts it where the filter's tail call finds it.
    fn load_syn_proxy(&mut self) -> Result<(), KernelError> {
        let name = programs::XDP_SYNPROXY;
        let prog: &mut Xdp = self.xdp_program(name)?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| load_error(name, &e))?;
        }
        let fd = prog
            .fd()
            .map_err(|e| load_error(name, &e))?
            .try_clone()
            .map_err(|e| KernelError::ProgramLoad {
                name,
                detail: format!("duplicating its fd: {e}"),
            })?;
        let map = self.map_named(maps::SYN_PROXY_PROG)?;
        let mut array = ProgramArray::try_from(map).map_err(|source| KernelError::Map {
            op: "open",
            map: maps::SYN_PROXY_PROG,
            source,
        })?;
        array.set(0, &fd, 0).map_err(|source| KernelError::Map {
            op: "write",
            map: maps::SYN_PROXY_PROG,
            source,
        })
    }

    /// The TC classifier, loaded into the kernel on first use.
    pub fn tc(&mut self) -> Result<&mut SchedClassifier, KernelError> {
        let name = programs::TC_FILTER;
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
                kind: "TC classifier",
                name,
            })?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| load_error(name, &e))?;
        }
        Ok(prog)
    }

    /// Attaches the filter to `iface` in `mode`. `Auto` tries native XDP, then generic XDP,
    /// then TC, and logs why each earlier one failed.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<AttachedAs, KernelError> {
        self.assign_counter_slot(iface)?;
        if let Some(kept) = self.take_over(iface, mode)? {
            info!(iface, attached = %kept, "took over the packet filter kept attached by the previous run");
            self.attached.push((iface.to_owned(), kept));
            return Ok(kept);
        }
        let attached = match mode {
            AttachMode::None => {
                return Err(KernelError::Attach {
                    iface: iface.to_owned(),
                    reason: "attach mode is none".into(),
                });
            }
            AttachMode::Xdp => self.attach_xdp(iface, XdpMode::Driver)?,
            AttachMode::XdpGeneric => self.attach_xdp(iface, XdpMode::Skb)?,
            AttachMode::Tc => self.attach_tc(iface)?,
            AttachMode::Auto => {
                let mut reasons = Vec::new();
                let mut result = None;
                for (label, attempt) in [
                    ("native XDP", AttachMode::Xdp),
                    ("generic XDP", AttachMode::XdpGeneric),
                    ("TC", AttachMode::Tc),
                ] {
                    let outcome = match attempt {
                        AttachMode::Xdp => self.attach_xdp(iface, XdpMode::Driver),
                        AttachMode::XdpGeneric => self.attach_xdp(iface, XdpMode::Skb),
                        _ => self.attach_tc(iface),
                    };
                    match outcome {
                        Ok(a) => {
                            result = Some(a);
                            break;
                        }
                        Err(e) => {
                            info!(iface, "attach: {label} not possible: {e}");
                            reasons.push(format!("{label}: {e}"));
                        }
                    }
                }
                result.ok_or_else(|| KernelError::Attach {
                    iface: iface.to_owned(),
                    reason: reasons.join("; "),
                })?
            }
        };
        info!(iface, mode = mode.as_str(), attached = %attached, "packet filter attached");
        self.attached.push((iface.to_owned(), attached));
        Ok(attached)
    }

    fn attach_xdp(&mut self, iface: &str, mode: XdpMode) -> Result<AttachedAs, KernelError> {
        let err = |reason: String| KernelError::Attach {
            iface: iface.to_owned(),
            reason,
        };
        let id = self.xdp()?.attach(iface, mode).map_err(|e| {
            err(format!(
                "{}: {}",
                if mode == XdpMode::Driver {
                    "native XDP"
                } else {
                    "generic XDP"
                },
                chain(&e)
            ))
        })?;
        let how = if mode == XdpMode::Driver {
            AttachedAs::XdpNative
        } else {
            AttachedAs::XdpGeneric
        };
        self.links.push((iface.to_owned(), how, LinkId::Xdp(id)));
        Ok(how)
    }

    fn attach_tc(&mut self, iface: &str) -> Result<AttachedAs, KernelError> {
        let prog = self.tc()?;
        match prog.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ) {
            Ok(id) => {
                self.links
                    .push((iface.to_owned(), AttachedAs::TcTcx, LinkId::Tc(id)));
                return Ok(AttachedAs::TcTcx);
            }
            Err(e) => info!(
                iface,
                "tcx attach not possible ({}); trying clsact",
                chain(&e)
            ),
        }
        if let Err(e) = tc::qdisc_add_clsact(iface) {
            // EEXIST: a clsact qdisc is already there, which is what we need.
            if !matches!(&e, tc::TcError::IoError(io) if io.kind() == std::io::ErrorKind::AlreadyExists)
            {
                warn!(iface, "adding clsact qdisc: {e}");
            }
        }
        prog.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .map_err(|e| KernelError::Attach {
            iface: iface.to_owned(),
            reason: format!("tc (clsact): {}", chain(&e)),
        })?;
        Ok(AttachedAs::TcClsact)
    }

    /// Sets the in-kernel SYN rate limit (live: read for every SYN).
    pub fn set_rate_config(&mut self, config: RateConfig) -> Result<(), KernelError> {
        self.set_entry0(maps::RATE_CONFIG, config)
    }

    /// Writes entry 0 of the one-entry config array `name`.
    fn set_entry0<T: aya::Pod>(&mut self, name: &'static str, value: T) -> Result<(), KernelError> {
        let map = self.map_named(name)?;
        let mut array: Array<_, T> = Array::try_from(map).map_err(|source| KernelError::Map {
            op: "open",
            map: name,
            source,
        })?;
        array.set(0, value, 0).map_err(|source| KernelError::Map {
            op: "write",
            map: name,
            source,
        })
    }

    /// Turns the XDP SYN proxy on for `listeners` with the options its SYN-ACKs advertise, or
    /// off (`config.enabled` 0, no listeners). A dual-stack wildcard IPv6 listener also gets
    /// IPv4's wildcard.
    pub fn set_syn_proxy(
        &mut self,
        config: SynProxyConfig,
        listeners: &[std::net::SocketAddr],
    ) -> Result<(), KernelError> {
        if config.enabled != 0
            && let Some(e) = &self.syn_proxy_error
        {
            return Err(KernelError::ProgramLoad {
                name: programs::XDP_SYNPROXY,
                detail: format!("{e}; the SYN proxy needs Linux 6.0 or later"),
            });
        }
        let map_err = |op, map| move |source| KernelError::Map { op, map, source };
        let mut keys = Vec::new();
        for addr in listeners {
            let key = super::spread::listener_key(*addr);
            if addr.ip().is_unspecified() && addr.is_ipv6() {
                keys.push(ListenerKey {
                    family: 2,
                    port: key.port,
                    addr: [0; 4],
                });
            }
            keys.push(key);
        }
        // Off first, so no packet sees a half-written set.
        self.set_entry0(
            maps::SYN_PROXY_CONFIG,
            SynProxyConfig {
                enabled: 0,
                ..config
            },
        )?;
        {
            let map = self.map_named(maps::SYN_PROXY_LISTENERS)?;
            let mut hash: HashMap<_, ListenerKey, u32> =
                HashMap::try_from(map).map_err(map_err("open", maps::SYN_PROXY_LISTENERS))?;
            let old: Vec<ListenerKey> = hash.keys().filter_map(Result::ok).collect();
            for k in old {
                let _ = hash.remove(&k);
            }
            for k in &keys {
                hash.insert(k, 1, 0)
                    .map_err(map_err("write", maps::SYN_PROXY_LISTENERS))?;
            }
        }
        let map = self.map_named(maps::SYN_PROXY_PORTS)?;
        let mut ports: Array<_, u32> =
            Array::try_from(map).map_err(map_err("open", maps::SYN_PROXY_PORTS))?;
        let mut words = vec![0u32; SYN_PROXY_PORT_WORDS as usize];
        for k in &keys {
            words[(k.port / 32) as usize] |= 1 << (k.port % 32);
        }
        for (i, w) in (0u32..).zip(&words) {
            if *w != 0 || ports.get(&i, 0).unwrap_or(0) != 0 {
                ports
                    .set(i, *w, 0)
                    .map_err(map_err("write", maps::SYN_PROXY_PORTS))?;
            }
        }
        if config.enabled != 0 && !keys.is_empty() {
            self.set_entry0(maps::SYN_PROXY_CONFIG, config)?;
        }
        Ok(())
    }

    /// Sets the spreading policy (live: the program reads it for every new connection).
    pub fn set_spread_policy(
        &mut self,
        policy: SpreadPolicy,
        workers: u32,
    ) -> Result<(), KernelError> {
        self.set_entry0(
            maps::SPREAD_CONFIG,
            SpreadConfig {
                policy: policy as u32,
                workers,
            },
        )
    }

    /// Registers one listener's worker sockets (index = worker) under `slot` and attaches the
    /// `sk_reuseport` program to their group. The sockets must already be bound with
    /// `SO_REUSEPORT`.
    pub fn spread_listener<S: AsFd + std::os::fd::AsRawFd>(
        &mut self,
        slot: u32,
        key: ListenerKey,
        sockets: &[S],
    ) -> Result<(), KernelError> {
        let fail = |what: String| KernelError::Spread(what);
        if slot >= MAX_LISTENERS {
            return Err(fail(format!("more than {MAX_LISTENERS} listeners")));
        }
        if sockets.len() > MAX_WORKERS as usize {
            return Err(fail(format!("more than {MAX_WORKERS} workers")));
        }
        {
            let map = self.map_named(maps::LISTENER_SLOTS)?;
            let mut slots: HashMap<_, ListenerKey, u32> =
                HashMap::try_from(map).map_err(|source| KernelError::Map {
                    op: "open",
                    map: maps::LISTENER_SLOTS,
                    source,
                })?;
            slots
                .insert(key, slot, 0)
                .map_err(|source| KernelError::Map {
                    op: "insert",
                    map: maps::LISTENER_SLOTS,
                    source,
                })?;
        }
        {
            let map = self.map_named(maps::WORKER_SOCKETS)?;
            let mut array: ReusePortSockArray<_> =
                ReusePortSockArray::try_from(map).map_err(|source| KernelError::Map {
                    op: "open",
                    map: maps::WORKER_SOCKETS,
                    source,
                })?;
            for (worker, socket) in (0u32..).zip(sockets) {
                let index = slot * MAX_WORKERS + worker;
                array
                    .set(index, socket, 0)
                    .map_err(|source| KernelError::Map {
                        op: "insert",
                        map: maps::WORKER_SOCKETS,
                        source,
                    })?;
            }
        }
        let name = programs::REUSEPORT_SELECT;
        let prog: &mut SkReuseport = self
            .ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
                kind: "sk_reuseport program",
                name,
            })?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| load_error(name, &e))?;
        }
        let first = sockets
            .first()
            .ok_or_else(|| fail("a listener without sockets".into()))?;
        prog.attach(first.as_fd()).map_err(|e| {
            fail(format!(
                "attaching {name} to the listener's SO_REUSEPORT group: {}",
                chain(&e)
            ))
        })?;
        Ok(())
    }

    /// Gives `iface` its own block of counters (slots in attach order; slot 0 stays for
    /// interfaces without one).
    fn assign_counter_slot(&mut self, iface: &str) -> Result<(), KernelError> {
        if self.counter_slots.iter().any(|i| i == iface) {
            return Ok(());
        }
        let slot = u32::try_from(self.counter_slots.len() + 1).unwrap_or(u32::MAX);
        if slot >= MAX_IFACES {
            warn!(
                iface,
                "more than {} interfaces: this one's packets are counted under \"other\"",
                MAX_IFACES - 1
            );
            return Ok(());
        }
        let c_name = std::ffi::CString::new(iface).map_err(|_| KernelError::Attach {
            iface: iface.to_owned(),
            reason: "invalid name".into(),
        })?;
        // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 || ifindex >= IFINDEX_MAX {
            // Unknown here (attach will say so) or too large for the slot array: "other".
            return Ok(());
        }
        let mut name: IfaceName = [0; 16];
        for (d, s) in name.iter_mut().zip(iface.bytes().take(15)) {
            *d = s;
        }
        let map_err = |op: &'static str, map: &'static str| {
            move |source| KernelError::Map { op, map, source }
        };
        let slots = self.map_named(maps::IFACE_SLOTS)?;
        let mut slots: Array<_, u32> =
            Array::try_from(slots).map_err(map_err("open", maps::IFACE_SLOTS))?;
        slots
            .set(ifindex, slot, 0)
            .map_err(map_err("write", maps::IFACE_SLOTS))?;
        let names = self.map_named(maps::IFACE_NAMES)?;
        let mut names: Array<_, IfaceName> =
            Array::try_from(names).map_err(map_err("open", maps::IFACE_NAMES))?;
        names
            .set(slot, name, 0)
            .map_err(map_err("write", maps::IFACE_NAMES))?;
        self.counter_slots.push(iface.to_owned());
        Ok(())
    }

    fn link_dir(&self) -> PathBuf {
        self.pin_dir.join("links")
    }

    /// Adopts a link a previous run kept attached on `iface` (see [`Datapath::keep_attached`]):
    /// its program is replaced by ours in place, so filtering never stops. A kept link of a
    /// kind the configured mode does not allow is detached instead.
    fn take_over(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Option<AttachedAs>, KernelError> {
        let Ok(entries) = std::fs::read_dir(self.link_dir()) else {
            return Ok(None);
        };
        let kept = entries.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (i, suffix) = name.rsplit_once(':')?;
            (i == iface).then(|| (e.path(), AttachedAs::from_suffix(suffix)))
        });
        let Some((path, how)) = kept else {
            return Ok(None);
        };
        let err = |reason: String| KernelError::Attach {
            iface: iface.to_owned(),
            reason,
        };
        let link = aya::programs::links::PinnedLink::from_pin(&path)
            .map_err(|e| err(format!("reading the kept link {}: {e}", path.display())))?
            .unpin()
            .map_err(|e| err(format!("unpinning {}: {e}", path.display())))?;
        let Some(how) = how.filter(|h| h.satisfies(mode)) else {
            // Dropping the last reference detaches it.
            drop(link);
            info!(iface, "a kept packet filter of another kind was detached");
            return Ok(None);
        };
        match how {
            AttachedAs::XdpNative | AttachedAs::XdpGeneric => {
                let link = aya::programs::xdp::XdpLink::try_from(link)
                    .map_err(|e| err(format!("kept link: {e}")))?;
                let id = self
                    .xdp()?
                    .attach_to_link(link)
                    .map_err(|e| err(format!("replacing the kept XDP program: {}", chain(&e))))?;
                self.links.push((iface.to_owned(), how, LinkId::Xdp(id)));
            }
            _ => {
                let link = aya::programs::tc::SchedClassifierLink::try_from(link)
                    .map_err(|e| err(format!("kept link: {e}")))?;
                let id = self
                    .tc()?
                    .attach_to_link(link)
                    .map_err(|e| err(format!("replacing the kept TC program: {}", chain(&e))))?;
                self.links.push((iface.to_owned(), how, LinkId::Tc(id)));
            }
        }
        Ok(Some(how))
    }

    /// Keeps the filter attached after this process exits: every link is pinned under
    /// `<pin_dir>/links/` (the blocklist keeps protecting the host during a restart; the next
    /// run takes the links over). A clsact (netlink) attachment cannot be kept.
    pub fn keep_attached(&mut self) -> Result<usize, KernelError> {
        let dir = self.link_dir();
        crate::safe_fs::make_private_dir(&dir).map_err(|source| KernelError::PinDir {
            path: dir.clone(),
            source,
        })?;
        let mut kept = 0;
        for (iface, how, id) in std::mem::take(&mut self.links) {
            let path = dir.join(format!("{iface}:{}", how.suffix()));
            let err = |reason: String| KernelError::Attach {
                iface: iface.clone(),
                reason,
            };
            let fd_link = match id {
                LinkId::Xdp(id) => {
                    let link = self.xdp()?.take_link(id).map_err(|e| err(chain(&e)))?;
                    aya::programs::links::FdLink::try_from(link)
                        .map_err(|e| err(format!("not a bpf_link: {e}")))?
                }
                LinkId::Tc(id) => {
                    let link = self.tc()?.take_link(id).map_err(|e| err(chain(&e)))?;
                    aya::programs::links::FdLink::try_from(link)
                        .map_err(|e| err(format!("not a bpf_link: {e}")))?
                }
            };
            let _ = std::fs::remove_file(&path);
            fd_link
                .pin(&path)
                .map_err(|e| err(format!("pinning {}: {}", path.display(), chain(&e))))?;
            kept += 1;
        }
        for (iface, how) in &self.attached {
            if *how == AttachedAs::TcClsact {
                warn!(
                    iface,
                    "a clsact TC filter cannot be kept attached; it is removed at exit"
                );
            }
        }
        Ok(kept)
    }

    /// Runs the XDP program once on `packet` (`BPF_PROG_TEST_RUN`) and returns its action.
    pub fn test_run_xdp(&mut self, packet: &[u8]) -> Result<u32, KernelError> {
        let name = programs::XDP_FILTER;
        let prog = self.xdp()?;
        run_once(prog, packet).map_err(|source| KernelError::TestRun { name, source })
    }

    /// Runs the XDP program `repeat` times on `packet` (`BPF_PROG_TEST_RUN`): its action and
    /// the kernel's own time per run.
    pub fn time_xdp(
        &mut self,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), KernelError> {
        let name = programs::XDP_FILTER;
        let prog = self.xdp()?;
        let mut out = vec![0u8; packet.len() + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|source| KernelError::TestRun { name, source })?;
        Ok((result.return_value, result.duration))
    }

    /// Runs the XDP program once on `packet`: its action and the frame as the program left it
    /// (what `XDP_TX` sends).
    pub fn test_run_xdp_out(&mut self, packet: &[u8]) -> Result<(u32, Vec<u8>), KernelError> {
        let name = programs::XDP_FILTER;
        let prog = self.xdp()?;
        let mut out = vec![0u8; packet.len() + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(|source| KernelError::TestRun { name, source })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// Runs the TC classifier once on `packet` and returns its action.
    pub fn test_run_tc(&mut self, packet: &[u8]) -> Result<u32, KernelError> {
        let name = programs::TC_FILTER;
        let prog = self.tc()?;
        run_once(prog, packet).map_err(|source| KernelError::TestRun { name, source })
    }
}

fn run_once<P>(prog: &P, packet: &[u8]) -> Result<u32, aya::programs::ProgramError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let mut out = vec![0u8; packet.len() + 256];
    let result = prog.test_run(TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    })?;
    Ok(result.return_value)
}

/// A load error with the verifier's verdict (the last lines of its log) rather than the whole
/// log, which goes to the debug log.
fn load_error(name: &'static str, e: &aya::programs::ProgramError) -> KernelError {
    let full = chain(e);
    tracing::debug!(program = name, "program load failed: {full}");
    let lines: Vec<&str> = full.lines().collect();
    let detail = if lines.len() <= 6 {
        lines.join(" | ")
    } else {
        format!(
            "{} | ... | {}",
            lines[0],
            lines[lines.len() - 5..].join(" | ")
        )
    };
    KernelError::ProgramLoad { name, detail }
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
