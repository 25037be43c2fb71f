//! keepalived's SSL_GET, digest, UDP_CHECK, PING_CHECK, DNS_CHECK and several checkers on
//! one real server, read from a keepalived.conf and run against real servers on
//! 127.0.0.1: an HTTPS server with a self-signed certificate made in the test (rustls),
//! a UDP echo server, a closed UDP port, ICMP echo to 127.0.0.1 and a small DNS server
//! that answers `ok.test` and refuses every other name.
//!
//! Every check starts down here, so a server that comes up has passed each of its checks
//! for real; one that goes down names the check that failed.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastlb::health::{BackendChoice, HealthMonitor, MonitorOptions};
use fastlb::service::config;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BODY: &[u8] = b"fastlb https health body\n";

/// An HTTPS server answering every GET with 200 and [`BODY`]; records the SNI of each
/// handshake.
fn https_server() -> (u16, Arc<Mutex<Vec<Option<String>>>>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.key_pair.serialize_der()),
    );
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .unwrap();
    let server = Arc::new(server);
    let l = TcpListener::bind((LO, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&names);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let server = Arc::clone(&server);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let conn = rustls::ServerConnection::new(server).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(tls.conn.server_name().map(str::to_string));
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                    BODY.len()
                );
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(BODY);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, names)
}

/// A plain HTTP server answering 200 and [`BODY`] (for `digest` over HTTP_GET).
fn http_server() -> u16 {
    let l = TcpListener::bind((LO, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", BODY.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(BODY);
        }
    });
    port
}

fn udp_echo() -> u16 {
    let s = UdpSocket::bind((LO, 0)).unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    port
}

/// A UDP port nothing listens on: the kernel answers ICMP port unreachable.
fn closed_udp_port() -> u16 {
    let s = UdpSocket::bind((LO, 0)).unwrap();
    s.local_addr().unwrap().port()
}

