//! keepalived.conf samples: fastlb reads each one into the model it describes, and where
//! keepalived is installed, `keepalived --config-test` agrees the file is valid.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use fastlb::service::config;
use fastlb::service::health::{CheckKind, DnsCheck};
use fastlb::service::pair::VrrpState::{Backup, Master};
use fastlb::service::{ForwardMethod, SchedulerKind, ServiceKey};

const SAMPLES: [&str; 5] = [
    "dr-http.conf",
    "nat-tcp-misc.conf",
    "ssl-multi-check.conf",
    "udp-dns-ping.conf",
    "groups.conf",
];

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keepalived")
        .join(name)
}

#[test]
fn dr_sample_maps_onto_the_model() {
    let c = config::load(&sample("dr-http.conf")).unwrap();
    assert_eq!(c.services.len(), 1);
    let s = &c.services[0];
    assert_eq!(s.scheduler, SchedulerKind::Wrr);
    let p = s.persistence.unwrap();
    assert_eq!((p.timeout_secs, p.netmask), (300, 24));
    assert_eq!(
        s.reals
            .iter()
            .map(|r| (r.weight, r.method))
            .collect::<Vec<_>>(),
        [
            (3, ForwardMethod::DirectRouting),
            (1, ForwardMethod::DirectRouting)
        ]
    );
    let h = c.health.services.get(&s.key).unwrap();
    assert_eq!(
        h.sorry_server.as_ref().unwrap().addr.to_string(),
        "10.0.0.99"
    );
    let check = c
        .health
        .check_for(&s.key, "10.0.0.1".parse().unwrap(), 80)
        .unwrap();
    assert!(check.inhibit_on_failure);
    assert_eq!((check.retries, check.interval.as_secs()), (3, 6));
}

#[test]
fn nat_sample_maps_onto_the_model() {
    let c = config::load(&sample("nat-tcp-misc.conf")).unwrap();
    assert_eq!(c.services.len(), 3);
    assert_eq!(c.services[0].reals[0].method, ForwardMethod::Masquerade);
    assert!(matches!(
        c.services[1].key,
        ServiceKey::Fwmark {
            mark: 7,
            ipv6: false
        }
    ));
    assert_eq!(c.services[2].reals[0].method, ForwardMethod::Tunnel);
    let dynamic = c
        .health
        .check_for(&c.services[0].key, "10.0.1.2".parse().unwrap(), 3306)
        .unwrap();
    assert!(matches!(&dynamic.kind, CheckKind::Script(s) if s.dynamic));
}

#[test]
fn ssl_sample_maps_onto_the_model() {
    let c = config::load(&sample("ssl-multi-check.conf")).unwrap();
    let https = &c.services[0];
    let a = c
        .health
        .check_for(&https.key, "10.0.3.1".parse().unwrap(), 443)
        .unwrap();
    let kinds: Vec<&CheckKind> = a.all().map(|c| &c.kind).collect();
    assert_eq!(kinds.len(), 3, "two urls and a TCP_CHECK: {kinds:?}");
    let CheckKind::Http(h) = kinds[0] else {
        panic!("{kinds:?}")
    };
    assert!(h.digest.is_some());
    let tls = h.tls.as_ref().unwrap();
    assert_eq!(tls.sni.as_deref(), Some("www.example.com"));
    assert!(matches!(kinds[1], CheckKind::Http(h) if h.path == "/ready" && h.tls.is_some()));
    assert_eq!(*kinds[2], CheckKind::Tcp);
    assert_eq!((a.retries, a.delay_before_retry.as_secs()), (2, 3));
    let b = c
        .health
        .check_for(&https.key, "10.0.3.2".parse().unwrap(), 443)
        .unwrap();
    let CheckKind::Http(h) = &b.kind else {
        panic!()
    };
    assert_eq!(
        h.tls.as_ref().unwrap().sni.as_deref(),
        Some("api.example.com")
    );
    let plain = c
        .health
        .check_for(&c.services[1].key, "10.0.3.1".parse().unwrap(), 80)
        .unwrap();
    assert!(matches!(&plain.kind, CheckKind::Http(h) if h.tls.is_none()));
    assert_eq!(
        (plain.retries, plain.delay_before_retry.as_secs()),
        (3, 3),
        "retry 3; keepalived's 3 s delay_before_retry for HTTP_GET"
    );
}

#[test]
fn udp_dns_ping_sample_maps_onto_the_model() {
    let c = config::load(&sample("udp-dns-ping.conf")).unwrap();
    let dns = c.services[0].key;
    let ip = |s: &str| s.parse().unwrap();
    let u = c.health.check_for(&dns, ip("10.0.4.1"), 53).unwrap();
    let CheckKind::Udp(udp) = &u.kind else {
        panic!("{u:?}")
    };
    assert_eq!(udp.payload.as_ref().map(Vec::len), Some(17));
    assert_eq!(udp.reply, [0x12, 0x34, 0x80]);
    assert_eq!(udp.reply_mask, [0, 0, 0x0f]);
    assert_eq!((udp.min_reply_len, udp.max_reply_len), (12, 512));
    let d = c.health.check_for(&dns, ip("10.0.4.2"), 53).unwrap();
    assert_eq!(
        d.kind,
        CheckKind::Dns(DnsCheck {
            qtype: 1,
            name: "www.example.com".into()
        })
    );
    let both = c.health.check_for(&dns, ip("10.0.4.3"), 53).unwrap();
    assert_eq!((both.retries, both.delay_before_retry.as_secs()), (3, 10));
    assert_eq!(both.also[0].kind, CheckKind::Ping);
    let ssh = c
        .health
        .check_for(&c.services[1].key, ip("10.0.4.1"), 22)
        .unwrap();
    assert_eq!(
        ssh.all().map(|c| c.kind.clone()).collect::<Vec<_>>(),
        [CheckKind::Ping, CheckKind::Tcp]
    );
}

