//! The workers' side of connection sync.
//!
//! ```text
//!  worker (pipeline)                         sync thread
//!  ─────────────────                         ───────────
//!  packet from a client ──> SyncHook ──ConnId──> outbound ring ──> describe, encode, send
//!                           (decide.rs)
//!  between batches <──── install records <──── install ring <──── receive, decode, bind
//!  ConnTable::install                                                to a real server
//! ```
//!
//! While a master runs, each packet from a client costs the worker one look at the
//! connection's slot (state, sync bookkeeping, whether a template controls it): with the
//! usual sysctls most packets are settled there, counted and not due
//! ([`SyncRules::quiet`]). The rest take the kernel's whole decision (`decide.rs`) and,
//! when the connection is to be sent, one word pushed on the worker's own bounded queue (a full
//! queue drops it and counts `queue_full`, as the kernel's `sync_qlen_max` does). The sync
//! thread reads the entry back from the shared table, so the queue carries only handles.
//! Installs travel the other way: a backup's connections are created by the worker that
//! owns the slots they land in, between batches, like every other entry.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::decide::{Quiet, SyncRules};
use super::ring::{ring, Consumer, Producer};
use crate::conn::{ConnId, ConnTable, Installed, Synced};
use crate::service::{DestId, ForwardMethod, SyncSettings};
use crate::stats::Counter;
use crate::time::Instant;

/// Words of an install record.
pub const INSTALL_WORDS: usize = 8;
/// Install records a worker takes per call between batches: an idle worker passes about
/// every 10 ms, so this is at least 100 k connections a second per worker.
pub const INSTALLS_PER_BATCH: usize = 1024;

/// One worker's sync counters (written by that worker).
#[derive(Debug, Default)]
pub struct WorkerSyncStats {
    /// Connections and templates queued for the sync thread.
    pub queued: Counter,
    /// Dropped because the worker's queue was full (`sync_qlen_max`).
    pub queue_full: Counter,
    /// Installed as new entries.
    pub created: Counter,
    /// Existing entries updated.
    pub updated: Counter,
    /// Entries replaced (same client, another real server).
    pub replaced: Counter,
    /// Messages about connections already replaced, ignored.
    pub ignored: Counter,
    /// Not installed: the connection table was full.
    pub table_full: Counter,
    /// Not installed: addresses of mixed families or a protocol fastlb does not hold.
    pub unusable: Counter,
}

/// What the workers, the sync thread and the director share.
#[derive(Debug)]
pub struct SyncShared {
    /// Set by the sync thread while the master's socket is up.
    master_on: AtomicBool,
    /// `threshold | period << 32`.
    rules_a: AtomicU64,
    /// `refresh_ms | retries << 32 | persist_mode << 40`.
    rules_b: AtomicU64,
    workers: Box<[WorkerSyncStats]>,
}

impl SyncShared {
    /// Publishes the sync sysctls the workers apply from their next batch.
    pub fn set_rules(&self, s: &SyncSettings) {
        let r = SyncRules::from(s);
        self.rules_a.store(
            u64::from(r.threshold) | u64::from(r.period) << 32,
            Ordering::Relaxed,
        );
        self.rules_b.store(
            u64::from(r.refresh_period_ms)
                | u64::from(r.retries) << 32
                | u64::from(r.persist_mode) << 40,
            Ordering::Relaxed,
        );
    }

    /// The rules in force.
    pub fn rules(&self) -> SyncRules {
        let a = self.rules_a.load(Ordering::Relaxed);
        let b = self.rules_b.load(Ordering::Relaxed);
        SyncRules {
            threshold: a as u32,
            period: (a >> 32) as u32,
            refresh_period_ms: b as u32,
            retries: (b >> 32) as u8 as u32,
            persist_mode: b >> 40 & 1 == 1,
        }
    }

    /// Turns the workers' side of the master on or off (the sync thread does, as its
    /// socket comes and goes).
    pub fn set_master(&self, on: bool) {
        self.master_on.store(on, Ordering::Release);
    }

    /// Whether the workers queue connections.
    pub fn master(&self) -> bool {
        self.master_on.load(Ordering::Acquire)
    }

    /// Each worker's counters.
    pub fn workers(&self) -> &[WorkerSyncStats] {
        &self.workers
    }
}

/// The sync thread's ends of every worker's queues, worker `i` at index `i`.
#[derive(Debug)]
pub struct SyncEnds {
    /// Connections the workers want sent.
    pub outbound: Vec<Consumer<1>>,
    /// Connections for the workers to install.
    pub installs: Vec<Producer<INSTALL_WORDS>>,
}

