//! The IPVS TCP state machine and protocol timeouts (`ip_vs_proto_tcp.c`, `ip_vs_proto_udp.c`).
//!
//! IPVS does not follow TCP exactly: it keeps one state per connection, advanced by the
//! flags of each packet through one of three tables: INPUT (client to server), OUTPUT
//! (server to client, seen only in NAT) and INPUT-ONLY (DR and TUN, where replies bypass the
//! director). A packet selects a row by its flags, RST first, then SYN, FIN, ACK; a packet
//! with none of those sends the connection to CLOSE.
//!
//! **Active connections.** A new connection is bound to its real server as inactive
//! (`__ip_vs_update_dest` puts `IP_VS_CONN_F_INACTIVE` into the destination's `conn_flags`),
//! and `set_tcp_state` then moves one count between `inactconns` and `activeconns` whenever
//! the state crosses `tcp_state_active`: SYN_SENT, SYN_RECV, ESTABLISHED and SYNACK are
//! active, every other state inactive. The SYN that creates a connection takes it to
//! SYN_RECV (NAT, DR and TUN alike), so a connection in its handshake counts as *active*;
//! Debian's 6.1 lists a fresh DR connection under ActiveConn, and the schedulers that look
//! at active connections only (sed, nq, ovf, and lblc/lblcr's overload rule) see it. fastlb
//! follows the kernel ([`TcpState::is_active`]). UDP connections are never active.

pub use crate::wire::TcpFlags;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::service::TimeoutSettings;

/// An IPVS TCP connection state, numbered as the kernel's `IP_VS_TCP_S_*`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    /// No packet seen yet (also the state of every persistence template).
    None = 0,
    /// Three-way handshake completed.
    Established = 1,
    /// The server sent a SYN (seen in the OUTPUT direction).
    SynSent = 2,
    /// The client sent a SYN.
    SynRecv = 3,
    /// One side sent a FIN.
    FinWait = 4,
    /// Both sides closed.
    TimeWait = 5,
    /// Reset, or a packet with no SYN/FIN/ACK/RST flag.
    Close = 6,
    /// The client closed first.
    CloseWait = 7,
    /// Waiting for the last ACK.
    LastAck = 8,
    /// Listening (ftp data connections in the kernel; unused by fastlb).
    Listen = 9,
    /// SYN-ACK seen; only the secure_tcp tables (`crate::conn::defence`) enter it.
    SynAck = 10,
}

impl TcpState {
    /// Number of states.
    pub const COUNT: usize = 11;

    /// Every state, in kernel number order.
    pub const ALL: [TcpState; TcpState::COUNT] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
    ];

    /// The state with kernel number `n`.
    #[inline]
    pub const fn from_index(n: u8) -> Option<TcpState> {
        if (n as usize) < TcpState::COUNT {
            Some(TcpState::ALL[n as usize])
        } else {
            None
        }
    }

    /// The name `ipvsadm -L -c` prints.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }

    /// Whether a TCP connection in this state counts in `ActiveConn`: SYN_SENT, SYN_RECV,
    /// ESTABLISHED and SYNACK, the kernel's `tcp_state_active_table` (see the module
    /// documentation).
    #[inline]
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
        )
    }

    /// [`TcpState::is_active`] for a state given by its kernel number (an unknown number is
    /// inactive): one shift and mask, for the per-packet path.
    #[inline]
    pub const fn index_is_active(n: u8) -> bool {
        const MASK: u16 = 1 << TcpState::Established as u8
            | 1 << TcpState::SynSent as u8
            | 1 << TcpState::SynRecv as u8
            | 1 << TcpState::SynAck as u8;
        n < 16 && MASK >> n & 1 == 1
    }

    /// The kernel's default timeout of the state, seconds (`tcp_timeouts`).
    pub const fn default_timeout_secs(self) -> u32 {
        match self {
            TcpState::None => 2,
            TcpState::Established => 900,
            TcpState::SynSent => 120,
            TcpState::SynRecv => 60,
            TcpState::FinWait => 120,
            TcpState::TimeWait => 120,
            TcpState::Close => 10,
            TcpState::CloseWait => 60,
            TcpState::LastAck => 30,
            TcpState::Listen => 120,
            TcpState::SynAck => 120,
        }
    }
}

/// The row of the state tables a packet selects (`tcp_state_idx`): RST wins over SYN, SYN
/// over FIN, FIN over ACK; `None` when none of the four is set.
#[inline]
pub const fn flag_row(flags: TcpFlags) -> Option<usize> {
    if flags.rst() {
        Some(3)
    } else if flags.syn() {
        Some(0)
    } else if flags.fin() {
        Some(1)
    } else if flags.ack() {
        Some(2)
    } else {
        None
    }
}

