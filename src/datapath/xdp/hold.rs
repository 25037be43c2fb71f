//! Holding the interfaces across a restart.
//!
//! While fastlb is down its interfaces belong to the kernel: a NAT real server's reply in
//! flight then is routed to the client unrewritten, and the client resets the connection.
//! So a restart does not let go of them. At a planned exit (SIGTERM with a state file
//! written) the XDP filter is set to *hold*, dropping every packet it would hand to fastlb
//! (key 0 of its `standby` map = [`HOLD`]), and its bpf links, which keep the program
//! attached, are handed to a small helper process (`fastlb hold-helper`, started from the
//! same binary). The next start asks the helper for them ([`take_over`]) and swaps its own
//! program into each link with `BPF_LINK_UPDATE`, atomically, once its maps and sockets are
//! ready: not one packet of a service reaches the kernel between the two runs; TCP's
//! retransmissions carry the connections over the gap.
//!
//! Nobody comes within the hold time: the helper exits, the links close, the program
//! detaches and the interfaces are as fastlb found them. The helper serves one taker only,
//! a process of the same user, over an abstract Unix socket of the network namespace,
//! named after the state file ([`rendezvous_name`]).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use super::filter::XdpMode;
use crate::log::log;

/// The value of the filter's `standby` key 0 that holds the interfaces for the next run
/// (1 is a pair's standby; the program drops on any value but 0).
pub const HOLD: u32 = 2;

/// Interfaces one hand-over carries at most (the filter's `MAX_IFACES`).
const MAX_LINKS: usize = super::filter::MAX_IFACES;

/// One attachment of the XDP filter, kept across a restart: the bpf link that ties the
/// program to interface `ifindex`.
#[derive(Debug)]
pub struct HeldLink {
    /// The interface.
    pub ifindex: u32,
    /// The mode the program is attached in.
    pub mode: XdpMode,
    /// The bpf link; closing its last descriptor detaches the program.
    pub link: OwnedFd,
}

// The two bpf(2) commands fastlb issues itself: aya keeps its links' descriptors private,
// and a hand-over needs them.
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;

/// The leading fields of `union bpf_attr` for BPF_LINK_CREATE and BPF_LINK_UPDATE (both
/// four u32 words), zero-padded: the kernel reads what it knows and wants the rest zero.
#[repr(C)]
#[derive(Default)]
struct LinkAttr {
    words: [u32; 4],
    pad: [u64; 6],
}

