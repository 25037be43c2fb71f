//! The daemons' multicast sockets, set up as `make_send_sock` and `make_receive_sock` do,
//! each system call behind one checked helper.
//!
//! Master: a UDP socket bound to the interface's first IPv4 address (IPv6: any), multicast
//! out of the interface, loopback off (the director's own backup must not read its
//! master), the TTL asked for, path-MTU discovery off (a message may be fragmented if the
//! MTU shrinks), connected to the group.
//!
//! Backup: a UDP socket bound to the group and port (IPv6: any address and the port, the
//! group checked per datagram), the group joined on the interface. The kernel also binds
//! its socket to the interface and so never sees datagrams that arrive on another one;
//! fastlb asks for each datagram's arrival interface (`IP_PKTINFO`) instead, so it can
//! count and ignore them.

use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::daemon::DaemonState;

/// Checks a libc return value.
fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `setsockopt` with a plain-data value.
fn setsockopt<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of `size_of::<T>()` bytes for the call's duration.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(r).map(drop)
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from(a).to_be(),
    }
}

fn in6_addr(a: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: a.octets(),
    }
}

/// The first IPv4 address of interface `name` (`inet_select_addr`), if it has one.
fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer; on success it is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: `ifa_addr` is non-null and points at a sockaddr of the list.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if ifname.to_bytes() == name.as_bytes() && i32::from(family) == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// The master's socket for daemon `d`; `sock_size` (bytes, 0 for the default) becomes its
/// send buffer.
pub fn master_socket(d: &DaemonState, sock_size: u32) -> io::Result<UdpSocket> {
    let one_ttl = libc::c_int::from(d.mcast_ttl);
    let sock = match d.mcast_group {
        IpAddr::V4(group) => {
            let local = interface_ipv4(&d.mcast_ifn).unwrap_or(Ipv4Addr::UNSPECIFIED);
            let sock = UdpSocket::bind(SocketAddrV4::new(local, 0))?;
            let fd = sock.as_raw_fd();
            let mreq = libc::ip_mreqn {
                imr_multiaddr: in_addr(Ipv4Addr::UNSPECIFIED),
                imr_address: in_addr(Ipv4Addr::UNSPECIFIED),
                imr_ifindex: d.ifindex as libc::c_int,
            };
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)?;
            setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_LOOP,
                &0 as &libc::c_int,
            )?;
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &one_ttl)?;
            setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                &libc::IP_PMTUDISC_DONT,
            )?;
            sock.connect(SocketAddrV4::new(group, d.mcast_port))?;
            sock
        }
        IpAddr::V6(group) => {
            let sock = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0))?;
            let fd = sock.as_raw_fd();
            let ifindex = d.ifindex as libc::c_int;
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &ifindex)?;
            setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_LOOP,
                &0 as &libc::c_int,
            )?;
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &one_ttl)?;
            setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                &libc::IPV6_PMTUDISC_DONT,
            )?;
            sock.connect(SocketAddrV6::new(group, d.mcast_port, 0, d.ifindex))?;
            sock
        }
    };
    if sock_size > 0 {
        let v = sock_size.min(i32::MAX as u32) as libc::c_int;
        setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, &v)?;
    }
    Ok(sock)
}

/// The backup's socket.
#[derive(Debug)]
pub struct BackupSocket {
    fd: OwnedFd,
    group: IpAddr,
}

/// One datagram read by [`BackupSocket::recv`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes written to the buffer (a longer datagram is cut, as the kernel's backup cuts
    /// it at `sync_maxlen`).
    pub len: usize,
    /// The interface it arrived on, if the kernel said.
    pub ifindex: Option<u32>,
}

/// The backup's socket for daemon `d`; `sock_size` (bytes, 0 for the default) becomes its
/// receive buffer.
pub fn backup_socket(d: &DaemonState, sock_size: u32) -> io::Result<BackupSocket> {
    let family = if d.mcast_group.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain system call; the result is checked and owned below.
    let raw = check(unsafe {
        libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let s = fd.as_raw_fd();
    let one: libc::c_int = 1;
    setsockopt(s, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)?;
    if sock_size > 0 {
        let v = sock_size.min(i32::MAX as u32) as libc::c_int;
        setsockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUF, &v)?;
    }
    match d.mcast_group {
        IpAddr::V4(group) => {
            // SAFETY: all-zero is a valid sockaddr_in.
            let mut sin: libc::sockaddr_in = unsafe { zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = d.mcast_port.to_be();
            sin.sin_addr = in_addr(group);
            // SAFETY: `sin` is a valid sockaddr_in of the length given.
            check(unsafe {
                libc::bind(
                    s,
                    (&sin as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            })?;
            let mreq = libc::ip_mreqn {
                imr_multiaddr: in_addr(group),
                imr_address: in_addr(Ipv4Addr::UNSPECIFIED),
                imr_ifindex: d.ifindex as libc::c_int,
            };
            setsockopt(s, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)?;
            setsockopt(s, libc::IPPROTO_IP, libc::IP_PKTINFO, &one)?;
        }
        IpAddr::V6(group) => {
            // SAFETY: all-zero is a valid sockaddr_in6 (the unspecified address).
            let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = d.mcast_port.to_be();
            // SAFETY: `sin6` is a valid sockaddr_in6 of the length given.
            check(unsafe {
                libc::bind(
                    s,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            })?;
            let mreq = libc::ipv6_mreq {
                ipv6mr_multiaddr: in6_addr(group),
                ipv6mr_interface: d.ifindex,
            };
            setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)?;
            setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &one)?;
        }
    }
    Ok(BackupSocket {
        fd,
        group: d.mcast_group,
    })
}

impl BackupSocket {
    /// The descriptor, for `poll`.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one waiting datagram into `buf`; `Ok(None)` when none waits. IPv6 datagrams
    /// sent to another group (the socket is bound to any address) are read and skipped.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        loop {
            if let Some(r) = self.recv_one(buf)? {
                return Ok(r);
            }
        }
    }

    /// One datagram: `Ok(Some(None))` when none waits, `Ok(None)` for one to skip.
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<Option<Option<Received>>> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [MaybeUninit::<u64>::uninit(); 16];
        // SAFETY: all-zero is a valid msghdr; its pointers are set below.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 16]>();
        // SAFETY: `msg` points at `iov` (over `buf`) and `control`, all live for the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(Some(None)),
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let mut ifindex = None;
        let mut to_group = true;
        // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk its control buffer
        // within `msg_controllen`.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is a header inside the control buffer.
            let h = unsafe { &*cmsg };
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
                // SAFETY: an IP_PKTINFO message carries an in_pktinfo, maybe unaligned.
                let info: libc::in_pktinfo =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                ifindex = Some(info.ipi_ifindex as u32);
            } else if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                // SAFETY: an IPV6_PKTINFO message carries an in6_pktinfo, maybe unaligned.
                let info: libc::in6_pktinfo =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                ifindex = Some(info.ipi6_ifindex);
                to_group = IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)) == self.group;
            }
            // SAFETY: as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
        if !to_group {
            return Ok(None);
        }
        Ok(Some(Some(Received {
            len: n as usize,
            ifindex,
        })))
    }
}
