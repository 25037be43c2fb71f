//! The XDP filter (`bpf/xdp_filter.c`): loads it with aya, attaches it to the datapath's
//! interfaces, registers AF_XDP sockets in its XSKMAP and keeps its service maps equal to
//! the control thread's [`ServiceTable`].
//!
//! Dropping the [`XdpFilter`] detaches the program from every interface and frees its
//! maps (bpf links and map fds close with it; nothing is pinned), unless its links were
//! taken to hold the interfaces for the next start ([`XdpFilter::hold`], `hold.rs`).

use std::collections::HashSet;
use std::ffi::CString;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;

use super::hold::{self, HeldLink};

use crate::forward::nexthop::MacAddr;
use crate::service::{ClassifierRule, ForwardMethod, Protocol, ServiceKey, ServiceTable};

/// The compiled filter, built by build.rs from `bpf/xdp_filter.c`. The ELF parser needs it
/// 8-byte aligned, which plain `include_bytes!` does not promise.
static FILTER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_filter.o"));

/// XSKMAP slots reserved per interface: queue q of the i-th interface sits at
/// `i * SLOTS_PER_IFACE + q`. The map has 256 entries (MAX_SOCKETS in the C source).
pub const SLOTS_PER_IFACE: u32 = 32;
/// Interfaces one filter serves.
pub const MAX_IFACES: usize = 8;
/// Classifier rules the filter holds (MAX_CLASSIFIERS in the C source).
pub const MAX_CLASSIFIERS: usize = 16;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;
/// Protocol 0, port 0 in `services`: "this address is a VIP" (ICMP errors, fragments); in
/// `reals`: "this address is a NAT real server" (the fragments of its replies).
const PROTO_ANY: u8 = 0;

/// Key of the `services` and `reals` maps (`struct addr_key`).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AddrKey {
    addr: [u8; 16],
    /// Network byte order.
    port: [u8; 2],
    proto: u8,
    family: u8,
}

// SAFETY: repr(C) with fields of 16 + 2 + 1 + 1 bytes and no padding; every bit pattern is
// a valid value.
unsafe impl aya::Pod for AddrKey {}

impl AddrKey {
    fn new(addr: IpAddr, port: u16, proto: u8) -> AddrKey {
        let mut a = [0u8; 16];
        let family = match addr {
            IpAddr::V4(v4) => {
                a[..4].copy_from_slice(&v4.octets());
                FAMILY_V4
            }
            IpAddr::V6(v6) => {
                a = v6.octets();
                FAMILY_V6
            }
        };
        AddrKey {
            addr: a,
            port: port.to_be_bytes(),
            proto,
            family,
        }
    }
}

/// Key of the `macs` map (`struct mac_key`): a unicast MAC interface `ifindex` takes
/// frames for.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MacKey {
    ifindex: u32,
    mac: [u8; 6],
    pad: [u8; 2],
}

// SAFETY: repr(C), 4 + 6 + 2 bytes with no padding; every bit pattern is a valid value.
unsafe impl aya::Pod for MacKey {}

impl MacKey {
    fn new(ifindex: u32, mac: MacAddr) -> MacKey {
        MacKey {
            ifindex,
            mac: mac.0,
            pad: [0; 2],
        }
    }
}

/// The own MAC address of interface `iface`, from sysfs.
pub fn interface_mac(iface: &str) -> std::io::Result<MacAddr> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path)?;
    text.trim().parse().map_err(|e: String| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: {e}"))
    })
}

/// A classifier rule as the filter holds it (`struct classifier`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawClassifier {
    net: [u8; 16],
    mask: [u8; 16],
    port_lo: u16,
    port_hi: u16,
    proto: u8,
    family: u8,
    valid: u8,
    pad: u8,
}

// SAFETY: repr(C), 16 + 16 + 2 + 2 + 4 bytes with no padding; every bit pattern is valid.
unsafe impl aya::Pod for RawClassifier {}

