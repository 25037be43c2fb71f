//! AF_XDP sockets: the FFI edge. Everything `unsafe` about sockets and ring mappings lives
//! here; the worker sees only [`Port`]s made of ring cursors.
//!
//! One socket per (interface, queue). The first socket of a queue registers the UMEM; the
//! sockets of the same queue on other interfaces share it (`XDP_SHARED_UMEM`, each with
//! its own fill and completion rings), so a frame received on one interface can be sent
//! out of another without a copy.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;

use super::ring::{Consumer, Producer, RingMem};
use super::umem::Umem;

/// A tx/rx descriptor (`struct xdp_desc`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Desc {
    /// Address of the packet's first byte in the UMEM.
    pub(crate) addr: u64,
    /// Length in bytes.
    pub(crate) len: u32,
    /// Flags (`XDP_PKT_CONTD`, ...); fastlb sends single-buffer frames only.
    pub(crate) options: u32,
}

/// Sizes of a socket's four rings (powers of two).
#[derive(Copy, Clone, Debug)]
pub(crate) struct RingSizes {
    pub(crate) rx: u32,
    pub(crate) tx: u32,
    pub(crate) fill: u32,
    pub(crate) comp: u32,
}

/// How to bind a socket.
#[derive(Copy, Clone, Debug)]
pub(crate) struct BindFlags {
    pub(crate) zero_copy: bool,
    pub(crate) need_wakeup: bool,
    /// `SO_BUSY_POLL` microseconds and budget; `None` leaves busy polling off.
    pub(crate) busy_poll: Option<(u32, u32)>,
}

/// One mapped ring area, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the area returned by mmap in `map_ring`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// One AF_XDP socket with its four rings, or (in tests) rings over heap memory.
#[derive(Debug)]
pub(crate) struct Port {
    pub(crate) rx: Consumer<Desc>,
    pub(crate) tx: Producer<Desc>,
    pub(crate) fill: Producer<u64>,
    pub(crate) comp: Consumer<u64>,
    /// Interface index and queue the socket is bound to.
    pub(crate) ifindex: u32,
    pub(crate) queue: u32,
    // Field order: the rings above point into `maps`, which must outlive them; the fd is
    // closed before the mappings go.
    fd: Option<OwnedFd>,
    _maps: Vec<Mapping>,
}

// SAFETY: the ring pointers refer to mappings owned by this value; a Port is used by one
// thread at a time (built by the starting thread, then moved to its worker).
unsafe impl Send for Port {}

impl Port {
    /// A port over test rings (no socket: kicks are no-ops).
    #[cfg(test)]
    pub(crate) fn from_rings(
        rx: Consumer<Desc>,
        tx: Producer<Desc>,
        fill: Producer<u64>,
        comp: Consumer<u64>,
    ) -> Port {
        Port {
            rx,
            tx,
            fill,
            comp,
            ifindex: 0,
            queue: 0,
            fd: None,
            _maps: Vec::new(),
        }
    }

    /// The socket's descriptor (for the XSKMAP), if there is a socket.
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Asks the kernel to transmit what the tx ring holds. EAGAIN, ENOBUFS, EBUSY and
    /// ENETDOWN mean "try again later", not failure: the ring keeps the frames.
    #[inline]
    pub(crate) fn kick_tx(&self) {
        let Some(fd) = &self.fd else { return };
        // SAFETY: a zero-length send with no buffer on a socket we own.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            transient_or_log("sendto");
        }
    }

    /// Asks the kernel to refill from the fill ring (need_wakeup on the fill ring).
    #[inline]
    pub(crate) fn kick_rx(&self) {
        let Some(fd) = &self.fd else { return };
        // SAFETY: a zero-length receive with no buffer on a socket we own.
        let r = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            transient_or_log("recvfrom");
        }
    }
}

/// Errors a kick may see in normal operation are ignored; anything else is reported once
/// per occurrence off the hot path.
#[inline(never)]
#[cold]
fn transient_or_log(what: &str) {
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOBUFS | libc::EBUSY | libc::ENETDOWN | libc::EINTR) => {}
        _ => eprintln!("fastlb xdp: {what} on AF_XDP socket: {e}"),
    }
}

fn check(r: libc::c_int, what: &'static str) -> io::Result<()> {
    if r < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(())
    }
}

fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
    what: &'static str,
) -> io::Result<()> {
    // SAFETY: `v` points to a live value of exactly the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(r, what)
}

/// Maps one ring of `size` descriptors of `T` at page offset `pgoff`.
fn map_ring<T: Copy>(
    fd: RawFd,
    off: &libc::xdp_ring_offset,
    size: u32,
    pgoff: u64,
    maps: &mut Vec<Mapping>,
) -> io::Result<RingMem<T>> {
    let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
    // SAFETY: maps a ring the kernel created for this socket; length and offset are the
    // ones the kernel reported for it.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mmap of AF_XDP ring: {e}"),
        ));
    }
    maps.push(Mapping { ptr, len });
    let base = ptr.cast::<u8>();
    // SAFETY: the kernel's offsets lie inside the mapping; the indices are aligned u32s,
    // the descriptor array holds `size` entries; the mapping lives in the Port that owns
    // these cursors.
    Ok(unsafe {
        RingMem::new(
            base.add(off.producer as usize).cast::<AtomicU32>(),
            base.add(off.consumer as usize).cast::<AtomicU32>(),
            base.add(off.flags as usize).cast::<AtomicU32>(),
            base.add(off.desc as usize).cast::<T>(),
            size,
        )
    })
}

