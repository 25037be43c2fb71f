//! What to check on each real server, and how often: the health part of the configuration.
//!
//! It lives beside the service model, keyed by [`ServiceKey`] and real-server address, rather
//! than inside `VirtualService`/`RealServer`: an `ipvsadm -a` that adds a real server to a
//! checked service needs no health block of its own (it inherits the service's default), and
//! the data path never sees any of it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::service::{ForwardMethod, ServiceKey};

/// An inclusive range of HTTP status codes a check accepts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest accepted code.
    pub lo: u16,
    /// Highest accepted code.
    pub hi: u16,
}

impl StatusRange {
    /// keepalived's default when no `status_code` is given: any 2xx.
    pub const SUCCESS: StatusRange = StatusRange { lo: 200, hi: 299 };

    /// Parses `200` or `200-299`.
    pub fn parse(s: &str) -> Option<StatusRange> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let lo: u16 = a.trim().parse().ok()?;
        let hi: u16 = b.trim().parse().ok()?;
        ((100..=999).contains(&lo) && (lo..=999).contains(&hi)).then_some(StatusRange { lo, hi })
    }

    /// Whether `code` lies in the range.
    pub fn contains(&self, code: u16) -> bool {
        (self.lo..=self.hi).contains(&code)
    }
}

/// An HTTP GET check, over plain TCP (keepalived's `HTTP_GET`) or TLS (`SSL_GET`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request path, such as `/health`.
    pub path: String,
    /// Accepted status codes; empty means [`StatusRange::SUCCESS`].
    pub status: Vec<StatusRange>,
    /// `Host` header; the real server's address when unset.
    pub host: Option<String>,
    /// keepalived's `digest`: the MD5 of the response body must be this (the body is cut
    /// at `Content-Length` when the server sends one, as keepalived does).
    pub digest: Option<[u8; 16]>,
    /// HTTPS (keepalived's `SSL_GET`) when set.
    pub tls: Option<TlsCheck>,
}

/// TLS settings of an HTTPS check. As keepalived's `SSL_GET`, the server's certificate is
/// not verified (keepalived never sets `SSL_VERIFY_PEER`): the check proves the server
/// completes a handshake and answers, not who it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsCheck {
    /// Server name sent in the TLS handshake (keepalived's `enable_sni`/`sni_name`); no
    /// SNI when unset.
    pub sni: Option<String>,
}

/// A UDP check (keepalived's `UDP_CHECK`): one datagram is sent; an ICMP unreachable in
/// reply fails the check. Without `require_reply`, silence until the timeout passes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpCheck {
    /// What to send; keepalived sends 32 filler bytes when no `payload` is given.
    pub payload: Option<Vec<u8>>,
    /// A reply must arrive within the timeout.
    pub require_reply: bool,
    /// Leading bytes the reply must carry (compared over the shorter of the two).
    pub reply: Vec<u8>,
    /// Per byte of `reply`, the bits that are wildcards (`x` digits in keepalived's hex).
    pub reply_mask: Vec<u8>,
    /// Shortest acceptable reply (keepalived's `min_reply_length`, default 0).
    pub min_reply_len: u16,
    /// Longest acceptable reply (keepalived's `max_reply_length`, default 255).
    pub max_reply_len: u16,
}

impl UdpCheck {
    /// Whether `reply` is acceptable, as keepalived's `check_udp_reply` judges it.
    pub fn accepts(&self, reply: &[u8]) -> bool {
        if reply.len() < usize::from(self.min_reply_len)
            || reply.len() > usize::from(self.max_reply_len)
        {
            return false;
        }
        reply
            .iter()
            .zip(&self.reply)
            .enumerate()
            .all(|(i, (got, want))| {
                let wild = self.reply_mask.get(i).copied().unwrap_or(0);
                (got ^ want) & !wild == 0
            })
    }
}