impl RawClassifier {
    fn from_rule(r: &ClassifierRule) -> RawClassifier {
        let (family, bits, addr) = match r.dst.addr {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                (FAMILY_V4, 32u32, b)
            }
            IpAddr::V6(a) => (FAMILY_V6, 128u32, a.octets()),
        };
        let len = u32::from(r.dst.len).min(bits);
        let mut mask = [0u8; 16];
        for (i, m) in mask.iter_mut().enumerate() {
            let covered = len.saturating_sub(i as u32 * 8).min(8);
            *m = if covered == 0 {
                0
            } else {
                0xffu8 << (8 - covered)
            };
        }
        let mut net = [0u8; 16];
        for i in 0..16 {
            net[i] = addr[i] & mask[i];
        }
        RawClassifier {
            net,
            mask,
            port_lo: r.ports.0,
            port_hi: r.ports.1,
            proto: r.protocol.map_or(0, Protocol::number),
            family,
            valid: 1,
            pad: 0,
        }
    }
}

/// What the filter's maps should hold for a table.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) services: HashSet<AddrKey>,
    pub(crate) reals: HashSet<AddrKey>,
    pub(crate) classifiers: Vec<RawClassifier>,
}

/// Derives the map contents from a snapshot: every tuple service and its VIP marker, every
/// NAT real server (both protocols for fwmark services, whose protocol the key does not
/// fix) and its address alone (protocol 0, port 0: the filter redirects the fragments of
/// its replies, which carry no ports after the first), and the classifier rules.
pub(crate) fn wanted(table: &ServiceTable) -> Result<Wanted, FilterError> {
    let mut w = Wanted::default();
    for svc in &table.services {
        let protocols: &[Protocol] = match svc.config.key {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => {
                w.services
                    .insert(AddrKey::new(addr, port, protocol.number()));
                w.services.insert(AddrKey::new(addr, 0, PROTO_ANY));
                match protocol {
                    Protocol::Tcp => &[Protocol::Tcp],
                    Protocol::Udp => &[Protocol::Udp],
                }
            }
            ServiceKey::Fwmark { .. } => &[Protocol::Tcp, Protocol::Udp],
        };
        for d in &svc.dests {
            if d.server.method != ForwardMethod::Masquerade {
                continue;
            }
            for p in protocols {
                w.reals
                    .insert(AddrKey::new(d.server.addr, d.server.port, p.number()));
            }
            w.reals.insert(AddrKey::new(d.server.addr, 0, PROTO_ANY));
        }
    }
    if table.classifiers.len() > MAX_CLASSIFIERS {
        return Err(FilterError::TooManyClassifiers(table.classifiers.len()));
    }
    w.classifiers = table
        .classifiers
        .iter()
        .map(RawClassifier::from_rule)
        .collect();
    Ok(w)
}

/// How the filter is attached to an interface.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode if the driver takes it, else generic.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode.
    Generic,
}

impl std::str::FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<XdpMode, String> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "native" | "drv" => Ok(XdpMode::Native),
            "generic" | "skb" => Ok(XdpMode::Generic),
            _ => Err(format!("unknown XDP mode '{s}' (auto, native, generic)")),
        }
    }
}

/// Errors of loading, attaching and updating the filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The embedded object did not load into the kernel.
    #[error("loading the XDP filter: {0}")]
    Load(String),
    /// An interface name is unknown.
    #[error("no interface named '{0}'")]
    NoInterface(String),
    /// Too many interfaces for the XSKMAP layout.
    #[error("the XDP filter serves at most {MAX_IFACES} interfaces")]
    TooManyInterfaces,
    /// Attaching failed.
    #[error("attaching the XDP filter to {iface} in {mode:?} mode: {reason}")]
    Attach {
        /// The interface.
        iface: String,
        /// The mode that was tried last.
        mode: XdpMode,
        /// What the kernel said.
        reason: String,
    },
    /// An interface's own MAC address could not be read.
    #[error("reading the MAC address of {iface}: {reason}")]
    Mac {
        /// The interface.
        iface: String,
        /// What went wrong.
        reason: String,
    },
    /// A socket's queue or interface has no XSKMAP slot.
    #[error("no XSKMAP slot for ifindex {ifindex} queue {queue}")]
    NoSlot {
        /// Interface index.
        ifindex: u32,
        /// Queue.
        queue: u32,
    },
    /// A map update failed.
    #[error("updating XDP map {map}: {reason}")]
    Map {
        /// The map.
        map: &'static str,
        /// What the kernel said.
        reason: String,
    },
    /// More classifier rules than the filter holds.
    #[error("{0} classifier rules configured; the XDP filter holds at most {MAX_CLASSIFIERS}")]
    TooManyClassifiers(usize),
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> FilterError {
    move |e| FilterError::Map {
        map,
        reason: e.to_string(),
    }
}

