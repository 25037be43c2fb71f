//! Network checks over io_uring: every connect, send and recv is one submission linked to a
//! timeout (`IORING_OP_LINK_TIMEOUT`) for what is left of the attempt's deadline, so a dead
//! server costs a completion, never a blocked thread.
//!
//! Each attempt owns a boxed slot holding the buffers the kernel reads and writes; a slot is
//! freed only after the completion of its last operation, and dropping the backend first
//! waits for every operation still in the kernel (all are bounded by their timeouts).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::checker::{errno_text, sockaddr, tcp_socket, HttpExchange, NetBackend, NetProbe};
use super::state::Attempt;

/// Bytes of the reply kept: enough for any sane status line.
const REPLY_BUF: usize = 512;
/// The low bit of user_data marks a linked timeout's own completion, which is ignored.
const TIMEOUT_BIT: u64 = 1;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stage {
    Connect,
    Send,
    Recv,
}

struct Slot {
    token: u64,
    fd: OwnedFd,
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    http: Option<Arc<HttpExchange>>,
    deadline: Instant,
    stage: Stage,
    sent: usize,
    reply: [u8; REPLY_BUF],
    got: usize,
    timeout: types::Timespec,
}

/// The io_uring backend.
pub(crate) struct UringBackend {
    ring: IoUring,
    slots: Vec<Option<Box<Slot>>>,
    free: Vec<usize>,
    live: usize,
    done: Vec<(u64, Attempt)>,
}

impl UringBackend {
    /// Sets up a ring, or says why not (ENOSYS, EPERM under seccomp, ...). Needs
    /// `IORING_FEAT_EXT_ARG` (Linux 5.11) to wait with a timeout.
    pub fn new() -> io::Result<UringBackend> {
        let ring = IoUring::new(256)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel lacks IORING_FEAT_EXT_ARG",
            ));
        }
        Ok(UringBackend {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            done: Vec::new(),
        })
    }

    /// Queues the next operation of slot `i` with its linked timeout.
    fn submit_stage(&mut self, i: usize) {
        let now = Instant::now();
        let slot = self.slots[i].as_mut().expect("live slot");
        let left = slot.deadline.saturating_duration_since(now);
        slot.timeout = types::Timespec::from(left);
        let fd = types::Fd(slot.fd.as_raw_fd());
        let op = match slot.stage {
            Stage::Connect => {
                opcode::Connect::new(fd, std::ptr::addr_of!(slot.addr).cast(), slot.addr_len)
                    .build()
            }
            Stage::Send => {
                let req = &slot.http.as_ref().expect("http").request[slot.sent..];
                opcode::Send::new(fd, req.as_ptr(), req.len() as u32).build()
            }
            Stage::Recv => {
                let buf = &mut slot.reply[slot.got..];
                opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32).build()
            }
        };
        let op = op.flags(squeue::Flags::IO_LINK).user_data((i as u64) << 1);
        let timeout = opcode::LinkTimeout::new(&slot.timeout)
            .build()
            .user_data(((i as u64) << 1) | TIMEOUT_BIT);
        loop {
            // SAFETY: the buffers the entries point at (address, request, reply, timespec)
            // live in the boxed slot, which is freed only after this operation's completion
            // (see `finish`) or after `drop` has drained the ring.
            let pushed = unsafe {
                let mut sq = self.ring.submission();
                if sq.capacity() - sq.len() >= 2 {
                    sq.push(&op).expect("room checked");
                    sq.push(&timeout).expect("room checked");
                    true
                } else {
                    false
                }
            };
            if pushed {
                break;
            }
            // A full queue: hand what is queued to the kernel and try again.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    eprintln!("health: io_uring submit: {e}");
                }
            }
        }
    }

    fn finish(&mut self, i: usize, outcome: Attempt) {
        let slot = self.slots[i].take().expect("live slot");
        self.free.push(i);
        self.live -= 1;
        self.done.push((slot.token, outcome));
    }

    /// Moves slot `i` on after its operation completed with `res`.
    fn advance(&mut self, i: usize, res: i32) {
        let Some(slot) = self.slots[i].as_mut() else {
            return;
        };
        let what = match slot.stage {
            Stage::Connect => "connect",
            Stage::Send => "http: send",
            Stage::Recv => "http: recv",
        };
        if res < 0 {
            // ECANCELED: the linked timeout fired first. EINTR/EAGAIN do not reach here
            // for these operations; anything else is the socket's own error.
            let reason = if res == -libc::ECANCELED || res == -libc::ETIME {
                format!("{what}: timed out")
            } else {
                format!("{what}: {}", errno_text(-res))
            };
            return self.finish(i, Attempt::Fail(reason));
        }
        let n = res as usize;
        match slot.stage {
            Stage::Connect => match &slot.http {
                None => return self.finish(i, Attempt::Pass { weight: None }),
                Some(_) => slot.stage = Stage::Send,
            },
            Stage::Send => {
                slot.sent += n;
                if slot.sent >= slot.http.as_ref().expect("http").request.len() {
                    slot.stage = Stage::Recv;
                }
            }
            Stage::Recv => {
                slot.got += n;
                let got = &slot.reply[..slot.got];
                if n == 0 || HttpExchange::complete(got) || slot.got == REPLY_BUF {
                    let outcome = slot.http.as_ref().expect("http").judge(got);
                    return self.finish(i, outcome);
                }
            }
        }
        if Instant::now() >= slot.deadline {
            return self.finish(i, Attempt::Fail(format!("{what}: timed out")));
        }
        self.submit_stage(i);
    }

    fn reap(&mut self) {
        let mut cqes = Vec::new();
        for cqe in self.ring.completion() {
            cqes.push((cqe.user_data(), cqe.result()));
        }
        for (ud, res) in cqes {
            if ud & TIMEOUT_BIT == 0 {
                self.advance((ud >> 1) as usize, res);
            }
        }
    }
}

impl NetBackend for UringBackend {
    fn start(&mut self, probe: NetProbe) {
        let fd = match tcp_socket(probe.target, false) {
            Ok(fd) => fd,
            Err(e) => {
                let reason = format!("socket: {}", super::checker::os_text(&e));
                self.done.push((probe.token, Attempt::Fail(reason)));
                return;
            }
        };
        let (addr, addr_len) = sockaddr(probe.target);
        let slot = Box::new(Slot {
            token: probe.token,
            fd,
            addr,
            addr_len,
            http: probe.http,
            deadline: probe.deadline,
            stage: Stage::Connect,
            sent: 0,
            reply: [0; REPLY_BUF],
            got: 0,
            timeout: types::Timespec::new(),
        });
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.live += 1;
        self.submit_stage(i);
    }

    fn wait(&mut self, max: Duration, out: &mut Vec<(u64, Attempt)>) {
        if self.done.is_empty() {
            let ts = types::Timespec::from(max);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(e) => {
                    eprintln!("health: io_uring wait: {e}");
                    std::thread::sleep(max.min(Duration::from_millis(10)));
                }
            }
        } else if let Err(e) = self.ring.submit() {
            eprintln!("health: io_uring submit: {e}");
        }
        self.reap();
        out.append(&mut self.done);
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        // The kernel may still write into live slots: wait for every operation to end.
        // Each is bounded by its linked timeout.
        let mut sink = Vec::new();
        while self.live > 0 {
            self.wait(Duration::from_millis(100), &mut sink);
        }
    }
}