/// Reads keepalived's hex strings (`payload`, `require_reply`): hex digit pairs, blanks
/// between bytes allowed, a lone digit before a blank or the end a byte of its own; with
/// `wildcards`, `x` stands for any nibble. Returns the bytes and the wildcard mask (empty
/// when no digit is a wildcard); `None` when the text is empty or not hex.
pub fn parse_hex(text: &str, wildcards: bool) -> Option<(Vec<u8>, Vec<u8>)> {
    let nibble = |c: u8| -> Option<(u8, u8)> {
        match c {
            b'x' | b'X' if wildcards => Some((0, 0x0f)),
            _ => (c as char).to_digit(16).map(|v| (v as u8, 0)),
        }
    };
    let (mut data, mut mask) = (Vec::new(), Vec::new());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' || b[i] == b'\t' {
            i += 1;
            continue;
        }
        let (mut v, mut m) = nibble(b[i])?;
        i += 1;
        if i < b.len() && b[i] != b' ' && b[i] != b'\t' {
            let (v2, m2) = nibble(b[i])?;
            (v, m) = (v << 4 | v2, m << 4 | m2);
            i += 1;
        }
        data.push(v);
        mask.push(m);
    }
    if data.is_empty() {
        return None;
    }
    if mask.iter().all(|&m| m == 0) {
        mask.clear();
    }
    Some((data, mask))
}

/// `data` as [`parse_hex`] reads it back: two digits a byte, `x` for a wildcard nibble.
pub fn hex_text(data: &[u8], mask: &[u8]) -> String {
    let digit = |v: u8, wild: bool| {
        if wild {
            'x'
        } else {
            char::from_digit(u32::from(v), 16).expect("a nibble")
        }
    };
    let mut out = String::with_capacity(data.len() * 2);
    for (i, &b) in data.iter().enumerate() {
        let m = mask.get(i).copied().unwrap_or(0);
        out.push(digit(b >> 4, m & 0xf0 != 0));
        out.push(digit(b & 0x0f, m & 0x0f != 0));
    }
    out
}

/// A DNS check (keepalived's `DNS_CHECK`): a query over UDP must get an answer with the
/// query's id, the response bit set and rcode 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCheck {
    /// Query type number (SOA = 6, keepalived's default).
    pub qtype: u16,
    /// Name to query; empty (keepalived's default) is the root.
    pub name: String,
}

/// The DNS query types keepalived's `DNS_CHECK` knows, by name.
pub const DNS_TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("RRSIG", 46),
    ("DNSKEY", 48),
];

impl HttpCheck {
    /// Whether a response with status `code` passes.
    pub fn accepts(&self, code: u16) -> bool {
        if self.status.is_empty() {
            StatusRange::SUCCESS.contains(code)
        } else {
            self.status.iter().any(|r| r.contains(code))
        }
    }
}

/// A script check (keepalived's MISC_CHECK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptCheck {
    /// Command line, run with `/bin/sh -c`.
    pub command: String,
    /// `misc_dynamic`: exit codes 2..=255 mean "up, with weight code - 2".
    pub dynamic: bool,
}

/// What one check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect that completes within the timeout.
    Tcp,
    /// An HTTP GET whose status is accepted.
    Http(HttpCheck),
    /// A command whose exit status says up (0) or down (1, or anything else without
    /// `dynamic`).
    Script(ScriptCheck),
    /// A UDP datagram that draws no ICMP unreachable (and a matching reply, if required).
    Udp(UdpCheck),
    /// An ICMP (or ICMPv6) echo that gets its reply within the timeout.
    Ping,
    /// A DNS query over UDP that gets a successful answer.
    Dns(DnsCheck),
}

