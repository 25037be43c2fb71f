//! Checks that run as one blocking attempt on a short-lived thread of their own: HTTPS
//! (keepalived's `SSL_GET`, over rustls), HTTP with a body `digest`, UDP, ICMP echo and
//! DNS. Each attempt is bounded by its deadline (every socket operation gets the time
//! left as its timeout) and reports back over a channel that the monitor drains, as it
//! reaps scripts. A thread per attempt costs little next to a check interval of seconds,
//! and keeps TLS and the datagram checks out of the io_uring and poll(2) backends, which
//! stay the path for the plain TCP and HTTP checks.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use md5::{Digest, Md5};

use super::checker::{os_text, HttpExchange};
use super::state::Attempt;
use crate::service::health::{DnsCheck, UdpCheck};

/// One attempt of a thread-run check.
#[derive(Debug)]
pub(crate) enum Probe {
    /// An HTTP or HTTPS GET, read to the end when the body has a digest to match.
    Http {
        /// Where to connect.
        target: SocketAddr,
        /// The request and what it accepts.
        exchange: Arc<HttpExchange>,
    },
    /// A UDP datagram.
    Udp {
        /// Where to send it.
        target: SocketAddr,
        /// What to send and accept.
        check: UdpCheck,
    },
    /// An ICMP echo to this address.
    Ping(IpAddr),
    /// A DNS query.
    Dns {
        /// The server.
        target: SocketAddr,
        /// The question.
        check: DnsCheck,
    },
}

impl Probe {
    /// Runs the attempt on the calling thread, until `deadline` at the latest.
    pub fn run(&self, deadline: Instant) -> Attempt {
        match self {
            Probe::Http { target, exchange } => http(*target, exchange, deadline),
            Probe::Udp { target, check } => udp(*target, check, deadline),
            Probe::Ping(addr) => ping(*addr, deadline),
            Probe::Dns { target, check } => dns(*target, check, deadline),
        }
    }
}

/// Thread-run attempts in flight.
#[derive(Debug)]
pub(crate) struct Probes {
    tx: Sender<(u64, Attempt)>,
    rx: Receiver<(u64, Attempt)>,
    running: usize,
}

impl Default for Probes {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Probes { tx, rx, running: 0 }
    }
}

impl Probes {
    /// Starts `probe` on a thread of its own; its outcome comes out of a later `reap`.
    pub fn start(
        &mut self,
        token: u64,
        probe: Arc<Probe>,
        deadline: Instant,
    ) -> Result<(), Attempt> {
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("fastlb-probe".into())
            .spawn(move || {
                let outcome = probe.run(deadline);
                // The monitor may have stopped meanwhile; then nobody needs the outcome.
                let _ = tx.send((token, outcome));
            })
            .map_err(|e| Attempt::Fail(format!("cannot start a check thread: {}", os_text(&e))))?;
        self.running += 1;
        Ok(())
    }

    /// Whether any attempt is running (the caller then polls more often).
    pub fn busy(&self) -> bool {
        self.running > 0
    }

    /// Appends the finished attempts to `out`.
    pub fn reap(&mut self, out: &mut Vec<(u64, Attempt)>) {
        while let Ok(r) = self.rx.try_recv() {
            self.running -= 1;
            out.push(r);
        }
    }
}

/// Time left until `deadline`, or a timed-out error when none is.
fn left(deadline: Instant) -> io::Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(io::Error::from(io::ErrorKind::TimedOut))
    } else {
        Ok(d)
    }
}

/// `timed out` for both ways a socket timeout shows up.
fn text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
        _ => os_text(e),
    }
}

/// The TLS client of every HTTPS check: TLS 1.2 and 1.3, handshake signatures checked,
/// the certificate itself not (as keepalived's SSL_GET, which never asks OpenSSL to
/// verify the peer).
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts whatever certificate the server shows; still checks that the server holds its
/// key (the handshake signature).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Longest response header fastlb reads before giving up on a server.
const MAX_HEADER: usize = 64 * 1024;

fn http(target: SocketAddr, ex: &HttpExchange, deadline: Instant) -> Attempt {
    let scheme = if ex.check.tls.is_some() {
        "https"
    } else {
        "http"
    };
    match http_exchange(target, ex, deadline) {
        Ok(a) => a,
        Err((step, e)) => Attempt::Fail(format!("{scheme}: {step}: {}", text(&e))),
    }
}

