//! The backup daemon, sans-IO: reads a datagram as a kernel backup does
//! (`ip_vs_process_message`), binds each connection to one of this director's real servers
//! (`ip_vs_find_dest`) and hands it to the worker that will own it.
//!
//! What is refused, and counted:
//!
//! - a datagram that arrived on another interface than the daemon's (the kernel binds its
//!   socket to the interface and never sees those);
//! - a datagram for another sync group: with a `syncid` other than 0 the backup takes only
//!   its own group; with 0 it takes every group (the kernel's rule);
//! - malformed datagrams and entries, as `message.rs` describes;
//! - a connection whose service or real server this director does not have. The kernel
//!   keeps such a connection unbound and binds it if the real server appears later;
//!   fastlb cannot forward a connection without a real server, so it does not keep it.

use std::net::IpAddr;

use super::counters::DaemonCounters;
use super::hook::{encode_install, INSTALL_WORDS};
use super::master::entry_for;
use super::message::{EntryError, Message, MessageError, Skip, SyncConn, Version};
use super::ring::Producer;
use super::wire::flags;
use crate::conn::{Described, Synced, TcpState, Timeouts};
use crate::service::config::error::MAX_TIMEOUT_SECS;
use crate::service::{DestId, ForwardMethod, Protocol, ServiceEntry, ServiceKey, ServiceTable};

/// The timeout of a version-0 template (the kernel's `3*60*HZ`).
const V0_TEMPLATE_TIMEOUT: u32 = 180;

/// The backup's settings.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The sync group taken; 0 takes every group.
    pub syncid: u8,
    /// The interface datagrams must arrive on.
    pub ifindex: u32,
}

impl Backup {
    /// Reads one datagram that arrived on interface `arrived_on` (if known), binds its
    /// connections against `table` and hands each, as an install record, to `install`.
    pub fn handle(
        &self,
        datagram: &[u8],
        arrived_on: Option<u32>,
        table: &ServiceTable,
        timeouts: &Timeouts,
        counters: &DaemonCounters,
        install: &mut impl FnMut(&Synced),
    ) {
        counters.received.add(1);
        counters.received_bytes.add(datagram.len() as u64);
        if arrived_on.is_some_and(|i| i != self.ifindex) {
            counters.wrong_interface.add(1);
            return;
        }
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(MessageError::TooShort) => return counters.too_short.add(1),
            Err(MessageError::SizeMismatch) => return counters.size_mismatch.add(1),
        };
        if self.syncid != 0 && msg.syncid() != self.syncid {
            counters.wrong_syncid.add(1);
            return;
        }
        match msg.version() {
            Version::V0 => counters.messages_v0.add(1),
            Version::V1 => counters.messages_v1.add(1),
        }
        for entry in msg.entries() {
            let conn = match entry {
                Ok(Ok(c)) => c,
                Ok(Err(skip)) => {
                    match skip {
                        Skip::UnknownParameter => &counters.unknown_parameter,
                        Skip::UnsupportedProtocol => &counters.unsupported_protocol,
                        Skip::InvalidState => &counters.invalid_state,
                        Skip::PersistenceEngine => &counters.persistence_engine,
                    }
                    .add(1);
                    continue;
                }
                Err(e) => {
                    match e {
                        EntryError::Overrun => &counters.entry_overrun,
                        EntryError::UnknownVersion => &counters.entry_version,
                        EntryError::UnknownType => &counters.entry_type,
                        EntryError::BadParameter => &counters.bad_parameter,
                    }
                    .add(1);
                    break;
                }
            };
            match bind(&conn, msg.version(), table, timeouts) {
                Some(s) => {
                    counters.accepted.add(1);
                    install(&s);
                }
                None => counters.no_destination.add(1),
            }
        }
    }
}

/// `conn` bound to one of this director's real servers, with the timeout the kernel would
/// give it (`ip_vs_proc_conn`): the message's, or for version 0 the protocol's timeout of
/// its state (3 minutes for a template). `None` if no real server matches.
pub fn bind(
    conn: &SyncConn,
    version: Version,
    table: &ServiceTable,
    timeouts: &Timeouts,
) -> Option<Synced> {
    let raw_flags = match version {
        Version::V1 => conn.flags & flags::BACKUP_MASK,
        Version::V0 => conn.flags,
    };
    let template = raw_flags & flags::TEMPLATE != 0;
    let svc = find_service(table, conn)?;
    if template && conn.protocol != 0 && matches!(svc.config.key, ServiceKey::Fwmark { .. }) {
        // A firewall-mark service's templates are IPPROTO_IP (`ip_vs_sched_persist`): a
        // TCP or UDP template found through its mark would be described without it.
        return None;
    }
    let (dest, method) = find_dest(svc, conn, raw_flags)?;
    let state = if template {
        0
    } else {
        // check_state in message.rs has kept TCP states below 11 and UDP at 0.
        conn.state as u8
    };
    let timeout_s = match conn.timeout {
        0 if template => V0_TEMPLATE_TIMEOUT,
        0 => match Protocol::from_number(conn.protocol) {
            Some(Protocol::Tcp) => timeouts.tcp(TcpState::from_index(state)?),
            _ => timeouts.udp(),
        },
        // The kernel takes any 32-bit timeout (ip_vs_proc_conn): a peer could pin an entry
        // for 136 years. fastlb bounds it as it bounds configured timeouts.
        t => t.min(MAX_TIMEOUT_SECS),
    };
    let synced = Synced {
        protocol: conn.protocol,
        template,
        client: conn.caddr,
        cport: conn.cport,
        vaddr: conn.vaddr,
        vport: conn.vport,
        daddr: conn.daddr,
        dport: conn.dport,
        method,
        dest,
        state,
        timeout_s,
        inactive: raw_flags & flags::INACTIVE != 0,
        in_pkts: 0,
    };
    described_again(&synced, table).then_some(synced)
}