/// How one real server is checked: the service's default or a real server's override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// What a check does.
    pub kind: CheckKind,
    /// Port to connect to (`connect_port`); the real server's port when unset.
    pub port: Option<u16>,
    /// Time from the start of one check to the start of the next (`delay_loop`).
    pub interval: Duration,
    /// Limit on one attempt: connect (TCP), connect + request + status line (HTTP), run
    /// time (script, keepalived's `misc_timeout`).
    pub timeout: Duration,
    /// Further attempts inside one check before it counts as failed (`retry`).
    pub retries: u32,
    /// Pause between a failed attempt and its retry (`delay_before_retry`).
    pub delay_before_retry: Duration,
    /// Passed checks in a row that bring a down server back.
    pub rise: u32,
    /// Failed checks in a row that take an up server out.
    pub fall: u32,
    /// The first check waits a fixed, per-server share of this (keepalived's `warmup`), so
    /// that a director with many servers does not check them all in the same instant.
    pub warmup: Duration,
    /// A down server stays in the table with weight 0 (quiesced: its connections go on)
    /// instead of being removed.
    pub inhibit_on_failure: bool,
    /// The server starts down and must pass `rise` checks first (keepalived's `alpha`).
    pub start_down: bool,
    /// Run on every transition as `COMMAND up|down SERVICE SERVER`.
    pub notify: Option<String>,
    /// keepalived's `notify_up`: run as written when the server comes back.
    pub notify_up: Option<String>,
    /// keepalived's `notify_down`: run as written when the server goes.
    pub notify_down: Option<String>,
    /// Further checks of the same real server, each with its own timing (keepalived's
    /// several checkers in one `real_server`): the server is up only while this check and
    /// every one of these pass. Their own `also` is empty.
    pub also: Vec<HealthConfig>,
}

impl HealthConfig {
    /// fastlb's defaults, those of the seed's health script: every 5 s, 1 s timeout, 3
    /// attempts 1 s apart, one failed check takes a server out, one passed check brings it
    /// back.
    pub fn new(kind: CheckKind) -> HealthConfig {
        HealthConfig {
            kind,
            port: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            retries: 2,
            delay_before_retry: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            warmup: Duration::ZERO,
            inhibit_on_failure: false,
            start_down: false,
            notify: None,
            notify_up: None,
            notify_down: None,
            also: Vec::new(),
        }
    }

    /// Whether the check needs a port to connect to (TCP, HTTP, UDP and DNS do; scripts
    /// and ping do not).
    pub fn uses_network(&self) -> bool {
        !matches!(self.kind, CheckKind::Script(_) | CheckKind::Ping)
    }

    /// Whether the server starts down: when any of its checks does.
    pub fn starts_down(&self) -> bool {
        self.all().any(|c| c.start_down)
    }

    /// This check and its `also` checks, in order.
    pub fn all(&self) -> impl Iterator<Item = &HealthConfig> {
        std::iter::once(self).chain(self.also.iter())
    }

    /// Worst-case time from a server's failure to its removal: `fall` checks, the first
    /// starting up to one interval after the failure, each spending every attempt on a
    /// timeout.
    pub fn detection_bound(&self) -> Duration {
        self.all()
            .map(HealthConfig::own_bound)
            .max()
            .unwrap_or_default()
    }

    fn own_bound(&self) -> Duration {
        let attempts = self.retries + 1;
        let one_check = self.timeout * attempts + self.delay_before_retry * self.retries;
        self.interval * self.fall.saturating_sub(1) + self.interval.max(one_check) + one_check
    }
}

/// Where a service's traffic goes when none of its real servers is up.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SorryServer {
    /// Its address.
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
    /// How packets reach it.
    pub method: ForwardMethod,
}

/// Health settings of one virtual service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The check every real server of the service gets unless it has its own.
    pub check: Option<HealthConfig>,
    /// Per-real-server overrides, by (address, port) as the real server is configured.
    pub reals: BTreeMap<(IpAddr, u16), HealthConfig>,
    /// The sorry server, used only while no real server is up.
    pub sorry_server: Option<SorryServer>,
}

/// Health settings of every service, by service key. A service or real server with no
/// check is always up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSettings {
    /// Per service.
    pub services: BTreeMap<ServiceKey, ServiceHealth>,
}

impl HealthSettings {
    /// The check of real server `addr:port` of service `key`, if it has one.
    pub fn check_for(&self, key: &ServiceKey, addr: IpAddr, port: u16) -> Option<&HealthConfig> {
        let s = self.services.get(key)?;
        s.reals.get(&(addr, port)).or(s.check.as_ref())
    }

