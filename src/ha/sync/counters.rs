//! The sync daemons' counters: written by the sync thread alone, read by `fastlb ctl -L
//! --daemon --json` and the metrics.

use serde::Serialize;

use super::hook::SyncShared;
use crate::stats::Counter;

macro_rules! daemon_counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The sync thread's counters.
        #[derive(Debug, Default)]
        pub struct DaemonCounters {
            $($(#[$doc])* pub $name: Counter,)*
        }

        /// A copy of every sync counter, the workers' summed in.
        #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct SyncCounters {
            $($(#[$doc])* pub $name: u64,)*
            /// Master: connections and templates the workers queued.
            pub queued: u64,
            /// Master: dropped because a worker's queue was full (`sync_qlen_max`).
            pub queue_full: u64,
            /// Backup: entries installed as new connections or templates.
            pub created: u64,
            /// Backup: existing entries updated.
            pub updated: u64,
            /// Backup: entries replaced (same client, another real server).
            pub replaced: u64,
            /// Backup: messages about connections already replaced, ignored.
            pub ignored: u64,
            /// Backup: not installed, the connection table was full.
            pub table_full: u64,
            /// Backup: not installed, unusable (mixed address families).
            pub unusable: u64,
        }

        impl DaemonCounters {
            /// Every counter, the workers' from `shared` summed in.
            pub fn snapshot(&self, shared: &SyncShared) -> SyncCounters {
                let mut s = SyncCounters {
                    $($name: self.$name.get(),)*
                    ..SyncCounters::default()
                };
                for w in shared.workers() {
                    s.queued += w.queued.get();
                    s.queue_full += w.queue_full.get();
                    s.created += w.created.get();
                    s.updated += w.updated.get();
                    s.replaced += w.replaced.get();
                    s.ignored += w.ignored.get();
                    s.table_full += w.table_full.get();
                    s.unusable += w.unusable.get();
                }
                s
            }
        }

        impl SyncCounters {
            /// Every counter by name, for the metrics.
            pub fn named(&self) -> Vec<(&'static str, u64)> {
                vec![
                    $((stringify!($name), self.$name),)*
                    ("queued", self.queued),
                    ("queue_full", self.queue_full),
                    ("created", self.created),
                    ("updated", self.updated),
                    ("replaced", self.replaced),
                    ("ignored", self.ignored),
                    ("table_full", self.table_full),
                    ("unusable", self.unusable),
                ]
            }
        }
    };
}

daemon_counters! {
    /// Master: connection entries sent.
    sent_conns,
    /// Master: template entries sent.
    sent_templates,
    /// Master: datagrams sent.
    sent_messages,
    /// Master: bytes of datagrams sent.
    sent_bytes,
    /// Master: datagrams the socket refused (counted, not retried).
    send_errors,
    /// Master: queued entries that were gone when the sync thread read them.
    gone,
    /// Master: entries the protocol cannot carry (addresses of mixed families).
    unencodable,
    /// Backup: datagrams received.
    received,
    /// Backup: bytes received.
    received_bytes,
    /// Backup: version-0 messages read.
    messages_v0,
    /// Backup: version-1 messages read.
    messages_v1,
    /// Backup: datagrams for another sync group, ignored.
    wrong_syncid,
    /// Backup: datagrams that arrived on another interface, ignored.
    wrong_interface,
    /// Backup: datagrams shorter than a header.
    too_short,
    /// Backup: datagrams whose size field is not their length.
    size_mismatch,
    /// Backup: messages whose rest was dropped at an entry overrunning the datagram.
    entry_overrun,
    /// Backup: ... at an entry of an unknown format version.
    entry_version,
    /// Backup: ... at an entry of an unknown type.
    entry_type,
    /// Backup: ... at a malformed optional parameter.
    bad_parameter,
    /// Backup: entries skipped for an unknown mandatory parameter.
    unknown_parameter,
    /// Backup: entries skipped for a protocol fastlb does not balance.
    unsupported_protocol,
    /// Backup: entries skipped for a state the protocol does not have.
    invalid_state,
    /// Backup: entries skipped for persistence-engine data.
    persistence_engine,
    /// Backup: entries for a service or real server this director does not have.
    no_destination,
    /// Backup: entries accepted and handed to the workers.
    accepted,
    /// Backup: entries dropped because a worker's install queue was full.
    install_queue_full,
}
