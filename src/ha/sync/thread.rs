//! The sync thread: the I/O shell around [`Master`] and [`Backup`].
//!
//! ```text
//!   control thread                      sync thread
//!   ──────────────                      ───────────
//!   Push.sync ─> SyncThread::apply ──> opens the sockets, sends them over ──> runs the master
//!                                                                              and/or backup
//!   loop:  take the workers' queues ─> encode ─> send (full at once, partial after 20 ms)
//!          read the backup socket ─> decode ─> bind ─> the workers' install queues
//!          sleep in poll: 1 ms while a master runs, else until a datagram (10 ms at most)
//! ```
//!
//! The sockets are opened by the control thread, in [`SyncThread::apply`], so that a
//! failure comes back to whoever asked; the thread only reads and writes them.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::backup::{route, Backup};
use super::counters::DaemonCounters;
use super::daemon::{DaemonState, SyncDaemons};
use super::hook::{SyncEnds, SyncShared};
use super::master::Master;
use super::socket::{backup_socket, master_socket, BackupSocket};
use crate::conn::ConnTable;
use crate::service::{ServiceTable, SyncRole};
use crate::time::Instant;

/// How long the thread sleeps between looks at the workers' queues while a master runs.
const MASTER_TICK_MS: i32 = 1;
/// How long it waits for a datagram while only a backup runs (bounds how soon a command
/// is seen).
const BACKUP_WAIT_MS: i32 = 10;
/// Datagrams read per turn at most.
const DATAGRAMS_PER_TURN: usize = 256;

enum Command {
    Master(Option<(DaemonState, UdpSocket)>),
    Backup(Option<(DaemonState, BackupSocket)>),
    Stop,
}

/// The running sync thread.
#[derive(Debug)]
pub struct SyncThread {
    commands: Sender<Command>,
    handle: Option<JoinHandle<()>>,
    running: SyncDaemons,
    sock_size: u32,
    counters: Arc<DaemonCounters>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Master(_) => "Master",
            Command::Backup(_) => "Backup",
            Command::Stop => "Stop",
        })
    }
}

/// What the thread works with.
pub struct SyncContext {
    /// The connection table.
    pub conns: Arc<ConnTable>,
    /// Snapshots of the service table (for firewall marks and binding to real servers).
    pub tables: Receiver<Arc<ServiceTable>>,
    /// The snapshot in force now.
    pub table: Arc<ServiceTable>,
    /// What the workers share with it.
    pub shared: Arc<SyncShared>,
    /// Its ends of the workers' queues.
    pub ends: SyncEnds,
    /// Its counters.
    pub counters: Arc<DaemonCounters>,
}

impl SyncThread {
    /// Starts the thread, with no daemon running.
    pub fn spawn(ctx: SyncContext) -> io::Result<SyncThread> {
        let (commands, rx) = crossbeam_channel::unbounded();
        let counters = Arc::clone(&ctx.counters);
        let handle = std::thread::Builder::new()
            .name("fastlb-sync".into())
            .spawn(move || run(ctx, rx))?;
        Ok(SyncThread {
            commands,
            handle: Some(handle),
            running: SyncDaemons::default(),
            sock_size: 0,
            counters,
        })
    }

    /// The thread's counters.
    pub fn counters(&self) -> &Arc<DaemonCounters> {
        &self.counters
    }