    /// The sorry server of service `key`, if it has one.
    pub fn sorry_server(&self, key: &ServiceKey) -> Option<&SorryServer> {
        self.services.get(key)?.sorry_server.as_ref()
    }

    /// Whether nothing is checked and no sorry server is set.
    pub fn is_empty(&self) -> bool {
        self.services
            .values()
            .all(|s| s.check.is_none() && s.reals.is_empty() && s.sorry_server.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Protocol;

    #[test]
    fn status_ranges() {
        assert_eq!(
            StatusRange::parse("200-204"),
            Some(StatusRange { lo: 200, hi: 204 })
        );
        assert_eq!(
            StatusRange::parse("301"),
            Some(StatusRange { lo: 301, hi: 301 })
        );
        assert_eq!(StatusRange::parse("300-200"), None);
        assert_eq!(StatusRange::parse("99"), None);
        assert_eq!(StatusRange::parse("x"), None);
        let mut h = HttpCheck {
            path: "/".into(),
            ..HttpCheck::default()
        };
        assert!(h.accepts(204) && !h.accepts(301) && !h.accepts(503));
        h.status = vec![StatusRange { lo: 301, hi: 302 }, StatusRange::SUCCESS];
        assert!(h.accepts(302) && h.accepts(200) && !h.accepts(303));
    }

    #[test]
    fn hex_strings_as_keepalived_reads_them() {
        assert_eq!(
            parse_hex("01 2 ab", false),
            Some((vec![0x01, 0x02, 0xab], vec![]))
        );
        assert_eq!(parse_hex("0A0b", false), Some((vec![0x0a, 0x0b], vec![])));
        assert_eq!(
            parse_hex("1x x2", true),
            Some((vec![0x10, 0x02], vec![0x0f, 0xf0]))
        );
        assert_eq!(parse_hex("1x", false), None);
        assert_eq!(parse_hex("  ", false), None);
        assert_eq!(parse_hex("g1", false), None);
        assert_eq!(hex_text(&[0x10, 0x02], &[0x0f, 0xf0]), "1xx2");
        assert_eq!(
            parse_hex(&hex_text(&[0x10, 0xab], &[]), true),
            Some((vec![0x10, 0xab], vec![]))
        );
    }

    #[test]
    fn real_override_wins_over_service_default() {
        let key = ServiceKey::Tuple {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        };
        let a: IpAddr = "10.0.1.1".parse().unwrap();
        let b: IpAddr = "10.0.1.2".parse().unwrap();
        let mut s = ServiceHealth {
            check: Some(HealthConfig::new(CheckKind::Tcp)),
            ..ServiceHealth::default()
        };
        let mut own = HealthConfig::new(CheckKind::Tcp);
        own.fall = 3;
        s.reals.insert((b, 80), own);
        let mut h = HealthSettings::default();
        assert!(h.is_empty());
        h.services.insert(key, s);
        assert_eq!(h.check_for(&key, a, 80).unwrap().fall, 1);
        assert_eq!(h.check_for(&key, b, 80).unwrap().fall, 3);
        // Same address, other port: the service's default.
        assert_eq!(h.check_for(&key, b, 81).unwrap().fall, 1);
        assert!(h.sorry_server(&key).is_none());
        assert!(!h.is_empty());
    }

    #[test]
    fn detection_bound_adds_up_by_hand() {
        let mut c = HealthConfig::new(CheckKind::Tcp);
        // 3 attempts of 1 s + 2 pauses of 1 s = 5 s per failing check, as long as the
        // 5 s interval: up to 5 s until the first failing check starts, 5 s for it.
        assert_eq!(c.detection_bound(), Duration::from_secs(10));
        c.fall = 3;
        c.retries = 0;
        c.interval = Duration::from_secs(2);
        // 2 more intervals, then one 2 s wait and one 1 s attempt.
        assert_eq!(c.detection_bound(), Duration::from_secs(4 + 2 + 1));
    }
}