/// Whether the entry fastlb's master (and its state file's writer) would make of `s` binds
/// again to the same real server. What `bind` accepts has to: an entry installed here is
/// written to the state file at exit and sent on if this director becomes the master, and
/// one that no longer finds its service when read back is a connection that survives one
/// restart and is lost at the next. The master describes an entry's service by its mark
/// alone (`described_mark`: a firewall-mark template's virtual address, or the mark the
/// classifier rules give the entry's packets), so an entry whose mark field took it to a
/// service its own packets do not reach is refused: a firewall-mark template whose mark is
/// not its virtual address, an entry of a protocol IPVS does not schedule found through a
/// mark, and a connection whose mark names a service the classifier rules do not send its
/// packets to (all found by the `state_file` fuzz target). A kernel master sends none of
/// these when both directors carry the same rules: it sets an entry's mark from the packet
/// that made it (`skb->mark`) and a template's virtual address from the mark
/// (`ip_vs_sched_persist`).
fn described_again(s: &Synced, table: &ServiceTable) -> bool {
    let again = entry_for(
        &Described {
            protocol: s.protocol,
            template: s.template,
            client: s.client,
            cport: s.cport,
            vaddr: s.vaddr,
            vport: s.vport,
            daddr: s.daddr,
            dport: s.dport,
            method: s.method,
            dest: s.dest,
            state: s.state,
            timeout_s: s.timeout_s,
        },
        table,
    );
    find_service(table, &again)
        .and_then(|svc| find_dest(svc, &again, again.flags))
        .is_some_and(|(dest, _)| dest == s.dest)
}

/// `ip_vs_service_find`: the firewall-mark service of the entry's mark, else the service
/// `<protocol, vaddr, vport>`, else the port-0 service `<protocol, vaddr, 0>`.
fn find_service<'t>(table: &'t ServiceTable, conn: &SyncConn) -> Option<&'t ServiceEntry> {
    if conn.fwmark != 0 {
        let key = ServiceKey::Fwmark {
            mark: conn.fwmark,
            ipv6: conn.vaddr.is_ipv6(),
        };
        if let Some(id) = table.by_key(&key) {
            return Some(table.service(id));
        }
    }
    let protocol = Protocol::from_number(conn.protocol)?;
    let tuple = |port| ServiceKey::Tuple {
        protocol,
        addr: conn.vaddr,
        port,
    };
    table
        .by_key(&tuple(conn.vport))
        .or_else(|| table.by_key(&tuple(0)))
        .map(|id| table.service(id))
}

/// `ip_vs_find_dest`'s real server lookup: by address and port, the port taken as 0 for a
/// firewall-mark entry not forwarded by NAT, then with the other port.
fn find_dest(
    svc: &ServiceEntry,
    conn: &SyncConn,
    raw_flags: u32,
) -> Option<(DestId, ForwardMethod)> {
    let port = if conn.fwmark != 0 && raw_flags & flags::FWD_MASK != flags::MASQ {
        0
    } else {
        conn.dport
    };
    let find = |addr: IpAddr, port: u16| {
        svc.dests
            .iter()
            .find(|d| d.server.addr == addr && d.server.port == port)
            .map(|d| (d.id, d.server.method))
    };
    find(conn.daddr, port).or_else(|| find(conn.daddr, port ^ conn.dport))
}

/// Which worker installs a connection: a hash of its key, so every message about one
/// connection reaches the same worker, in order.
pub fn worker_for(s: &Synced, workers: usize) -> usize {
    let fold = |a: IpAddr| match a {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v >> 64) as u64 ^ v as u64
        }
    };
    let k = fold(s.client)
        ^ fold(s.vaddr).rotate_left(17)
        ^ u64::from(s.cport) << 32
        ^ u64::from(s.vport) << 48
        ^ u64::from(s.protocol)
        ^ u64::from(s.template);
    let h = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> 32) as usize) % workers.max(1)
}

/// Hands `s` to its worker's install queue; false if that queue was full.
pub fn route(s: &Synced, queues: &mut [Producer<INSTALL_WORDS>]) -> bool {
    let i = worker_for(s, queues.len());
    queues[i].push(&encode_install(s))
}