/// Opens an AF_XDP socket on `ifindex`/`queue` over `umem`. With `shared_with` (the fd of
/// the socket that registered the UMEM) it shares that UMEM instead of registering it.
pub(crate) fn open(
    umem: &Umem,
    ifindex: u32,
    queue: u32,
    shared_with: Option<RawFd>,
    sizes: RingSizes,
    flags: BindFlags,
) -> io::Result<Port> {
    // SAFETY: plain socket creation; the fd is owned right below.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    check(raw, "socket(AF_XDP)")?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    if shared_with.is_none() {
        let reg = libc::xdp_umem_reg {
            addr: umem.as_ptr() as u64,
            len: umem.len() as u64,
            chunk_size: umem.frame_size(),
            // The kernel already leaves XDP_PACKET_HEADROOM (256 bytes) in front of every
            // received packet, which is `datapath::HEADROOM`; no extra user headroom.
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")?;
    }
    setsockopt(
        raw,
        libc::SOL_XDP,
        libc::XDP_UMEM_FILL_RING,
        &sizes.fill,
        "XDP_UMEM_FILL_RING",
    )?;
    setsockopt(
        raw,
        libc::SOL_XDP,
        libc::XDP_UMEM_COMPLETION_RING,
        &sizes.comp,
        "XDP_UMEM_COMPLETION_RING",
    )?;
    setsockopt(
        raw,
        libc::SOL_XDP,
        libc::XDP_RX_RING,
        &sizes.rx,
        "XDP_RX_RING",
    )?;
    setsockopt(
        raw,
        libc::SOL_XDP,
        libc::XDP_TX_RING,
        &sizes.tx,
        "XDP_TX_RING",
    )?;

    // SAFETY: xdp_mmap_offsets is plain old data; zeroes are a valid value.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: `off` is writable for `optlen` bytes.
    let r = unsafe {
        libc::getsockopt(
            raw,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut optlen,
        )
    };
    check(r, "getsockopt(XDP_MMAP_OFFSETS)")?;
    if optlen as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
        return Err(io::Error::other(
            "kernel too old: XDP_MMAP_OFFSETS without ring flags (need 5.4+)",
        ));
    }

    let mut maps = Vec::with_capacity(4);
    let rx = map_ring::<Desc>(
        raw,
        &off.rx,
        sizes.rx,
        libc::XDP_PGOFF_RX_RING as u64,
        &mut maps,
    )?;
    let tx = map_ring::<Desc>(
        raw,
        &off.tx,
        sizes.tx,
        libc::XDP_PGOFF_TX_RING as u64,
        &mut maps,
    )?;
    let fill = map_ring::<u64>(
        raw,
        &off.fr,
        sizes.fill,
        libc::XDP_UMEM_PGOFF_FILL_RING,
        &mut maps,
    )?;
    let comp = map_ring::<u64>(
        raw,
        &off.cr,
        sizes.comp,
        libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        &mut maps,
    )?;

    if let Some((usecs, budget)) = flags.busy_poll {
        // Values from asm-generic/socket.h (not every libc target exports them).
        const SO_BUSY_POLL: libc::c_int = 46;
        const SO_PREFER_BUSY_POLL: libc::c_int = 69;
        const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
        let one: libc::c_int = 1;
        setsockopt(
            raw,
            libc::SOL_SOCKET,
            SO_PREFER_BUSY_POLL,
            &one,
            "SO_PREFER_BUSY_POLL",
        )?;
        setsockopt(
            raw,
            libc::SOL_SOCKET,
            SO_BUSY_POLL,
            &(usecs as libc::c_int),
            "SO_BUSY_POLL",
        )?;
        setsockopt(
            raw,
            libc::SOL_SOCKET,
            SO_BUSY_POLL_BUDGET,
            &(budget as libc::c_int),
            "SO_BUSY_POLL_BUDGET",
        )?;
    }

    // A socket sharing a UMEM may not name copy/zero-copy/need_wakeup: it inherits the
    // first socket's (the kernel answers EINVAL otherwise).
    let bind_flags: u16 = if shared_with.is_some() {
        libc::XDP_SHARED_UMEM
    } else {
        let mode = if flags.zero_copy {
            libc::XDP_ZEROCOPY
        } else {
            libc::XDP_COPY
        };
        if flags.need_wakeup {
            mode | libc::XDP_USE_NEED_WAKEUP
        } else {
            mode
        }
    };
    let sa = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: bind_flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: shared_with.unwrap_or(0) as u32,
    };
    // SAFETY: `sa` is a complete sockaddr_xdp of the size passed.
    let r = unsafe {
        libc::bind(
            raw,
            (&sa as *const libc::sockaddr_xdp).cast(),
            std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    check(r, "bind(AF_XDP)")?;

    Ok(Port {
        rx: Consumer::new(rx),
        tx: Producer::new(tx),
        fill: Producer::new(fill),
        comp: Consumer::new(comp),
        ifindex,
        queue,
        fd: Some(fd),
        _maps: maps,
    })
}