/// An interface the filter is attached to.
#[derive(Clone, Debug)]
pub struct Attached {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Its own MAC address, as read when attaching.
    pub mac: MacAddr,
    /// The mode the kernel accepted.
    pub mode: XdpMode,
    /// First XSKMAP slot of its queues.
    pub slot_base: u32,
}

/// What a [`XdpFilter::sync`] changed.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Entries added to the services and reals maps.
    pub added: usize,
    /// Entries removed from them.
    pub removed: usize,
    /// Classifier rules now installed.
    pub classifiers: usize,
}

/// The loaded filter: its program, its maps and the interfaces it is attached to.
pub struct XdpFilter {
    // Maps first: they are dropped (fds closed) before the program and its links go.
    services: HashMap<MapData, AddrKey, u32>,
    reals: HashMap<MapData, AddrKey, u32>,
    locals: HashMap<MapData, AddrKey, u32>,
    macs: HashMap<MapData, MacKey, u32>,
    classifiers: Array<MapData, RawClassifier>,
    standby: Array<MapData, u32>,
    xsks: XskMap<MapData>,
    slots: HashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, u64>,
    /// The bpf link of each attached interface (parallel to `attached`); `None` while a
    /// held link waits in `pending` for [`XdpFilter::take_over`].
    links: Vec<Option<OwnedFd>>,
    /// Links a stopped run held, by interface, until this program replaces theirs.
    pending: Vec<HeldLink>,
    attached: Vec<Attached>,
    ebpf: Ebpf,
}

impl std::fmt::Debug for XdpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpFilter")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

/// The filter's own packet counters, summed over CPUs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterCounters {
    /// Packets redirected towards an AF_XDP socket.
    pub redirected: u64,
    /// Packets passed to the kernel (including `other_host`).
    pub passed: u64,
    /// Of those, frames for another host's MAC: the kernel drops them (PACKET_OTHERHOST).
    pub other_host: u64,
    /// Service packets dropped because this director is a pair's standby.
    pub standby_dropped: u64,
}

/// Interface index of `name`, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