/// A stream whose every read and write first takes the time left as its timeout.
struct Bounded {
    tcp: TcpStream,
    deadline: Instant,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(left(self.deadline)?))?;
        self.tcp.read(buf)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(left(self.deadline)?))?;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn http_exchange(
    target: SocketAddr,
    ex: &HttpExchange,
    deadline: Instant,
) -> Result<Attempt, (&'static str, io::Error)> {
    let tcp = left(deadline)
        .and_then(|t| TcpStream::connect_timeout(&target, t))
        .map_err(|e| ("connect", e))?;
    let bounded = Bounded { tcp, deadline };
    let mut stream: Box<dyn ReadWrite> = match &ex.check.tls {
        None => Box::new(bounded),
        Some(tls) => {
            // An IP address as the name: rustls then sends no SNI (keepalived's default).
            let name = match &tls.sni {
                Some(sni) => rustls::pki_types::ServerName::try_from(sni.clone())
                    .map_err(|e| ("tls", io::Error::other(e.to_string())))?,
                None => rustls::pki_types::ServerName::IpAddress(target.ip().into()),
            };
            let conn = rustls::ClientConnection::new(tls_config(), name)
                .map_err(|e| ("tls", io::Error::other(e.to_string())))?;
            let mut s = rustls::StreamOwned::new(conn, bounded);
            while s.conn.is_handshaking() {
                s.conn
                    .complete_io(&mut s.sock)
                    .map_err(|e| ("tls handshake", e))?;
            }
            Box::new(s)
        }
    };
    stream.write_all(&ex.request).map_err(|e| ("send", e))?;
    stream.flush().map_err(|e| ("send", e))?;
    // The header, up to the blank line (or to the status line when no digest is due).
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(i) = find(&got, b"\r\n\r\n") {
            break Some(i + 4);
        }
        if ex.check.digest.is_none() && HttpExchange::complete(&got) {
            break None;
        }
        if got.len() > MAX_HEADER {
            return Ok(Attempt::Fail("http: response header too long".into()));
        }
        match read_some(&mut stream, &mut buf).map_err(|e| ("receive", e))? {
            0 => break None,
            n => got.extend_from_slice(&buf[..n]),
        }
    };
    let verdict = ex.judge(&got);
    let (Attempt::Pass { .. }, Some(want)) = (&verdict, ex.check.digest) else {
        return Ok(verdict);
    };
    let Some(start) = header_end else {
        return Ok(Attempt::Fail(
            "http: the response ends inside its header".into(),
        ));
    };
    // keepalived hashes the body, cut at Content-Length when the server sends one.
    let limit = content_length(&got[..start]);
    let mut md5 = Md5::new();
    let mut seen = 0usize;
    let feed = |md5: &mut Md5, seen: &mut usize, chunk: &[u8]| {
        let take = limit.map_or(chunk.len(), |l| chunk.len().min(l.saturating_sub(*seen)));
        md5.update(&chunk[..take]);
        *seen += take;
    };
    feed(&mut md5, &mut seen, &got[start..]);
    while limit.is_none_or(|l| seen < l) {
        match read_some(&mut stream, &mut buf).map_err(|e| ("receive", e))? {
            0 => break,
            n => feed(&mut md5, &mut seen, &buf[..n]),
        }
    }
    let sum: [u8; 16] = md5.finalize().into();
    Ok(if sum == want {
        verdict
    } else {
        Attempt::Fail(format!(
            "http: digest {} is not the configured one",
            hex(&sum)
        ))
    })
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A read where a TLS peer that closes without `close_notify` counts as the end, as
/// keepalived's OpenSSL reads treat it.
fn read_some(stream: &mut dyn ReadWrite, buf: &mut [u8]) -> io::Result<usize> {
    match stream.read(buf) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        r => r,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `Content-Length` of a response header, if it has a valid one.
fn content_length(header: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(header).ok()?;
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Lower-case hex, as keepalived prints digests.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A UDP socket connected to `target`.
fn udp_connected(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any)?;
    s.connect(target)?;
    Ok(s)
}

/// keepalived's UDP_CHECK without a `payload` sends this many filler bytes.
const UDP_FILLER: usize = 32;

fn udp(target: SocketAddr, check: &UdpCheck, deadline: Instant) -> Attempt {
    let run = || -> Result<Attempt, (&'static str, io::Error)> {
        let s = udp_connected(target).map_err(|e| ("socket", e))?;
        let filler = [0u8; UDP_FILLER];
        let payload = check.payload.as_deref().unwrap_or(&filler);
        s.send(payload).map_err(|e| ("send", e))?;
        let mut buf = vec![0u8; 65_536];
        let got = left(deadline)
            .and_then(|t| s.set_read_timeout(Some(t)))
            .and_then(|()| s.recv(&mut buf));
        Ok(match got {
            Ok(n) if !check.require_reply || check.accepts(&buf[..n]) => {
                Attempt::Pass { weight: None }
            }
            Ok(n) => Attempt::Fail(format!("udp: reply of {n} bytes does not match")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Silence is success unless a reply is required (keepalived's rule).
                if check.require_reply {
                    Attempt::Fail("udp: no reply".into())
                } else {
                    Attempt::Pass { weight: None }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Attempt::Fail("udp: port unreachable".into())
            }
            Err(e) => Attempt::Fail(format!("udp: {}", text(&e))),
        })
    };
    run().unwrap_or_else(|(step, e)| Attempt::Fail(format!("udp: {step}: {}", text(&e))))
}

/// An ICMP socket to `addr`: an unprivileged ping socket where `ping_group_range` allows
/// one, a raw socket otherwise (fastlb runs as root). keepalived widens
/// `ping_group_range` instead; fastlb leaves the sysctl alone. Returns the socket and
/// whether it is raw.
fn icmp_socket(addr: IpAddr) -> io::Result<(UdpSocket, bool)> {
    use std::os::fd::FromRawFd;
    let (family, proto) = match addr {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    for (ty, raw) in [(libc::SOCK_DGRAM, false), (libc::SOCK_RAW, true)] {
        // SAFETY: plain syscall with constant arguments.
        let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, proto) };
        if fd >= 0 {
            // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else. A
            // datagram-style socket: UdpSocket's calls (connect, send, recv, timeouts)
            // are the plain syscalls an ICMP socket takes.
            let s = unsafe { UdpSocket::from_raw_fd(fd) };
            return Ok((s, raw));
        }
        let e = io::Error::last_os_error();
        if raw || !matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
            return Err(e);
        }
    }
    unreachable!("the raw socket either opens or returns its error")
}

fn ping(addr: IpAddr, deadline: Instant) -> Attempt {
    let run = || -> Result<Attempt, (&'static str, io::Error)> {
        let (s, raw) = icmp_socket(addr).map_err(|e| ("socket", e))?;
        s.connect((addr, 0)).map_err(|e| ("connect", e))?;
        let v6 = addr.is_ipv6();
        let (request, reply) = if v6 { (128u8, 129u8) } else { (8u8, 0u8) };
        // The id: the kernel's own on a ping socket, the thread's share of the pid on a
        // raw one; the sequence tells this attempt's reply from older ones.
        let tag = thread_tag();
        let id = (std::process::id() as u16) ^ (tag as u16);
        let seq = (tag >> 16) as u16;
        let mut pkt = vec![request, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(b"fastlb health check ping");
        if !v6 {
            // ICMPv6 checksums are the kernel's (they cover a pseudo-header).
            let c = crate::wire::checksum::checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        s.send(&pkt).map_err(|e| ("send", e))?;
        let mut buf = [0u8; 2048];
        loop {
            let n = left(deadline)
                .and_then(|t| s.set_read_timeout(Some(t)))
                .and_then(|()| s.recv(&mut buf))
                .map_err(|e| ("receive", e))?;
            // A raw IPv4 socket hands over the IP header too.
            let icmp = if raw && !v6 {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                buf.get(ihl..n).unwrap_or(&[])
            } else {
                &buf[..n]
            };
            if icmp.len() < 8 || icmp[0] != reply {
                continue;
            }
            let same_seq = icmp[6..8] == seq.to_be_bytes();
            // A ping socket's replies are the kernel's match already; a raw one sees
            // every echo reply of the host.
            if same_seq && (!raw || icmp[4..6] == id.to_be_bytes()) {
                return Ok(Attempt::Pass { weight: None });
            }
        }
    };
    run().unwrap_or_else(|(step, e)| Attempt::Fail(format!("ping: {step}: {}", text(&e))))
}

/// A per-thread number to keep concurrent attempts' ids apart.
fn thread_tag() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u32
}

/// The query keepalived's DNS_CHECK sends: recursion desired, one question of class IN.
pub(crate) fn dns_query(id: u16, check: &DnsCheck) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + check.name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in check.name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&check.qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// How a datagram answers query `id`: `None` when it is not an answer to it (keepalived
/// keeps waiting then), else the response code.
pub(crate) fn dns_rcode(id: u16, reply: &[u8]) -> Option<u8> {
    if reply.len() < 12 || reply[0..2] != id.to_be_bytes() || reply[2] & 0x80 == 0 {
        return None;
    }
    Some(reply[3] & 0x0f)
}

fn dns(target: SocketAddr, check: &DnsCheck, deadline: Instant) -> Attempt {
    let run = || -> Result<Attempt, (&'static str, io::Error)> {
        let s = udp_connected(target).map_err(|e| ("socket", e))?;
        let id = thread_tag() as u16;
        s.send(&dns_query(id, check)).map_err(|e| ("send", e))?;
        let mut buf = [0u8; 4096];
        loop {
            let n = left(deadline)
                .and_then(|t| s.set_read_timeout(Some(t)))
                .and_then(|()| s.recv(&mut buf))
                .map_err(|e| match e.kind() {
                    io::ErrorKind::ConnectionRefused => {
                        ("receive", io::Error::other("port unreachable"))
                    }
                    _ => ("receive", e),
                })?;
            match dns_rcode(id, &buf[..n]) {
                None => continue,
                Some(0) => return Ok(Attempt::Pass { weight: None }),
                Some(rc) => return Ok(Attempt::Fail(format!("dns: rcode {rc}"))),
            }
        }
    };
    run().unwrap_or_else(|(step, e)| Attempt::Fail(format!("dns: {step}: {}", text(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_query_bytes() {
        let q = dns_query(
            0x1234,
            &DnsCheck {
                qtype: 1,
                name: "www.example.com.".into(),
            },
        );
        let mut want = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        assert_eq!(q, want);
        // keepalived's default: SOA of the root.
        let root = dns_query(
            1,
            &DnsCheck {
                qtype: 6,
                name: String::new(),
            },
        );
        assert_eq!(&root[12..], [0, 0, 6, 0, 1]);
    }

    #[test]
    fn dns_answers() {
        let mut r = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        assert_eq!(dns_rcode(0x1234, &r), Some(0));
        assert_eq!(dns_rcode(0x1235, &r), None, "another query's answer");
        r[3] = 0x83;
        assert_eq!(dns_rcode(0x1234, &r), Some(3), "NXDOMAIN");
        r[2] = 0x01;
        assert_eq!(dns_rcode(0x1234, &r), None, "a query, not an answer");
        assert_eq!(dns_rcode(0x1234, &r[..11]), None);
    }

    #[test]
    fn content_length_is_read_case_blind() {
        assert_eq!(
            content_length(b"HTTP/1.0 200 OK\r\ncontent-LENGTH: 12\r\n\r\n"),
            Some(12)
        );
        assert_eq!(content_length(b"HTTP/1.0 200 OK\r\n\r\n"), None);
    }

    #[test]
    fn md5_matches_rfc1321() {
        let sum: [u8; 16] = Md5::digest(b"abc").into();
        assert_eq!(hex(&sum), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn udp_replies_are_judged_as_keepalived() {
        let c = UdpCheck {
            require_reply: true,
            reply: vec![0xab, 0xc0],
            reply_mask: vec![0, 0x0f],
            min_reply_len: 2,
            max_reply_len: 4,
            ..UdpCheck::default()
        };
        assert!(c.accepts(&[0xab, 0xc7]));
        assert!(c.accepts(&[0xab, 0xcf, 0, 0]));
        assert!(!c.accepts(&[0xab, 0xd0]));
        assert!(!c.accepts(&[0xab]), "shorter than min_reply_length");
        assert!(!c.accepts(&[0xab, 0xc0, 0, 0, 0]), "longer than max");
    }
}