/// A DNS server: NOERROR for `ok.test`, NXDOMAIN for anything else.
fn dns_server() -> u16 {
    let s = UdpSocket::bind((LO, 0)).unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let q = &buf[..n];
            if q.len() < 17 {
                continue;
            }
            let mut labels = Vec::new();
            let mut i = 12;
            while i < q.len() && q[i] != 0 {
                let len = usize::from(q[i]);
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).into_owned());
                i += 1 + len;
            }
            let rcode = if labels.join(".") == "ok.test" { 0 } else { 3 };
            let mut r = q[..i + 5].to_vec();
            r[2] = 0x81; // QR, RD
            r[3] = 0x80 | rcode; // RA
            let _ = s.send_to(&r, from);
        }
    });
    port
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn keepalived_checkers_against_real_servers() {
    let (https, sni) = https_server();
    let http = http_server();
    let echo = udp_echo();
    let closed = closed_udp_port();
    let dns = dns_server();
    let good = md5_hex(BODY);
    let bad = md5_hex(b"something else");
    // One real server per case, told apart by its port; connect_port points the checks
    // at the test's servers.
    let text = format!(
        r#"
virtual_server 192.0.2.1 80 {{
    protocol TCP
    delay_loop 0.2
    connect_timeout 1
    retry 0
    lb_kind NAT
    real_server 127.0.0.1 1 {{
        SSL_GET {{
            url {{
                path /health
                digest {good}
            }}
            connect_port {https}
            enable_sni
            sni_name health.example
        }}
    }}
    real_server 127.0.0.1 2 {{
        SSL_GET {{
            url {{
                path /health
                digest {bad}
            }}
            connect_port {https}
        }}
    }}
    real_server 127.0.0.1 3 {{
        SSL_GET {{
            url {{
                path /health
            }}
            connect_port {http}
        }}
    }}
    real_server 127.0.0.1 4 {{
        HTTP_GET {{
            url {{
                path /
                digest {good}
            }}
            connect_port {http}
        }}
        UDP_CHECK {{
            connect_port {echo}
            payload 68656c6c6f
            require_reply 68 65 xx
        }}
        PING_CHECK {{
        }}
        DNS_CHECK {{
            connect_port {dns}
            type A
            name ok.test
        }}
    }}
    real_server 127.0.0.1 5 {{
        UDP_CHECK {{
            connect_port {closed}
        }}
    }}
    real_server 127.0.0.1 6 {{
        UDP_CHECK {{
            connect_port {echo}
            payload 01
            require_reply 02
        }}
    }}
    real_server 127.0.0.1 7 {{
        PING_CHECK {{
        }}
        DNS_CHECK {{
            connect_port {dns}
            name missing.test
        }}
    }}
    real_server 127.0.0.1 8 {{
        TCP_CHECK {{
            connect_port {http}
        }}
        UDP_CHECK {{
            connect_port {closed}
        }}
    }}
}}
"#
    );
    let mut c = config::parse(&text, Path::new("probes.conf")).unwrap_or_else(|e| panic!("{e}"));
    // Every check starts down: coming up means each check of the server passed.
    for h in c.health.services.values_mut() {
        for check in h.reals.values_mut() {
            check.start_down = true;
            for more in &mut check.also {
                more.start_down = true;
            }
        }
    }
    let (m, rx) = HealthMonitor::start(
        &c,
        MonitorOptions {
            backend: BackendChoice::Poll,
            log: false,
        },
    )
    .unwrap();
    // Servers that never pass stay down without a transition: give every check several
    // rounds, then read what changed.
    let until = Instant::now() + Duration::from_secs(4);
    let mut got = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Ok(t) = rx.recv_timeout(left) {
            got.push((t.server.1, t.up, t.reason));
        }
    }
    m.stop();
    got.sort();
    let ups: Vec<u16> = got.iter().filter(|g| g.1).map(|g| g.0).collect();
    assert_eq!(ups, [1, 4], "{got:#?}");
    assert!(
        got.iter().all(|g| g.1),
        "nothing went down after coming up: {got:#?}"
    );
    assert_eq!(got[0].2, "https: GET /health ok");
    // enable_sni with sni_name: sent in the handshake; without enable_sni, none.
    let names = sni.lock().unwrap().clone();
    assert!(
        names.contains(&Some("health.example".to_string())),
        "{names:?}"
    );
    assert!(names.contains(&None), "{names:?}");

    // What the failing servers fail on, one check each, seen on their own.
    for (real, want) in [
        (2, "http: digest "),
        (3, "https: tls handshake:"),
        (5, "udp: port unreachable"),
        (6, "udp: reply of 1 bytes does not match"),
        (7, "dns: rcode 3"),
        (8, "udp: port unreachable"),
    ] {
        let mut one = c.clone();
        for h in one.health.services.values_mut() {
            h.reals.retain(|(_, port), _| *port == real);
            for check in h.reals.values_mut() {
                check.start_down = false;
                for more in &mut check.also {
                    more.start_down = false;
                }
            }
        }
        let (m, rx) = HealthMonitor::start(
            &one,
            MonitorOptions {
                backend: BackendChoice::Poll,
                log: false,
            },
        )
        .unwrap();
        let t = rx
            .recv_timeout(Duration::from_secs(4))
            .unwrap_or_else(|_| panic!("server {real} never went down"));
        m.stop();
        assert_eq!(t.server, (LO, real));
        assert!(!t.up);
        assert!(t.reason.starts_with(want), "{real}: {}", t.reason);
    }
}

#[test]
fn ping_reaches_loopback() {
    let text = "virtual_server 192.0.2.1 80 {\n protocol TCP\n delay_loop 0.2\n real_server 127.0.0.1 80 {\n  PING_CHECK {\n   connect_timeout 1\n  }\n }\n}\n";
    let mut c = config::parse(text, Path::new("ping.conf")).unwrap();
    for h in c.health.services.values_mut() {
        for check in h.reals.values_mut() {
            check.start_down = true;
        }
    }
    let (m, rx) = HealthMonitor::start(&c, MonitorOptions::default()).unwrap();
    let t = rx
        .recv_timeout(Duration::from_secs(4))
        .expect("127.0.0.1 answers the echo");
    m.stop();
    assert!(t.up);
    assert_eq!(t.reason, "ping: ok");
}
