//! Network checks over non-blocking sockets and poll(2): the fallback where io_uring is
//! unavailable (some container runtimes forbid it with seccomp). Same behaviour as the
//! io_uring backend: one deadline per attempt covering connect, request and status line.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checker::{
    errno_text, os_text, sockaddr, tcp_socket, HttpExchange, NetBackend, NetProbe,
};
use super::state::Attempt;

const REPLY_BUF: usize = 512;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stage {
    Connect,
    Send,
    Recv,
}

struct Conn {
    token: u64,
    fd: OwnedFd,
    http: Option<Arc<HttpExchange>>,
    deadline: Instant,
    stage: Stage,
    sent: usize,
    reply: [u8; REPLY_BUF],
    got: usize,
}

impl Conn {
    fn what(&self) -> &'static str {
        match self.stage {
            Stage::Connect => "connect",
            Stage::Send => "http: send",
            Stage::Recv => "http: recv",
        }
    }

    fn events(&self) -> libc::c_short {
        match self.stage {
            Stage::Connect | Stage::Send => libc::POLLOUT,
            Stage::Recv => libc::POLLIN,
        }
    }

    /// Makes progress after poll said the socket is ready; `Some` when the attempt ended.
    fn step(&mut self) -> Option<Attempt> {
        let fd = self.fd.as_raw_fd();
        loop {
            match self.stage {
                Stage::Connect => {
                    let mut err: libc::c_int = 0;
                    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                    // SAFETY: `err` and `len` are valid for writes of the sizes given.
                    let r = unsafe {
                        libc::getsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_ERROR,
                            std::ptr::addr_of_mut!(err).cast(),
                            &mut len,
                        )
                    };
                    if r < 0 {
                        return Some(fail("connect", &io::Error::last_os_error()));
                    }
                    if err != 0 {
                        return Some(Attempt::Fail(format!("connect: {}", errno_text(err))));
                    }
                    if self.http.is_none() {
                        return Some(Attempt::Pass { weight: None });
                    }
                    self.stage = Stage::Send;
                }
                Stage::Send => {
                    let req = &self.http.as_ref().expect("http").request;
                    let rest = &req[self.sent..];
                    // SAFETY: `rest` is valid for reads of its length.
                    let n = unsafe {
                        libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL)
                    };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        return (e.kind() != io::ErrorKind::WouldBlock)
                            .then(|| fail("http: send", &e));
                    }
                    self.sent += n as usize;
                    if self.sent < req.len() {
                        return None;
                    }
                    self.stage = Stage::Recv;
                    return None;
                }
                Stage::Recv => {
                    let buf = &mut self.reply[self.got..];
                    // SAFETY: `buf` is valid for writes of its length.
                    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        return (e.kind() != io::ErrorKind::WouldBlock)
                            .then(|| fail("http: recv", &e));
                    }
                    self.got += n as usize;
                    let got = &self.reply[..self.got];
                    if n == 0 || HttpExchange::complete(got) || self.got == REPLY_BUF {
                        return Some(self.http.as_ref().expect("http").judge(got));
                    }
                    return None;
                }
            }
        }
    }
}

fn fail(what: &str, e: &io::Error) -> Attempt {
    Attempt::Fail(format!("{what}: {}", os_text(e)))
}

/// The poll(2) backend.
#[derive(Default)]
pub(crate) struct PollBackend {
    conns: Vec<Conn>,
    done: Vec<(u64, Attempt)>,
    fds: Vec<libc::pollfd>,
}

impl PollBackend {
    /// An idle backend; it needs nothing from the kernel until the first check.
    pub fn new() -> PollBackend {
        PollBackend::default()
    }
}

impl NetBackend for PollBackend {
    fn start(&mut self, probe: NetProbe) {
        let fd = match tcp_socket(probe.target, true) {
            Ok(fd) => fd,
            Err(e) => return self.done.push((probe.token, fail("socket", &e))),
        };
        let (addr, len) = sockaddr(probe.target);
        // SAFETY: `addr` holds a socket address of `len` bytes.
        let r = unsafe { libc::connect(fd.as_raw_fd(), std::ptr::addr_of!(addr).cast(), len) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return self.done.push((probe.token, fail("connect", &e)));
            }
        }
        self.conns.push(Conn {
            token: probe.token,
            fd,
            http: probe.http,
            deadline: probe.deadline,
            stage: Stage::Connect,
            sent: 0,
            reply: [0; REPLY_BUF],
            got: 0,
        });
    }

    fn wait(&mut self, max: Duration, out: &mut Vec<(u64, Attempt)>) {
        let now = Instant::now();
        let mut wait = if self.done.is_empty() {
            max
        } else {
            Duration::ZERO
        };
        for c in &self.conns {
            wait = wait.min(c.deadline.saturating_duration_since(now));
        }
        self.fds.clear();
        self.fds.extend(self.conns.iter().map(|c| libc::pollfd {
            fd: c.fd.as_raw_fd(),
            events: c.events(),
            revents: 0,
        }));
        // Round up so a sub-millisecond wait does not spin.
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid array of `len` pollfd structures.
        let r = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            eprintln!("health: poll: {}", io::Error::last_os_error());
        }
        let now = Instant::now();
        let mut i = 0;
        let mut k = 0;
        while i < self.conns.len() {
            let ready = r > 0 && self.fds[k].revents != 0;
            k += 1;
            let c = &mut self.conns[i];
            let ended = if ready { c.step() } else { None };
            let ended = ended.or_else(|| {
                (now >= c.deadline).then(|| Attempt::Fail(format!("{}: timed out", c.what())))
            });
            match ended {
                Some(a) => {
                    let c = self.conns.remove(i);
                    self.done.push((c.token, a));
                }
                None => i += 1,
            }
        }
        out.append(&mut self.done);
    }
}