/// Which of the kernel's transition tables a packet goes through.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum StateTable {
    /// Client to server, when the director also sees replies (NAT).
    Input,
    /// Server to client (NAT replies).
    Output,
    /// Client to server when replies bypass the director (DR, TUN).
    InputOnly,
}

mod tables {
    use super::TcpState;

    const ES: TcpState = TcpState::Established;
    const SS: TcpState = TcpState::SynSent;
    const SR: TcpState = TcpState::SynRecv;
    const FW: TcpState = TcpState::FinWait;
    const TW: TcpState = TcpState::TimeWait;
    const CL: TcpState = TcpState::Close;
    const CW: TcpState = TcpState::CloseWait;
    const LA: TcpState = TcpState::LastAck;
    const LI: TcpState = TcpState::Listen;
    const SA: TcpState = TcpState::SynAck;

    /// `tcp_states` of `ip_vs_proto_tcp.c` (not the secure_tcp `tcp_states_dos`): for each
    /// table, rows syn, fin, ack, rst; columns the current state in kernel order
    /// NO ES SS SR FW TW CL CW LA LI SA. NONE and SYNACK are never a next state.
    ///
    /// The NONE column is used only by a packet that creates a connection: a SYN, or with
    /// `sloppy_tcp` any packet but a RST. An ACK there gives ESTABLISHED in INPUT and
    /// INPUT-ONLY (the kernel's sloppy TCP change of 2013; before it, CLOSE): a flow that
    /// another director saw open continues here as established.
    pub(super) const NEXT: [[[TcpState; TcpState::COUNT]; 4]; 3] = [
        // INPUT
        [
            [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
            [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
            [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
            [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
        ],
        // OUTPUT
        [
            [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
            [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
            [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
            [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
        ],
        // INPUT-ONLY
        [
            [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
            [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
            [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
            [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
        ],
    ];

    /// `tcp_states_dos`, the tables `secure_tcp` switches to, laid out as [`NEXT`] (and
    /// with the same ESTABLISHED for an ACK from NONE). A client's ACK no longer completes
    /// a handshake it began (SYN_RECV stays SYN_RECV in INPUT); the real server's SYN-ACK
    /// moves it to SYNACK, and the real server's next ACK to ESTABLISHED. In INPUT-ONLY a
    /// SYN opens in SYNACK, which only an ACK leaves for ESTABLISHED.
    pub(super) const NEXT_DOS: [[[TcpState; TcpState::COUNT]; 4]; 3] = [
        // INPUT
        [
            [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA],
            [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA],
            [ES, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA],
            [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
        ],
        // OUTPUT
        [
            [SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA],
            [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
            [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
            [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
        ],
        // INPUT-ONLY
        [
            [SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA],
            [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
            [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
            [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
        ],
    ];
}

/// The state after a packet with `flags` passes through `table` in `state`, as
/// `set_tcp_state` computes it (a packet without RST/SYN/FIN/ACK gives CLOSE).
#[inline]
pub fn next_state(table: StateTable, state: TcpState, flags: TcpFlags) -> TcpState {
    next_state_secure(false, table, state, flags)
}

/// [`next_state`] through the kernel's `tcp_states_dos` when `secure` (`secure_tcp` on).
#[inline]
pub fn next_state_secure(
    secure: bool,
    table: StateTable,
    state: TcpState,
    flags: TcpFlags,
) -> TcpState {
    let t = match table {
        StateTable::Input => 0,
        StateTable::Output => 1,
        StateTable::InputOnly => 2,
    };
    let tables = if secure {
        &tables::NEXT_DOS
    } else {
        &tables::NEXT
    };
    match flag_row(flags) {
        Some(row) => tables[t][row][state as usize],
        None => TcpState::Close,
    }
}

/// The longest timeout fastlb accepts, seconds (one year). The table keeps expiry times
/// in 36 bits of milliseconds, which compare correctly up to about 397 days apart.
pub const MAX_TIMEOUT_SECS: u32 = 365 * 24 * 3600;

/// Timeout of a template after its timer ran out while it still controlled connections
/// (`expire_later` in `ip_vs_conn_expire`), seconds.
pub const TEMPLATE_RETRY_SECS: u32 = 60;

/// Protocol timeouts in seconds, changeable live by the control thread
/// (`ipvsadm --set`). Workers read them on every state change.
#[derive(Debug)]
pub struct Timeouts {
    tcp: [AtomicU32; TcpState::COUNT],
    udp: AtomicU32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: TcpState::ALL.map(|s| AtomicU32::new(s.default_timeout_secs())),
            udp: AtomicU32::new(300),
        }
    }
}

impl Timeouts {
    /// The kernel's defaults (UDP 300 s).
    pub fn new() -> Timeouts {
        Timeouts::default()
    }

    /// Timeout of TCP state `state`, seconds.
    #[inline]
    pub fn tcp(&self, state: TcpState) -> u32 {
        self.tcp[state as usize].load(Ordering::Relaxed)
    }

    /// UDP timeout, seconds.
    #[inline]
    pub fn udp(&self) -> u32 {
        self.udp.load(Ordering::Relaxed)
    }

    /// Sets the timeout of one TCP state (clamped to [`MAX_TIMEOUT_SECS`]).
    pub fn set_tcp(&self, state: TcpState, secs: u32) {
        self.tcp[state as usize].store(secs.min(MAX_TIMEOUT_SECS), Ordering::Relaxed);
    }

    /// `ipvsadm --set tcp tcpfin udp`: ESTABLISHED, FIN_WAIT and UDP; 0 leaves a value
    /// unchanged. Connections pick up a new value at their next packet.
    pub fn set_tcp_tcpfin_udp(&self, tcp: u32, tcpfin: u32, udp: u32) {
        if tcp != 0 {
            self.set_tcp(TcpState::Established, tcp);
        }
        if tcpfin != 0 {
            self.set_tcp(TcpState::FinWait, tcpfin);
        }
        if udp != 0 {
            self.udp.store(udp.min(MAX_TIMEOUT_SECS), Ordering::Relaxed);
        }
    }

    /// Applies the configuration's `--set` values.
    pub fn apply(&self, settings: &TimeoutSettings) {
        self.set_tcp_tcpfin_udp(settings.tcp, settings.tcpfin, settings.udp);
    }

    /// The current `--set` triple (what `ipvsadm -L --timeout` prints).
    pub fn settings(&self) -> TimeoutSettings {
        TimeoutSettings {
            tcp: self.tcp(TcpState::Established),
            tcpfin: self.tcp(TcpState::FinWait),
            udp: self.udp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StateTable::{Input, InputOnly, Output};
    use TcpState as S;

    const SYN: TcpFlags = TcpFlags::SYN;
    const ACK: TcpFlags = TcpFlags::ACK;
    const FIN_ACK: TcpFlags = TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0);
    const SYN_ACK: TcpFlags = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);
    const RST: TcpFlags = TcpFlags::RST;

    /// Runs packets through the tables from NONE and returns every state reached.
    fn run(steps: &[(StateTable, TcpFlags)]) -> Vec<TcpState> {
        let mut s = S::None;
        steps
            .iter()
            .map(|&(t, f)| {
                s = next_state(t, s, f);
                s
            })
            .collect()
    }

    #[test]
    fn row_order_is_rst_syn_fin_ack() {
        assert_eq!(flag_row(RST | SYN | FIN_ACK), Some(3));
        assert_eq!(flag_row(SYN | FIN_ACK), Some(0));
        assert_eq!(flag_row(FIN_ACK), Some(1));
        assert_eq!(flag_row(ACK), Some(2));
        assert_eq!(flag_row(TcpFlags::PSH), None);
    }

    #[test]
    fn nat_handshake_and_client_close() {
        // Client SYN, server SYN-ACK, client ACK, data, client FIN, server ACK, server FIN,
        // client ACK.
        let got = run(&[
            (Input, SYN),
            (Output, SYN_ACK),
            (Input, ACK),
            (Output, ACK),
            (Input, FIN_ACK),
            (Output, ACK),
            (Output, FIN_ACK),
            (Input, ACK),
        ]);
        assert_eq!(
            got,
            [
                S::SynRecv,
                S::SynRecv,
                S::Established,
                S::Established,
                S::CloseWait,
                S::CloseWait,
                S::TimeWait,
                S::TimeWait
            ]
        );
    }

    #[test]
    fn nat_server_closes_first() {
        let got = run(&[
            (Input, SYN),
            (Output, SYN_ACK),
            (Input, ACK),
            (Output, FIN_ACK),
            (Input, ACK),
            (Input, FIN_ACK),
            (Output, ACK),
        ]);
        assert_eq!(got[3..], [S::FinWait, S::FinWait, S::TimeWait, S::TimeWait]);
    }

    #[test]
    fn resets_close_from_either_side() {
        assert_eq!(next_state(Input, S::Established, RST), S::Close);
        assert_eq!(next_state(Output, S::Established, RST), S::Close);
        // An RST in SYN_RECV from the client is ignored (stays SYN_RECV), from the server
        // closes.
        assert_eq!(next_state(Input, S::SynRecv, RST), S::SynRecv);
        assert_eq!(next_state(Output, S::SynRecv, RST), S::Close);
        // An RST with SYN set still counts as RST.
        assert_eq!(next_state(Input, S::Established, RST | SYN), S::Close);
    }

    #[test]
    fn secure_tcp_completes_a_handshake_only_when_it_is_seen() {
        use StateTable::*;
        let secure = |steps: &[(StateTable, TcpFlags)]| {
            let mut s = TcpState::None;
            steps
                .iter()
                .map(|&(t, f)| {
                    s = next_state_secure(true, t, s, f);
                    s
                })
                .collect::<Vec<_>>()
        };
        // NAT: the client's ACK does not establish a SYN_RECV entry; the real server's
        // SYN-ACK moves it to SYNACK, which the client's packets keep, and the real
        // server's next ACK establishes it.
        assert_eq!(
            secure(&[
                (Input, SYN),
                (Input, ACK),
                (Output, SYN_ACK),
                (Input, ACK),
                (Output, ACK)
            ]),
            [
                TcpState::SynRecv,
                TcpState::SynRecv,
                TcpState::SynAck,
                TcpState::SynAck,
                TcpState::Established
            ]
        );
        // DR/TUN: a SYN opens in SYNACK; the ACK establishes it.
        assert_eq!(
            secure(&[(InputOnly, SYN), (InputOnly, SYN), (InputOnly, ACK)]),
            [TcpState::SynAck, TcpState::SynAck, TcpState::Established]
        );
        // Off, the same NAT client ACK establishes at once.
        assert_eq!(
            run(&[(Input, SYN), (Input, ACK)]),
            [TcpState::SynRecv, TcpState::Established]
        );
    }

    #[test]
    fn dr_input_only_handshake_and_close() {
        let got = run(&[
            (InputOnly, SYN),
            (InputOnly, ACK),
            (InputOnly, FIN_ACK),
            (InputOnly, ACK),
        ]);
        assert_eq!(got, [S::SynRecv, S::Established, S::FinWait, S::FinWait]);
        // Where INPUT and INPUT-ONLY differ: a client FIN in ESTABLISHED.
        assert_eq!(next_state(Input, S::Established, FIN_ACK), S::CloseWait);
        // A client RST in SYNACK.
        assert_eq!(next_state(Input, S::SynAck, RST), S::SynRecv);
        assert_eq!(next_state(InputOnly, S::SynAck, RST), S::Close);
    }

    #[test]
    fn first_packet_without_syn_takes_the_state_it_implies() {
        // What a sloppy_tcp connection starts in: an ACK continues an established flow,
        // a FIN or a RST closes.
        assert_eq!(next_state(Input, S::None, ACK), S::Established);
        assert_eq!(next_state(InputOnly, S::None, ACK), S::Established);
        assert_eq!(next_state(Input, S::None, FIN_ACK), S::Close);
        assert_eq!(next_state(InputOnly, S::None, FIN_ACK), S::Close);
        assert_eq!(next_state(InputOnly, S::None, RST), S::Close);
        // No SYN/FIN/ACK/RST at all: CLOSE from any state.
        assert_eq!(next_state(Input, S::Established, TcpFlags::PSH), S::Close);
        assert_eq!(next_state(Output, S::None, ACK), S::Established);
    }

    #[test]
    fn the_handshake_and_established_are_active() {
        // tcp_state_active_table of ip_vs_proto_tcp.c.
        let active: Vec<_> = TcpState::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(active, [S::Established, S::SynSent, S::SynRecv, S::SynAck]);
        for n in 0..=255u8 {
            let by_state = TcpState::from_index(n).is_some_and(TcpState::is_active);
            assert_eq!(TcpState::index_is_active(n), by_state, "{n}");
        }
    }

    #[test]
    fn timeouts_default_and_set() {
        let t = Timeouts::new();
        assert_eq!(t.tcp(S::Established), 900);
        assert_eq!(t.tcp(S::SynRecv), 60);
        assert_eq!(t.tcp(S::Close), 10);
        assert_eq!(t.tcp(S::LastAck), 30);
        assert_eq!(t.udp(), 300);
        t.set_tcp_tcpfin_udp(3600, 0, 10);
        assert_eq!(
            t.settings(),
            TimeoutSettings {
                tcp: 3600,
                tcpfin: 120,
                udp: 10
            }
        );
        t.set_tcp_tcpfin_udp(0, 30, 0);
        assert_eq!(t.tcp(S::FinWait), 30);
        assert_eq!(t.tcp(S::Established), 3600);
        assert_eq!(t.udp(), 10);
    }

    #[test]
    fn names_and_indices_round_trip() {
        for (i, s) in TcpState::ALL.into_iter().enumerate() {
            assert_eq!(TcpState::from_index(i as u8), Some(s));
            assert_eq!(s as usize, i);
        }
        assert_eq!(TcpState::from_index(11), None);
        assert_eq!(S::SynAck.name(), "SYNACK");
    }
}
