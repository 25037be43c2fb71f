//! The master daemon, sans-IO: takes the connections the workers queued, reads each back
//! from the shared table, and packs them into version-1 messages of at most `sync_maxlen`
//! bytes; the caller sends them.
//!
//! A full message goes at once. A message that is not full goes [`SEND_DELAY`] after its
//! first entry. (The kernel queues a partly filled buffer only after 2 s,
//! `IPVS_SYNC_FLUSH_TIME`, and then wakes its thread 20 ms later; fastlb keeps only the
//! 20 ms, so a new connection reaches the backup well within 100 ms.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::counters::DaemonCounters;
use super::message::{Encoder, SyncConn};
use super::ring::Consumer;
use super::wire::flags;
use crate::conn::{ConnId, ConnTable, Described, TcpState};
use crate::service::{ForwardMethod, Protocol, ServiceKey, ServiceTable};
use crate::time::Instant;

/// How long a partly filled message waits for more entries (`IPVS_SYNC_SEND_DELAY`,
/// `HZ / 50`).
pub const SEND_DELAY: Duration = Duration::from_millis(20);

/// Entries taken from each worker's queue per call, so one busy worker cannot hold the
/// thread.
const TAKE_PER_WORKER: usize = 4096;

/// The sync message entry for `d`, as the kernel fills one from its `struct ip_vs_conn`:
/// the flags a kernel connection to the same real server would carry (forwarding method,
/// `NOOUTPUT` unless NAT, `INACTIVE` unless an active TCP state, `TEMPLATE`), and the
/// firewall mark of its service.
pub fn entry_for(d: &Described, table: &ServiceTable) -> SyncConn {
    let mut f = match d.method {
        ForwardMethod::Masquerade => flags::MASQ,
        ForwardMethod::Tunnel => flags::TUNNEL | flags::NOOUTPUT,
        ForwardMethod::DirectRouting => flags::DROUTE | flags::NOOUTPUT,
    };
    let tcp = d.protocol == Protocol::Tcp.number();
    let active =
        !d.template && tcp && TcpState::from_index(d.state).is_some_and(TcpState::is_active);
    if !active {
        f |= flags::INACTIVE;
    }
    if d.template {
        f |= flags::TEMPLATE;
    }
    SyncConn {
        protocol: d.protocol,
        flags: f,
        state: u16::from(if tcp && !d.template { d.state } else { 0 }),
        cport: d.cport,
        vport: d.vport,
        dport: d.dport,
        fwmark: fwmark_of(d, table),
        timeout: d.timeout_s,
        caddr: d.client,
        vaddr: d.vaddr,
        daddr: d.daddr,
    }
}

/// The mark a kernel entry carries (`skb->mark` of its first packet): the firewall-mark
/// service's mark, for its connections and templates; 0 otherwise.
fn fwmark_of(d: &Described, table: &ServiceTable) -> u32 {
    described_mark(d.template, d.protocol, d.vaddr, d.vport, table)
}

/// The mark the master (and the state file's writer) puts in the entry of a connection or
/// template of `protocol` to `vaddr:vport`: a firewall-mark template's mark is its virtual
/// address; any other entry's is the mark of the service `table` finds for its packets
/// (through the classifier rules), or 0. The backup's `bind` checks that this leads back to
/// the service it bound an entry to.
pub fn described_mark(
    template: bool,
    protocol: u8,
    vaddr: IpAddr,
    vport: u16,
    table: &ServiceTable,
) -> u32 {
    if template && protocol == 0 {
        return match vaddr {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(a) => (u128::from(a) >> 96) as u32,
        };
    }
    let Some(protocol) = Protocol::from_number(protocol) else {
        return 0;
    };
    match table.find(protocol, vaddr, vport) {
        Some(sid) => match table.service(sid).config.key {
            ServiceKey::Fwmark { mark, .. } => mark,
            ServiceKey::Tuple { .. } => 0,
        },
        None => 0,
    }
}

/// The master's state between calls.
#[derive(Debug)]
pub struct Master {
    encoder: Encoder,
    /// When the first entry of the message being built was added.
    first: Option<Instant>,
}

impl Master {
    /// A master for sync group `syncid`, sending messages of at most `maxlen` bytes.
    pub fn new(syncid: u8, maxlen: usize) -> Master {
        Master {
            encoder: Encoder::new(syncid, maxlen),
            first: None,
        }
    }

    /// Entries in the message being built.
    pub fn pending(&self) -> usize {
        self.encoder.pending()
    }

    /// Takes what the workers queued, reads each entry back from `conns` and adds it to
    /// the message being built; full messages go to `send`.
    pub fn take(
        &mut self,
        now: Instant,
        conns: &ConnTable,
        table: &ServiceTable,
        queues: &mut [Consumer<1>],
        counters: &DaemonCounters,
        send: &mut impl FnMut(&[u8]),
    ) {
        for q in queues.iter_mut() {
            for _ in 0..TAKE_PER_WORKER {
                let Some([bits]) = q.pop() else {
                    break;
                };
                let described = ConnId::from_bits(bits).and_then(|id| conns.describe(id));
                let Some(d) = described else {
                    counters.gone.add(1);
                    continue;
                };
                self.add(now, &entry_for(&d, table), counters, send);
            }
        }
    }

    /// Adds one entry (sent as is) to the message being built.
    pub fn add(
        &mut self,
        now: Instant,
        conn: &SyncConn,
        counters: &DaemonCounters,
        send: &mut impl FnMut(&[u8]),
    ) {
        let mut sent = None;
        let pushed = self.encoder.push(conn, |m| {
            send(m);
            sent = Some(m.len());
        });
        if let Some(len) = sent {
            counters.sent_messages.add(1);
            counters.sent_bytes.add(len as u64);
            self.first = None;
        }
        match pushed {
            Ok(()) => {
                self.first.get_or_insert(now);
                if conn.is_template() {
                    counters.sent_templates.add(1);
                } else {
                    counters.sent_conns.add(1);
                }
            }
            Err(_) => counters.unencodable.add(1),
        }
    }

    /// When the message being built is due ([`SEND_DELAY`] after its first entry).
    pub fn due(&self) -> Option<Instant> {
        self.first.map(|t| t + SEND_DELAY)
    }

    /// Sends the message being built if it is due at `now`.
    pub fn poll(&mut self, now: Instant, counters: &DaemonCounters, send: &mut impl FnMut(&[u8])) {
        if self.due().is_some_and(|d| now >= d) {
            self.flush(counters, send);
        }
    }

    /// Sends the message being built, if it holds anything.
    pub fn flush(&mut self, counters: &DaemonCounters, send: &mut impl FnMut(&[u8])) {
        self.encoder.flush(|m| {
            counters.sent_messages.add(1);
            counters.sent_bytes.add(m.len() as u64);
            send(m);
        });
        self.first = None;
    }
}

/// The address a firewall-mark template carries as its virtual address (the kernel puts
/// the mark in the first 32 bits).
pub fn fwmark_vaddr(mark: u32, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(u128::from(mark) << 96))
    } else {
        IpAddr::V4(Ipv4Addr::from(mark))
    }
}