/// The shared state, one [`SyncHook`] per worker, and the sync thread's ends: each
/// worker's outbound queue holds `qlen_max` connections (rounded up to a power of two),
/// its install queue as many.
pub fn channels(
    workers: usize,
    settings: &SyncSettings,
) -> (Arc<SyncShared>, Vec<SyncHook>, SyncEnds) {
    let shared = Arc::new(SyncShared {
        master_on: AtomicBool::new(false),
        rules_a: AtomicU64::new(0),
        rules_b: AtomicU64::new(0),
        workers: (0..workers).map(|_| WorkerSyncStats::default()).collect(),
    });
    shared.set_rules(settings);
    let qlen = settings.sync_qlen_max as usize;
    let mut hooks = Vec::with_capacity(workers);
    let mut ends = SyncEnds {
        outbound: Vec::with_capacity(workers),
        installs: Vec::with_capacity(workers),
    };
    for worker in 0..workers {
        let (out, outbound) = ring::<1>(qlen);
        let (installs_tx, installs) = ring::<INSTALL_WORDS>(qlen);
        hooks.push(SyncHook {
            shared: Arc::clone(&shared),
            worker,
            out,
            installs,
            rules: None,
            quiet: None,
        });
        ends.outbound.push(outbound);
        ends.installs.push(installs_tx);
    }
    (shared, hooks, ends)
}

/// One worker's part of connection sync (see the module docs).
#[derive(Debug)]
pub struct SyncHook {
    shared: Arc<SyncShared>,
    worker: usize,
    out: Producer<1>,
    installs: Consumer<INSTALL_WORDS>,
    /// The rules while a master runs, read between batches.
    rules: Option<SyncRules>,
    /// Their fast path, if they have one, while a master runs.
    quiet: Option<Quiet>,
}

impl SyncHook {
    /// A packet from the client of connection `id` has just been through the table (its
    /// state advanced): counts it and queues the connection, and its controlling template,
    /// if the kernel's rules say they are to be sent. Nothing while no master runs.
    #[inline(always)]
    pub fn after_client_packet(&mut self, conns: &ConnTable, id: ConnId, now: Instant) {
        // Most packets are not due: counted in one look at the entry, and done.
        if let Some(q) = self.quiet {
            if conns.sync_count(id, |peek| q.settle(peek)) {
                return;
            }
        }
        if let Some(rules) = self.rules {
            self.check_due(&rules, conns, id, now);
        }
    }

    /// Whether [`SyncHook::after_client_packet`] counts each packet in the entry's
    /// `in_pkts` now (a master runs): the `drop_entry` defence counts them otherwise.
    #[inline]
    pub fn counts_packets(&self) -> bool {
        self.rules.is_some()
    }

    /// The full rule ([`SyncRules::needed`]) for a packet the fast path did not settle.
    #[inline(never)]
    fn check_due(&mut self, rules: &SyncRules, conns: &ConnTable, id: ConnId, now: Instant) {
        let Some(p) = conns.sync_probe(id) else {
            return;
        };
        let now_ms = now.as_micros() / 1000;
        let (send, mark) = rules.needed(&p, p.mark.in_pkts.wrapping_add(1), now_ms);
        conns.set_sync_mark(id, mark);
        if send {
            self.queue(id);
        }
        // The controlling template is asked too, with its own count (ip_vs_sync_conn's
        // `control:` step), whether or not the connection was sent.
        if let Some(t) = p.controller {
            if let Some(tp) = conns.sync_probe(t) {
                let (send, mark) = rules.needed(&tp, tp.mark.in_pkts.wrapping_add(1), now_ms);
                conns.set_sync_mark(t, mark);
                if send {
                    self.queue(t);
                }
            }
        }
    }

    #[inline]
    fn queue(&mut self, id: ConnId) {
        let stats = &self.shared.workers[self.worker];
        if self.out.push(&[id.to_bits()]) {
            stats.queued.add(1);
        } else {
            stats.queue_full.add(1);
        }
    }

    /// Between batches: picks up whether a master runs and its rules, and installs what the
    /// sync thread received for this worker's slots.
    pub fn between_batches(&mut self, conns: &ConnTable, now: Instant) {
        let rules = self.shared.rules();
        self.rules = self.shared.master().then_some(rules);
        self.quiet = self.rules.and_then(|r| r.quiet());
        if self.installs.is_empty() {
            return;
        }
        let stats = &self.shared.workers[self.worker];
        for _ in 0..INSTALLS_PER_BATCH {
            let Some(rec) = self.installs.pop() else {
                break;
            };
            let Some(s) = decode_install(&rec, rules.threshold) else {
                stats.unusable.add(1);
                continue;
            };
            let c = match conns.install(self.worker, now, &s) {
                Installed::Created => &stats.created,
                Installed::Updated => &stats.updated,
                Installed::Replaced => &stats.replaced,
                Installed::Ignored => &stats.ignored,
                Installed::TableFull => &stats.table_full,
                Installed::Unusable => &stats.unusable,
            };
            c.add(1);
        }
    }
}