#[test]
fn group_sample_expands_into_services() {
    let c = config::load(&sample("groups.conf")).unwrap();
    let keys: Vec<String> = c.services.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "TCP 192.0.2.40:80",
            "TCP 192.0.2.41:80",
            "TCP 192.0.2.42:80",
            "TCP 192.0.2.43:80",
            "TCP 192.0.2.50:80",
            "TCP 192.0.2.51:80",
            "TCP 192.0.2.60:80",
            "TCP 192.0.2.61:80",
        ]
    );
    for s in &c.services {
        assert_eq!(s.reals.len(), 2);
        assert_eq!(s.persistence.unwrap().timeout_secs, 60);
        assert!(c
            .health
            .check_for(&s.key, s.reals[0].addr, s.reals[0].port)
            .is_some());
    }
}

#[test]
fn keepalived_itself_accepts_every_sample() {
    if !support::have("keepalived", "--version") {
        support::skip(
            "keepalived is not installed; fastlb's reading of the samples is still tested",
        );
        return;
    }
    for name in SAMPLES {
        let out = Command::new("keepalived")
            .arg("--config-test")
            .arg("-f")
            .arg(sample(name))
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "keepalived rejects {name}: {said}");
        // Every keyword of the samples is one keepalived knows.
        assert!(!said.contains("Unknown keyword"), "{name}: {said}");
        // And fastlb reads each one.
        config::load(&sample(name)).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn unsupported_keepalived_keys_are_named_with_their_line() {
    let text = "virtual_server 192.0.2.1 80 {\n    lb_algo rr\n    ops\n    real_server 10.0.0.1 80 {\n    }\n}\n";
    // An unsupported checker is named before any of its keys (SSL_GET's `url` was once
    // refused instead of the checker).
    let smtp = "virtual_server 192.0.2.1 25 {\n    protocol TCP\n    real_server 10.0.0.1 25 {\n        SMTP_CHECK {\n            helo_name x\n        }\n    }\n}\n";
    let e = config::parse(smtp, Path::new("k.conf"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("k.conf:4"), "{e}");
    assert!(
        e.contains("SMTP_CHECK health checks are not supported"),
        "{e}"
    );
    let e = config::parse(text, Path::new("k.conf"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("k.conf:3"), "{e}");
    assert!(e.contains("ops"), "{e}");
}

/// The lab's director pairs (tools/lab/ha.conf, DR, and ha-nat.conf, NAT, whose instance
/// also moves the real servers' gateway): one file for both directors' keepalived (`-i
/// dir1`, `-i dir2`) and fastlb. fastlb follows the file's one instance by its addresses and
/// skips the `@dir1`/`@dir2` lines, reads its `@fastlb lvs_sync_daemon` (which keepalived
/// skips); keepalived accepts it as either director.
#[test]
fn the_lab_pair_files_serve_keepalived_and_fastlb() {
    let cases: [(&str, &[&str]); 2] = [
        ("ha.conf", &["10.80.3.100"]),
        ("ha-nat.conf", &["10.80.5.100", "10.80.4.1"]),
    ];
    let have_keepalived = support::have("keepalived", "--version");
    for (file, addrs) in cases {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tools/lab")
            .join(file);
        let c = config::load(&path).unwrap();
        assert_eq!(c.services.len(), 3, "{file}");
        // The sync daemon (an @fastlb line) follows the instance, on d0, syncid its VRID.
        let sync = c.pair.sync_daemon.as_ref().expect("lvs_sync_daemon");
        assert_eq!(
            (sync.interface.as_str(), sync.instance.as_deref()),
            ("d0", Some("VI_1")),
            "{file}"
        );
        let followed = c
            .pair
            .followed()
            .expect("the file's only instance is followed");
        assert_eq!(
            (followed.name.as_str(), followed.interface.as_str()),
            ("VI_1", "d0")
        );
        let want: Vec<std::net::IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(followed.addresses, want, "{file}");
        assert_eq!(c.pair.state(|a| want.contains(&a)), Master, "{file}");
        assert_eq!(
            c.pair.state(|a| a == want[0]),
            if want.len() > 1 { Backup } else { Master }
        );
        assert_eq!(c.pair.state(|_| false), Backup, "{file}");
        if !have_keepalived {
            continue;
        }
        for id in ["dir1", "dir2"] {
            let out = Command::new("keepalived")
                .args(["--config-test", "-i", id, "-f"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "keepalived -i {id} rejects {file}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if !have_keepalived {
        support::skip(
            "keepalived is not installed; fastlb's reading of the pair files is still tested",
        );
    }
}