    /// Makes the running daemons `want`: opens the sockets of daemons that start or
    /// change (here, on the calling thread), closes those that stop. Returns the daemons
    /// whose socket could not be opened; they do not run.
    pub fn apply(&mut self, want: &SyncDaemons, sock_size: u32) -> Vec<(SyncRole, io::Error)> {
        let mut failed = Vec::new();
        let reopen = sock_size != self.sock_size;
        self.sock_size = sock_size;
        for role in [SyncRole::Master, SyncRole::Backup] {
            let (have, wanted) = (self.running.get(role), want.get(role));
            if have == wanted && !(reopen && wanted.is_some()) {
                continue;
            }
            let command = match (role, wanted) {
                (SyncRole::Master, None) => Ok(Command::Master(None)),
                (SyncRole::Backup, None) => Ok(Command::Backup(None)),
                (SyncRole::Master, Some(d)) => {
                    master_socket(d, sock_size).map(|s| Command::Master(Some((d.clone(), s))))
                }
                (SyncRole::Backup, Some(d)) => {
                    backup_socket(d, sock_size).map(|s| Command::Backup(Some((d.clone(), s))))
                }
            };
            match command {
                Ok(c) => {
                    // The thread lives as long as `self`, so the send cannot fail.
                    let _ = self.commands.send(c);
                    *self.running.slot(role) = wanted.cloned();
                }
                Err(e) => {
                    if have.is_some() {
                        let _ = self.commands.send(match role {
                            SyncRole::Master => Command::Master(None),
                            SyncRole::Backup => Command::Backup(None),
                        });
                        *self.running.slot(role) = None;
                    }
                    failed.push((role, e));
                }
            }
        }
        failed
    }
}

impl Drop for SyncThread {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct MasterIo {
    socket: UdpSocket,
    master: Master,
}

struct BackupIo {
    socket: BackupSocket,
    backup: Backup,
    buf: Vec<u8>,
}

fn run(mut ctx: SyncContext, commands: Receiver<Command>) {
    let epoch = std::time::Instant::now();
    let clock = || Instant::from_micros(epoch.elapsed().as_micros() as u64);
    let mut master: Option<MasterIo> = None;
    let mut backup: Option<BackupIo> = None;
    loop {
        let idle = master.is_none() && backup.is_none();
        let next = if idle {
            commands.recv().ok()
        } else {
            commands.try_recv().ok()
        };
        if let Some(c) = next {
            match c {
                Command::Stop => break,
                Command::Master(m) => {
                    // Whatever a previous master left is discarded, as the kernel does
                    // when its master stops.
                    ctx.shared.set_master(false);
                    for q in &mut ctx.ends.outbound {
                        while q.pop().is_some() {}
                    }
                    master = m.map(|(d, socket)| MasterIo {
                        socket,
                        master: Master::new(d.syncid, usize::from(d.sync_maxlen)),
                    });
                    ctx.shared.set_master(master.is_some());
                }
                Command::Backup(b) => {
                    backup = b.map(|(d, socket)| BackupIo {
                        socket,
                        backup: Backup {
                            syncid: d.syncid,
                            ifindex: d.ifindex,
                        },
                        buf: vec![0; usize::from(d.sync_maxlen)],
                    });
                }
            }
            continue;
        }
        while let Ok(t) = ctx.tables.try_recv() {
            ctx.table = t;
        }
        let now = clock();
        let counters = &*ctx.counters;
        if let Some(m) = &mut master {
            let sock = &m.socket;
            let mut send = |b: &[u8]| {
                if sock.send(b).is_err() {
                    counters.send_errors.add(1);
                }
            };
            m.master.take(
                now,
                &ctx.conns,
                &ctx.table,
                &mut ctx.ends.outbound,
                counters,
                &mut send,
            );
            m.master.poll(now, counters, &mut send);
        }
        if let Some(b) = &mut backup {
            let installs = &mut ctx.ends.installs;
            for _ in 0..DATAGRAMS_PER_TURN {
                match b.socket.recv(&mut b.buf) {
                    Ok(Some(r)) => b.backup.handle(
                        &b.buf[..r.len],
                        r.ifindex,
                        &ctx.table,
                        ctx.conns.timeouts(),
                        counters,
                        &mut |s| {
                            if !route(s, installs) {
                                counters.install_queue_full.add(1);
                            }
                        },
                    ),
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
        }
        let wait = if master.is_some() {
            MASTER_TICK_MS
        } else {
            BACKUP_WAIT_MS
        };
        match &backup {
            Some(b) => {
                let mut pfd = libc::pollfd {
                    fd: b.socket.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: `pfd` is one valid pollfd for the call's duration.
                unsafe { libc::poll(&mut pfd, 1, wait) };
            }
            None => std::thread::sleep(Duration::from_millis(wait as u64)),
        }
    }
    ctx.shared.set_master(false);
}
