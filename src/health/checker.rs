//! Running checks: what every backend shares. Network attempts (TCP connect, HTTP GET) go
//! to one [`NetBackend`] that runs them all at once on the calling thread, over io_uring
//! ([`super::uring`]) or non-blocking sockets and poll(2) ([`super::poll`]). Scripts run as
//! child processes reaped with `try_wait`, never waited for.
//!
//! Checks use the director's own kernel sockets, never the data path.

use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::Attempt;
use crate::service::health::{HttpCheck, ScriptCheck};

/// Which network backend runs the checks.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when the kernel and runtime allow it, poll(2) otherwise.
    #[default]
    Auto,
    /// io_uring or nothing (fails to start where it is unavailable).
    Uring,
    /// Non-blocking sockets and poll(2).
    Poll,
}

/// The backend actually in use.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring with linked timeouts.
    Uring,
    /// Non-blocking sockets and poll(2).
    Poll,
}

/// What an HTTP check sends and accepts, built once per configuration.
#[derive(Debug)]
pub(crate) struct HttpExchange {
    pub request: Vec<u8>,
    pub check: HttpCheck,
}

impl HttpExchange {
    pub fn new(check: &HttpCheck, target: SocketAddr) -> HttpExchange {
        let host = match &check.host {
            Some(h) => h.clone(),
            None => target.ip().to_string(),
        };
        let host = match (target.ip(), &check.host) {
            (std::net::IpAddr::V6(_), None) => format!("[{host}]"),
            _ => host,
        };
        // HTTP/1.0 with Connection: close so the server ends the exchange itself.
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: fastlb-health\r\nConnection: close\r\n\r\n",
            check.path
        )
        .into_bytes();
        HttpExchange {
            request,
            check: check.clone(),
        }
    }

    /// Whether `got` holds a complete status line.
    pub fn complete(got: &[u8]) -> bool {
        got.contains(&b'\n')
    }

    /// Judges what arrived (possibly cut short by EOF).
    pub fn judge(&self, got: &[u8]) -> Attempt {
        match parse_status(got) {
            None if got.is_empty() => {
                Attempt::Fail("http: connection closed without a reply".into())
            }
            None => Attempt::Fail("http: no status line".into()),
            Some(code) if self.check.accepts(code) => Attempt::Pass { weight: None },
            Some(code) => Attempt::Fail(format!("http: status {code}")),
        }
    }
}

/// The status code of `HTTP/1.x NNN ...`.
fn parse_status(got: &[u8]) -> Option<u16> {
    let end = got.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&got[..end]).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// One network attempt handed to a backend.
#[derive(Debug)]
pub(crate) struct NetProbe {
    pub token: u64,
    pub target: SocketAddr,
    pub http: Option<Arc<HttpExchange>>,
    pub deadline: Instant,
}

/// Runs network attempts concurrently on the calling thread.
pub(crate) trait NetBackend: Send {
    /// Starts an attempt; its result comes out of a later [`NetBackend::wait`].
    fn start(&mut self, probe: NetProbe);
    /// Waits up to `max` for results and appends them to `out` as (token, outcome).
    fn wait(&mut self, max: Duration, out: &mut Vec<(u64, Attempt)>);
}

/// Opens the backend `choice` asks for.
pub(crate) fn open_backend(
    choice: BackendChoice,
) -> io::Result<(Box<dyn NetBackend>, BackendKind)> {
    match choice {
        BackendChoice::Poll => Ok((Box::new(super::poll::PollBackend::new()), BackendKind::Poll)),
        BackendChoice::Uring => Ok((
            Box::new(super::uring::UringBackend::new()?),
            BackendKind::Uring,
        )),
        BackendChoice::Auto => match super::uring::UringBackend::new() {
            Ok(b) => Ok((Box::new(b), BackendKind::Uring)),
            Err(e) => {
                eprintln!(
                    "health: io_uring unavailable ({}); checking with non-blocking sockets and poll(2)",
                    os_text(&e)
                );
                Ok((Box::new(super::poll::PollBackend::new()), BackendKind::Poll))
            }
        },
    }
}

/// `connection refused` for ECONNREFUSED: the OS text, lower-cased, without "(os error N)".
pub(crate) fn os_text(e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ETIMEDOUT) || e.kind() == io::ErrorKind::TimedOut {
        return "timed out".into();
    }
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s.to_string(),
    }
}

/// The text of errno `n`.
pub(crate) fn errno_text(n: i32) -> String {
    os_text(&io::Error::from_raw_os_error(n))
}