impl XdpFilter {
    /// Loads the filter into the kernel (attached nowhere yet, maps empty).
    pub fn load() -> Result<XdpFilter, FilterError> {
        let load = |e: &dyn std::fmt::Display| FilterError::Load(e.to_string());
        let mut ebpf = Ebpf::load(FILTER_OBJ).map_err(|e| load(&e))?;
        {
            let prog: &mut Xdp = ebpf
                .program_mut("xdp_filter")
                .ok_or_else(|| load(&"program xdp_filter missing"))?
                .try_into()
                .map_err(|e| load(&e))?;
            prog.load().map_err(|e| load(&e))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| FilterError::Load(format!("map {name} missing")))
        };
        let services = take("services")?;
        let reals = take("reals")?;
        let locals = take("locals")?;
        let macs = take("macs")?;
        let classifiers = take("classifiers")?;
        let standby = take("standby")?;
        let xsks = take("xsks")?;
        let slots = take("iface_slots")?;
        let counters = take("counters")?;
        let conv = |e: aya::maps::MapError| FilterError::Load(e.to_string());
        Ok(XdpFilter {
            services: HashMap::try_from(services).map_err(conv)?,
            reals: HashMap::try_from(reals).map_err(conv)?,
            locals: HashMap::try_from(locals).map_err(conv)?,
            macs: HashMap::try_from(macs).map_err(conv)?,
            classifiers: Array::try_from(classifiers).map_err(conv)?,
            standby: Array::try_from(standby).map_err(conv)?,
            xsks: XskMap::try_from(xsks).map_err(conv)?,
            slots: HashMap::try_from(slots).map_err(conv)?,
            counters: PerCpuArray::try_from(counters).map_err(conv)?,
            links: Vec::new(),
            pending: Vec::new(),
            attached: Vec::new(),
            ebpf,
        })
    }

    /// Takes the links a stopped run held (`hold::take_over`): [`XdpFilter::attach`] then
    /// leaves those interfaces to them, and [`XdpFilter::take_over`] swaps this program in.
    pub fn adopt(&mut self, held: Vec<HeldLink>) {
        self.pending = held;
    }

    /// Replaces the held program with this one in each adopted link, atomically; call it
    /// once the maps and sockets are ready. Adopted links of interfaces this run does not
    /// serve are closed (their program detaches). Returns the interfaces taken over.
    pub fn take_over(&mut self) -> Result<Vec<String>, FilterError> {
        let prog = self.prog_fd()?;
        let mut taken = Vec::new();
        for (i, a) in self.attached.iter().enumerate() {
            if self.links[i].is_some() {
                continue;
            }
            let Some(at) = self.pending.iter().position(|h| h.ifindex == a.ifindex) else {
                continue;
            };
            let held = self.pending.swap_remove(at);
            hold::link_update(&held.link, prog).map_err(|e| FilterError::Attach {
                iface: a.name.clone(),
                mode: a.mode,
                reason: format!("taking over the held program: {e}"),
            })?;
            self.links[i] = Some(held.link);
            taken.push(a.name.clone());
        }
        self.pending.clear();
        Ok(taken)
    }

    /// Sets the filter to hold the interfaces for the next start: it drops every packet it
    /// would hand to fastlb, whether or not a socket is bound ([`hold::HOLD`]).
    pub fn hold(&mut self) -> Result<(), FilterError> {
        self.standby
            .set(0, hold::HOLD, 0)
            .map_err(map_err("standby"))
    }

    /// Takes the links out of the filter: the program stays attached as long as they are
    /// open, after the filter is gone.
    pub fn take_links(&mut self) -> Vec<HeldLink> {
        let mut out = Vec::new();
        for (a, l) in self.attached.iter().zip(self.links.iter_mut()) {
            if let Some(link) = l.take() {
                out.push(HeldLink {
                    ifindex: a.ifindex,
                    mode: a.mode,
                    link,
                });
            }
        }
        out
    }

    fn prog_fd(&self) -> Result<RawFd, FilterError> {
        let prog: &Xdp = self
            .ebpf
            .program("xdp_filter")
            .expect("checked at load")
            .try_into()
            .expect("checked at load");
        prog.fd()
            .map(|fd| fd.as_fd().as_raw_fd())
            .map_err(|e| FilterError::Load(e.to_string()))
    }

    /// While `on`, the filter drops every packet it would hand to fastlb (this director is
    /// the standby of a pair and must forward nothing); off, it redirects them again.
    pub fn set_standby(&mut self, on: bool) -> Result<(), FilterError> {
        self.standby
            .set(0, u32::from(on), 0)
            .map_err(map_err("standby"))
    }

    /// Makes the filter's set of the director's own addresses equal to `addrs`: packets
    /// from a NAT real server to one of them (health-check answers, management sessions)
    /// stay with the kernel.
    pub fn set_local_addresses(&mut self, addrs: &[IpAddr]) -> Result<(), FilterError> {
        let want: HashSet<AddrKey> = addrs
            .iter()
            .map(|a| AddrKey::new(*a, 0, PROTO_ANY))
            .collect();
        let have: HashSet<AddrKey> = self
            .locals
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("locals"))?;
        for k in want.difference(&have) {
            self.locals.insert(*k, 1, 0).map_err(map_err("locals"))?;
        }
        for k in have.difference(&want) {
            self.locals.remove(k).map_err(map_err("locals"))?;
        }
        Ok(())
    }

    /// Makes the MACs each attached interface takes frames for equal to its own (`own[i]`
    /// for the i-th attached interface; `None` keeps the one read when attaching) and
    /// `extra` (the configuration's `accept_macs`). Frames to any other unicast MAC pass
    /// to the kernel, which drops them.
    pub fn set_accepted_macs(
        &mut self,
        own: &[Option<MacAddr>],
        extra: &[MacAddr],
    ) -> Result<(), FilterError> {
        let mut want = HashSet::new();
        for (i, a) in self.attached.iter().enumerate() {
            let mac = own.get(i).copied().flatten().unwrap_or(a.mac);
            want.insert(MacKey::new(a.ifindex, mac));
            for m in extra {
                want.insert(MacKey::new(a.ifindex, *m));
            }
        }
        let have: HashSet<MacKey> = self
            .macs
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("macs"))?;
        // New entries first: a changing MAC is never without either for a moment.
        for k in want.difference(&have) {
            self.macs.insert(*k, 1, 0).map_err(map_err("macs"))?;
        }
        for k in have.difference(&want) {
            self.macs.remove(k).map_err(map_err("macs"))?;
        }
        Ok(())
    }

    /// Attaches the filter to `iface`. In [`XdpMode::Auto`] native mode is tried first and
    /// generic mode when the driver refuses.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<&Attached, FilterError> {
        if self.attached.len() >= MAX_IFACES {
            return Err(FilterError::TooManyInterfaces);
        }
        let ifindex = ifindex(iface).ok_or_else(|| FilterError::NoInterface(iface.into()))?;
        let mac = interface_mac(iface).map_err(|e| FilterError::Mac {
            iface: iface.into(),
            reason: e.to_string(),
        })?;
        let slot_base = self.attached.len() as u32 * SLOTS_PER_IFACE;
        // The interface's own MAC: without it the program would take no frame of it.
        self.macs
            .insert(MacKey::new(ifindex, mac), 1, 0)
            .map_err(map_err("macs"))?;
        // The slot entry goes in before the program sees traffic; without a socket at the
        // slot the program passes, so the order is harmless either way.
        self.slots
            .insert(ifindex, slot_base, 0)
            .map_err(map_err("iface_slots"))?;
        // A link the previous run held for this interface keeps its program attached until
        // take_over swaps this one in.
        if let Some(held) = self.pending.iter().find(|h| h.ifindex == ifindex) {
            self.attached.push(Attached {
                name: iface.to_string(),
                ifindex,
                mac,
                mode: held.mode,
                slot_base,
            });
            self.links.push(None);
            return Ok(self.attached.last().expect("just pushed"));
        }
        let prog = self.prog_fd()?;
        let tries: &[(XdpMode, XdpFlags)] = match mode {
            XdpMode::Auto => &[
                (XdpMode::Native, XdpFlags::DRV_MODE),
                (XdpMode::Generic, XdpFlags::SKB_MODE),
            ],
            XdpMode::Native => &[(XdpMode::Native, XdpFlags::DRV_MODE)],
            XdpMode::Generic => &[(XdpMode::Generic, XdpFlags::SKB_MODE)],
        };
        let mut last = String::new();
        for (m, flags) in tries {
            match hold::link_create(prog, ifindex, flags.bits()) {
                Ok(link) => {
                    self.attached.push(Attached {
                        name: iface.to_string(),
                        ifindex,
                        mac,
                        mode: *m,
                        slot_base,
                    });
                    self.links.push(Some(link));
                    return Ok(self.attached.last().expect("just pushed"));
                }
                Err(e) => last = format!("bpf_link_create: {e}"),
            }
        }
        let _ = self.slots.remove(&ifindex);
        let _ = self.macs.remove(&MacKey::new(ifindex, mac));
        Err(FilterError::Attach {
            iface: iface.to_string(),
            mode: tries.last().expect("non-empty").0,
            reason: last,
        })
    }

    /// The interfaces the filter is attached to, in attach order.
    pub fn attached(&self) -> &[Attached] {
        &self.attached
    }

    /// Points queue `queue` of interface `ifindex` at the AF_XDP socket `fd`.
    pub fn register_socket(
        &mut self,
        ifindex: u32,
        queue: u32,
        fd: RawFd,
    ) -> Result<(), FilterError> {
        let a = self
            .attached
            .iter()
            .find(|a| a.ifindex == ifindex)
            .filter(|_| queue < SLOTS_PER_IFACE)
            .ok_or(FilterError::NoSlot { ifindex, queue })?;
        let slot = a.slot_base + queue;
        self.xsks.set(slot, fd, 0).map_err(map_err("xsks"))
    }

    /// Makes the maps equal to `table`: adds what is new, deletes what is gone, rewrites the
    /// classifier array. Safe to call while workers run; the program sees each key
    /// appear or disappear atomically.
    pub fn sync(&mut self, table: &ServiceTable) -> Result<SyncReport, FilterError> {
        let w = wanted(table)?;
        let mut report = SyncReport::default();
        for (map, want, name) in [
            (&mut self.services, &w.services, "services"),
            (&mut self.reals, &w.reals, "reals"),
        ] {
            let have: HashSet<AddrKey> = map
                .keys()
                .collect::<Result<_, _>>()
                .map_err(map_err(name))?;
            for k in want.difference(&have) {
                map.insert(*k, 1, 0).map_err(map_err(name))?;
                report.added += 1;
            }
            for k in have.difference(want) {
                map.remove(k).map_err(map_err(name))?;
                report.removed += 1;
            }
        }
        // Rules go in before the terminator moves, so a reader never sees a half list
        // beyond the old length; the program stops at the first invalid entry.
        for i in 0..MAX_CLASSIFIERS {
            let v = w.classifiers.get(i).copied().unwrap_or_default();
            self.classifiers
                .set(i as u32, v, 0)
                .map_err(map_err("classifiers"))?;
        }
        report.classifiers = w.classifiers.len();
        Ok(report)
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<FilterCounters, FilterError> {
        let sum = |i: u32| -> Result<u64, FilterError> {
            let v = self.counters.get(&i, 0).map_err(map_err("counters"))?;
            Ok(v.iter().sum())
        };
        Ok(FilterCounters {
            redirected: sum(0)?,
            // CNT_PASS, CNT_PARSE_PASS and CNT_OTHERHOST.
            passed: sum(1)? + sum(2)? + sum(3)?,
            other_host: sum(3)?,
            standby_dropped: sum(4)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{
        Config, Dest, DestId, Prefix, RealServer, SchedFlags, SchedulerKind, ServiceEntry,
        VirtualService, DEFAULT_MH_TABLE_SIZE,
    };

    fn real(a: &str, port: u16, method: ForwardMethod) -> RealServer {
        RealServer {
            addr: a.parse().unwrap(),
            port,
            weight: 1,
            method,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn svc(key: ServiceKey, reals: Vec<RealServer>) -> VirtualService {
        VirtualService {
            key,
            scheduler: SchedulerKind::Wlc,
            flags: SchedFlags::default(),
            mh_table_size: DEFAULT_MH_TABLE_SIZE,
            persistence: None,
            reals,
        }
    }

    /// A snapshot built by hand: `DestIds` is private to `service`, and the filter reads
    /// only the public fields.
    fn table(cfg: &Config) -> ServiceTable {
        let mut t = ServiceTable::default();
        for svc in &cfg.services {
            let dests = svc
                .reals
                .iter()
                .enumerate()
                .map(|(i, r)| Dest {
                    id: DestId(i as u32),
                    server: r.clone(),
                    last_weight: r.weight,
                })
                .collect();
            t.services.push(ServiceEntry {
                config: svc.clone(),
                dests,
            });
        }
        t.classifiers = cfg.classifiers.clone();
        t
    }

    #[test]
    fn keys_are_laid_out_as_the_c_struct() {
        assert_eq!(std::mem::size_of::<AddrKey>(), 20);
        assert_eq!(std::mem::size_of::<RawClassifier>(), 40);
        assert_eq!(std::mem::size_of::<MacKey>(), 12);
        let m = MacKey::new(7, MacAddr([0, 0, 0x5e, 0, 1, 0x33]));
        assert_eq!((m.ifindex, m.mac[5], m.pad), (7, 0x33, [0, 0]));
        let k = AddrKey::new("10.0.0.1".parse().unwrap(), 80, 6);
        assert_eq!(&k.addr[..5], &[10, 0, 0, 1, 0]);
        assert_eq!(k.port, [0, 80]);
        assert_eq!((k.proto, k.family), (6, 4));
        let k6 = AddrKey::new("2001:db8::1".parse().unwrap(), 443, 17);
        assert_eq!(k6.addr[0..2], [0x20, 0x01]);
        assert_eq!(k6.addr[15], 1);
        assert_eq!((k6.port, k6.family), ([1, 187], 6));
    }

    #[test]
    fn classifier_masks_are_prefix_bits() {
        let r = ClassifierRule {
            protocol: Some(Protocol::Udp),
            dst: "10.1.255.7/20".parse::<Prefix>().unwrap(),
            ports: (1000, 2000),
            mark: 1,
        };
        let c = RawClassifier::from_rule(&r);
        assert_eq!(&c.mask[..4], &[255, 255, 0xf0, 0]);
        assert_eq!(&c.mask[4..], &[0; 12]);
        assert_eq!(&c.net[..4], &[10, 1, 0xf0, 0]);
        assert_eq!((c.proto, c.family, c.valid), (17, 4, 1));
        let r6 = ClassifierRule {
            protocol: None,
            dst: "2001:db8::/33".parse::<Prefix>().unwrap(),
            ports: (0, 65535),
            mark: 2,
        };
        let c6 = RawClassifier::from_rule(&r6);
        assert_eq!(&c6.mask[..5], &[255, 255, 255, 255, 0x80]);
        assert_eq!(c6.proto, 0);
    }

    #[test]
    fn wanted_holds_services_vip_markers_and_nat_reals_only() {
        let mut cfg = Config::default();
        cfg.services.push(svc(
            ServiceKey::Tuple {
                protocol: Protocol::Tcp,
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
            },
            vec![
                real("10.1.0.1", 8080, ForwardMethod::Masquerade),
                real("10.1.0.2", 80, ForwardMethod::DirectRouting),
            ],
        ));
        cfg.services.push(svc(
            ServiceKey::Tuple {
                protocol: Protocol::Udp,
                addr: "10.0.0.1".parse().unwrap(),
                port: 53,
            },
            vec![],
        ));
        cfg.services.push(svc(
            ServiceKey::Fwmark {
                mark: 7,
                ipv6: false,
            },
            vec![real("10.1.0.3", 0, ForwardMethod::Masquerade)],
        ));
        let w = wanted(&table(&cfg)).unwrap();
        let vip = "10.0.0.1".parse().unwrap();
        let want_svc: HashSet<_> = [
            AddrKey::new(vip, 80, 6),
            AddrKey::new(vip, 53, 17),
            AddrKey::new(vip, 0, PROTO_ANY),
        ]
        .into_iter()
        .collect();
        assert_eq!(w.services, want_svc);
        let want_reals: HashSet<_> = [
            AddrKey::new("10.1.0.1".parse().unwrap(), 8080, 6),
            AddrKey::new("10.1.0.1".parse().unwrap(), 0, PROTO_ANY),
            AddrKey::new("10.1.0.3".parse().unwrap(), 0, 6),
            AddrKey::new("10.1.0.3".parse().unwrap(), 0, 17),
            AddrKey::new("10.1.0.3".parse().unwrap(), 0, PROTO_ANY),
        ]
        .into_iter()
        .collect();
        assert_eq!(w.reals, want_reals);
    }

    #[test]
    fn too_many_classifiers_is_an_error() {
        let mut cfg = Config::default();
        for i in 0..=MAX_CLASSIFIERS {
            cfg.classifiers.push(ClassifierRule {
                protocol: None,
                dst: "10.0.0.0/8".parse().unwrap(),
                ports: (i as u16, i as u16),
                mark: 1,
            });
        }
        assert!(matches!(
            wanted(&table(&cfg)),
            Err(FilterError::TooManyClassifiers(17))
        ));
    }
}