fn addr_words(a: IpAddr) -> [u64; 2] {
    let v = match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    [(v >> 64) as u64, v as u64]
}

fn words_addr(w: [u64; 2], v6: bool) -> IpAddr {
    let v = u128::from(w[0]) << 64 | u128::from(w[1]);
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

const R_CV6: u64 = 1;
const R_DV6: u64 = 2;
const R_TEMPLATE: u64 = 4;
const R_INACTIVE: u64 = 8;
const R_METHOD_SHIFT: u32 = 4;

/// A connection to install as queue words (`in_pkts` is the receiver's threshold).
pub fn encode_install(s: &Synced) -> [u64; INSTALL_WORDS] {
    let [c0, c1] = addr_words(s.client);
    let [v0, v1] = addr_words(s.vaddr);
    let [d0, d1] = addr_words(s.daddr);
    let method = match s.method {
        ForwardMethod::Masquerade => 0,
        ForwardMethod::DirectRouting => 1,
        ForwardMethod::Tunnel => 2,
    };
    let bits = if s.client.is_ipv6() { R_CV6 } else { 0 }
        | if s.daddr.is_ipv6() { R_DV6 } else { 0 }
        | if s.template { R_TEMPLATE } else { 0 }
        | if s.inactive { R_INACTIVE } else { 0 }
        | method << R_METHOD_SHIFT;
    [
        c0,
        c1,
        v0,
        v1,
        d0,
        d1,
        u64::from(s.cport)
            | u64::from(s.vport) << 16
            | u64::from(s.dport) << 32
            | u64::from(s.protocol) << 48
            | bits << 56,
        u64::from(s.dest.0)
            | u64::from(s.state & 0xf) << 32
            | u64::from(s.timeout_s.min((1 << 28) - 1)) << 36,
    ]
}

/// The connection a record describes; `None` for a record no encoder writes.
pub fn decode_install(w: &[u64; INSTALL_WORDS], in_pkts: u32) -> Option<Synced> {
    let bits = w[6] >> 56;
    let method = match bits >> R_METHOD_SHIFT & 3 {
        0 => ForwardMethod::Masquerade,
        1 => ForwardMethod::DirectRouting,
        2 => ForwardMethod::Tunnel,
        _ => return None,
    };
    let v6 = bits & R_CV6 != 0;
    Some(Synced {
        protocol: (w[6] >> 48) as u8,
        template: bits & R_TEMPLATE != 0,
        client: words_addr([w[0], w[1]], v6),
        cport: w[6] as u16,
        vaddr: words_addr([w[2], w[3]], v6),
        vport: (w[6] >> 16) as u16,
        daddr: words_addr([w[4], w[5]], bits & R_DV6 != 0),
        dport: (w[6] >> 32) as u16,
        method,
        dest: DestId(w[7] as u32),
        state: (w[7] >> 32) as u8 & 0xf,
        timeout_s: (w[7] >> 36) as u32,
        inactive: bits & R_INACTIVE != 0,
        in_pkts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_records_round_trip() {
        let s = Synced {
            protocol: 6,
            template: false,
            client: "2001:db8::7".parse().unwrap(),
            cport: 40_000,
            vaddr: "2001:db8::100".parse().unwrap(),
            vport: 443,
            daddr: "10.0.0.11".parse().unwrap(),
            dport: 8443,
            method: ForwardMethod::Tunnel,
            dest: DestId(77),
            state: 4,
            timeout_s: 31_536_000 / 2,
            inactive: true,
            in_pkts: 3,
        };
        assert_eq!(decode_install(&encode_install(&s), 3), Some(s));
        let t = Synced {
            protocol: 0,
            template: true,
            client: "198.51.100.0".parse().unwrap(),
            vaddr: "0.0.0.7".parse().unwrap(),
            daddr: "10.0.0.12".parse().unwrap(),
            method: ForwardMethod::Masquerade,
            inactive: false,
            ..s
        };
        assert_eq!(decode_install(&encode_install(&t), 3), Some(t));
    }

    #[test]
    fn rules_travel_through_the_shared_words() {
        let settings = SyncSettings {
            sync_threshold: [1, 10],
            sync_refresh_period: 30,
            sync_retries: 3,
            sync_persist_mode: true,
            ..SyncSettings::default()
        };
        let (shared, _, _) = channels(1, &settings);
        assert_eq!(shared.rules(), SyncRules::from(&settings));
    }
}