fn sys_bpf(cmd: libc::c_long, attr: &mut LinkAttr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised buffer of the size passed, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut LinkAttr,
            std::mem::size_of::<LinkAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attaches program `prog` to interface `ifindex` through a new bpf link (`flags`: the
/// XDP mode flags); the program stays attached while the returned descriptor (or a copy
/// of it, in this process or another) is open.
pub(crate) fn link_create(prog: RawFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkAttr {
        words: [prog as u32, ifindex, BPF_XDP, flags],
        ..LinkAttr::default()
    };
    let fd = sys_bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Puts program `prog` into `link` in place of the one it holds, atomically: every packet
/// runs either the old program or the new.
pub(crate) fn link_update(link: &OwnedFd, prog: RawFd) -> io::Result<()> {
    let mut attr = LinkAttr {
        words: [link.as_raw_fd() as u32, prog as u32, 0, 0],
        ..LinkAttr::default()
    };
    sys_bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// The abstract socket name the helper of the state file `key` listens on: one per state
/// file and network namespace.
pub fn rendezvous_name(key: &Path) -> String {
    // FNV-1a: short and stable, so a long path still fits a socket name.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fastlb-hold-{h:016x}")
}

fn mode_byte(m: XdpMode) -> u8 {
    match m {
        XdpMode::Auto => 0,
        XdpMode::Native => 1,
        XdpMode::Generic => 2,
    }
}

fn byte_mode(b: u8) -> XdpMode {
    match b {
        1 => XdpMode::Native,
        2 => XdpMode::Generic,
        _ => XdpMode::Auto,
    }
}

/// Sends `links` over `sock`: a count, then each link's interface and mode, with the
/// descriptors as SCM_RIGHTS.
fn send_links(sock: &UnixStream, links: &[HeldLink]) -> io::Result<()> {
    let mut data = vec![links.len() as u8];
    for l in links {
        data.extend_from_slice(&l.ifindex.to_le_bytes());
        data.push(mode_byte(l.mode));
    }
    let fds: Vec<RawFd> = links.iter().map(|l| l.link.as_raw_fd()).collect();
    send_fds(sock, &data, &fds)
}

/// Receives what [`send_links`] sent.
fn recv_links(sock: &UnixStream) -> io::Result<Vec<HeldLink>> {
    let mut buf = [0u8; 1 + 5 * MAX_LINKS];
    let (n, fds) = recv_fds(sock, &mut buf, MAX_LINKS)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if n == 0 {
        return Err(bad("the peer closed without sending"));
    }
    let count = usize::from(buf[0]);
    if n != 1 + 5 * count || fds.len() != count {
        return Err(bad("malformed hand-over message"));
    }
    Ok(fds
        .into_iter()
        .enumerate()
        .map(|(i, link)| {
            let e = &buf[1 + 5 * i..1 + 5 * (i + 1)];
            HeldLink {
                ifindex: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                mode: byte_mode(e[4]),
                link,
            }
        })
        .collect())
}

fn send_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE computes a size; no memory is touched.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zero is a valid value for every field.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` writable, 8-byte aligned bytes, enough for
        // one header and `fds`; CMSG_FIRSTHDR/CMSG_DATA stay inside them.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(c),
                fd_bytes as usize,
            );
        }
    }
    // SAFETY: msg and everything it points at are valid for the call.
    let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if r as usize != data.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short hand-over"));
    }
    Ok(())
}

fn recv_fds(sock: &UnixStream, buf: &mut [u8], max: usize) -> io::Result<(usize, Vec<OwnedFd>)> {
    let fd_bytes = (max * std::mem::size_of::<RawFd>()) as u32;
    // SAFETY: CMSG_SPACE computes a size; no memory is touched.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zero is a valid value for every field.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at `buf` and `control`, both writable and alive for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control up to msg_controllen; CMSG_FIRSTHDR and
    // CMSG_NXTHDR walk only inside it, and each SCM_RIGHTS payload holds descriptors this
    // process now owns (taken into OwnedFd exactly once).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let mut fd: RawFd = 0;
                    std::ptr::copy_nonoverlapping(
                        data.add(i * std::mem::size_of::<RawFd>()),
                        (&mut fd as *mut RawFd).cast::<u8>(),
                        std::mem::size_of::<RawFd>(),
                    );
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "hand-over carried more descriptors than expected",
        ));
    }
    Ok((n as usize, fds))
}

/// Hands `links` (the filter already set to [`HOLD`]) to a helper process that keeps them
/// for `hold`, or until a start of fastlb with the same state file `key` takes them. The
/// helper is this binary (`/proc/self/exe hold-helper`); returns its pid once it listens.
/// On an error the links close when this returns: the interfaces are let go, as without a
/// hold.
pub fn hand_off(key: &Path, links: Vec<HeldLink>, hold: Duration) -> io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = UnixStream::pair()?;
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg("hold-helper")
        .arg("--key")
        .arg(key)
        .arg("--seconds")
        .arg(hold.as_secs().to_string())
        .stdin(OwnedFd::from(theirs))
        .stdout(std::process::Stdio::null())
        // Its own process group: a Ctrl-C meant for a shell's foreground job is not for it.
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    let ready = send_links(&ours, &links).and_then(|()| {
        ours.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut ack = [0u8; 1];
        (&ours).read_exact(&mut ack)?;
        if ack[0] == b'k' {
            Ok(())
        } else {
            Err(io::Error::other("the helper could not listen"))
        }
    });
    if let Err(e) = ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(pid)
}

/// The helper process (`fastlb hold-helper --key STATE-FILE --seconds N`): reads the links
/// from its standard input (a socket from [`hand_off`]), listens on the rendezvous name,
/// gives them to the first taker of the same user, or lets them go after `seconds`.
pub fn helper_main(key: &Path, seconds: u64) -> io::Result<()> {
    // SAFETY: fd 0 is the socket hand_off gave as standard input; nothing else in this
    // process uses it, and it is owned here from now on.
    let parent = unsafe { UnixStream::from_raw_fd(0) };
    let links = recv_links(&parent)?;
    let name = rendezvous_name(key);
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = match UnixListener::bind_addr(&addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = (&parent).write_all(b"n");
            return Err(e);
        }
    };
    (&parent).write_all(b"k")?;
    drop(parent);
    listener.set_nonblocking(true)?;
    let names: Vec<String> = links.iter().map(|l| iface_name(l.ifindex)).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((peer, _)) => {
                if peer_uid(&peer).ok() != Some(me) {
                    continue;
                }
                peer.set_nonblocking(false)?;
                send_links(&peer, &links)?;
                log(format_args!(
                    "hold: {} handed to the next start after {} ms",
                    names.join(", "),
                    started.elapsed().as_millis()
                ));
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e),
        }
    }
    log(format_args!(
        "hold: no start took {} within {seconds} s; letting the interfaces go (XDP detached)",
        names.join(", ")
    ));
    Ok(())
}

/// The links a stopped run of fastlb with state file `key` holds, if its helper is still
/// there; empty if none is.
pub fn take_over(key: &Path) -> io::Result<Vec<HeldLink>> {
    let addr = SocketAddr::from_abstract_name(rendezvous_name(key).as_bytes())?;
    let sock = match UnixStream::connect_addr(&addr) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    recv_links(&sock)
}

fn peer_uid(sock: &UnixStream) -> io::Result<u32> {
    // SAFETY: ucred is plain data; zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writing and sized as SO_PEERCRED wants.
    let r = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The name of interface `ifindex`, or its number.
pub fn iface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_names_differ_by_state_file_and_fit_a_socket_name() {
        let a = rendezvous_name(Path::new("/run/fastlb/ctl.state"));
        let b = rendezvous_name(Path::new("/run/fastlb/other.state"));
        assert_ne!(a, b);
        assert_eq!(a, rendezvous_name(Path::new("/run/fastlb/ctl.state")));
        assert!(a.len() < 100);
    }

    #[test]
    fn links_travel_with_their_interface_and_mode() {
        // Any descriptors will do for the wire format: two ends of a pipe.
        let (r, w) = std::io::pipe().unwrap();
        let links = vec![
            HeldLink {
                ifindex: 7,
                mode: XdpMode::Generic,
                link: OwnedFd::from(r),
            },
            HeldLink {
                ifindex: 300,
                mode: XdpMode::Native,
                link: OwnedFd::from(w),
            },
        ];
        let (a, b) = UnixStream::pair().unwrap();
        send_links(&a, &links).unwrap();
        let got = recv_links(&b).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].ifindex, got[0].mode), (7, XdpMode::Generic));
        assert_eq!((got[1].ifindex, got[1].mode), (300, XdpMode::Native));
        // New descriptors for the same pipe: what goes in one end comes out of the other.
        let mut w = std::fs::File::from(got[1].link.try_clone().unwrap());
        w.write_all(b"x").unwrap();
        let mut r = std::fs::File::from(got[0].link.try_clone().unwrap());
        let mut one = [0u8; 1];
        r.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    }

    #[test]
    fn a_closed_peer_or_a_bad_message_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(recv_links(&b).is_err());
        let (a, b) = UnixStream::pair().unwrap();
        send_fds(&a, &[3, 1, 0], &[]).unwrap();
        assert!(recv_links(&b).is_err());
    }

    #[test]
    fn no_helper_means_nothing_to_take() {
        let key = Path::new("/nonexistent/fastlb-hold-test.state");
        assert!(take_over(key).unwrap().is_empty());
    }
}