/// `sockaddr_storage` for `a`, and its length.
pub(crate) fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A TCP socket for `a`, close-on-exec, blocking or not.
pub(crate) fn tcp_socket(a: SocketAddr, nonblocking: bool) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let family = if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe { libc::socket(family, ty, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// A running script check.
#[derive(Debug)]
struct ScriptRun {
    token: u64,
    child: Child,
    deadline: Instant,
    dynamic: bool,
    killed: bool,
}

/// Script checks and notify commands in flight.
#[derive(Debug, Default)]
pub(crate) struct Children {
    scripts: Vec<ScriptRun>,
    notifies: Vec<Child>,
}

impl Children {
    /// Starts `check`; a failure to spawn is the attempt's failure.
    pub fn start_script(
        &mut self,
        token: u64,
        check: &ScriptCheck,
        deadline: Instant,
    ) -> Result<(), Attempt> {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&check.command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Attempt::Fail(format!("script: cannot run: {}", os_text(&e))))?;
        self.scripts.push(ScriptRun {
            token,
            child,
            deadline,
            dynamic: check.dynamic,
            killed: false,
        });
        Ok(())
    }

    /// Runs a notify command in the background: `command` with `args` appended as
    /// positional parameters.
    pub fn notify(&mut self, command: &str, args: &[&str]) {
        let mut c = Command::new("/bin/sh");
        c.arg("-c");
        if args.is_empty() {
            c.arg(command);
        } else {
            c.arg(format!("{command} \"$@\""))
                .arg("fastlb-notify")
                .args(args);
        }
        match c.stdin(Stdio::null()).process_group(0).spawn() {
            Ok(child) => self.notifies.push(child),
            Err(e) => eprintln!(
                "health: cannot run notify command {command:?}: {}",
                os_text(&e)
            ),
        }
    }

    /// Whether any script is running (the caller then polls more often).
    pub fn busy(&self) -> bool {
        !self.scripts.is_empty()
    }

    /// Reaps what has exited, kills what overran, and appends finished scripts to `out`.
    pub fn reap(&mut self, now: Instant, out: &mut Vec<(u64, Attempt)>) {
        use std::os::unix::process::ExitStatusExt;
        self.notifies
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        let mut i = 0;
        while i < self.scripts.len() {
            let r = &mut self.scripts[i];
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    let outcome = match (status.code(), status.signal()) {
                        _ if r.killed => Attempt::Fail("script: timed out".into()),
                        (Some(0), _) => Attempt::Pass { weight: None },
                        (Some(c), _) if r.dynamic && (2..=255).contains(&c) => Attempt::Pass {
                            weight: Some(c - 2),
                        },
                        (Some(c), _) => Attempt::Fail(format!("script: exit status {c}")),
                        (None, Some(sig)) => {
                            Attempt::Fail(format!("script: killed by signal {sig}"))
                        }
                        (None, None) => Attempt::Fail("script: ended abnormally".into()),
                    };
                    out.push((r.token, outcome));
                    self.scripts.swap_remove(i);
                    continue;
                }
                Ok(None) if !r.killed && now >= r.deadline => {
                    // The whole process group, so that a shell's children go too.
                    let pgid = r.child.id() as libc::pid_t;
                    // SAFETY: plain syscall; the group is ours (process_group(0) at spawn)
                    // and not yet reaped, so its id cannot have been reused.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    r.killed = true;
                }
                Ok(None) => {}
                Err(e) => {
                    out.push((r.token, Attempt::Fail(format!("script: {}", os_text(&e)))));
                    self.scripts.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Drops the scripts whose tokens `keep` refuses (their checks were removed), killing
    /// them; they are still reaped later.
    pub fn forget(&mut self, keep: impl Fn(u64) -> bool) {
        for r in &mut self.scripts {
            if !keep(r.token) && !r.killed {
                // SAFETY: as in `reap`: our own, unreaped process group.
                unsafe { libc::kill(-(r.child.id() as libc::pid_t), libc::SIGKILL) };
                r.killed = true;
                r.token = u64::MAX;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::health::StatusRange;

    fn http(status: Vec<StatusRange>) -> HttpExchange {
        HttpExchange::new(
            &HttpCheck {
                path: "/health".into(),
                status,
                ..HttpCheck::default()
            },
            "[2001:db8::1]:8080".parse().unwrap(),
        )
    }

    #[test]
    fn request_and_status_parsing() {
        let h = http(vec![]);
        let req = String::from_utf8(h.request.clone()).unwrap();
        assert!(
            req.starts_with("GET /health HTTP/1.0\r\nHost: [2001:db8::1]\r\n"),
            "{req}"
        );
        assert!(req.ends_with("\r\n\r\n"));
        assert!(!HttpExchange::complete(b"HTTP/1.1 200"));
        assert!(HttpExchange::complete(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(
            h.judge(b"HTTP/1.1 204 No Content\r\n"),
            Attempt::Pass { weight: None }
        );
        assert_eq!(
            h.judge(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Attempt::Fail("http: status 503".into())
        );
        assert_eq!(
            h.judge(b"SSH-2.0-OpenSSH\r\n"),
            Attempt::Fail("http: no status line".into())
        );
        assert_eq!(
            h.judge(b"HTTP/1.1 2000\r\n"),
            Attempt::Fail("http: no status line".into())
        );
        assert!(matches!(h.judge(b""), Attempt::Fail(m) if m.contains("closed")));
        let h = http(vec![StatusRange { lo: 503, hi: 503 }]);
        assert_eq!(h.judge(b"HTTP/1.1 503 x\n"), Attempt::Pass { weight: None });
    }

    #[test]
    fn error_texts() {
        assert_eq!(errno_text(libc::ECONNREFUSED), "connection refused");
        assert_eq!(errno_text(libc::ETIMEDOUT), "timed out");
        assert_eq!(errno_text(libc::EHOSTUNREACH), "no route to host");
    }

    #[test]
    fn sockaddr_layout() {
        let (ss, len) = sockaddr("10.1.2.3:80".parse().unwrap());
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in>());
        // SAFETY: the storage holds a sockaddr_in, written just above.
        let sin: libc::sockaddr_in = unsafe { std::ptr::read(std::ptr::addr_of!(ss).cast()) };
        assert_eq!(u16::from_be(sin.sin_port), 80);
        assert_eq!(u32::from_be(sin.sin_addr.s_addr), 0x0A01_0203);
    }
}
