//! keepalived.conf samples: fastlb reads each one into the model it describes, and where
//! keepalived is installed, `keepalived --config-test` agrees the file is valid.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use fastlb::service::config;
use fastlb::service::pair::VrrpState::{Backup, Master};
use fastlb::service::{ForwardMethod, SchedulerKind, ServiceKey};

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
    assert!(matches!(&dynamic.kind, fastlb::service::health::CheckKind::Script(s) if s.dynamic));
}

#[test]
fn keepalived_itself_accepts_every_sample() {
    if !support::have("keepalived", "--version") {
        support::skip(
            "keepalived is not installed; fastlb's reading of the samples is still tested",
        );
        return;
    }
    for name in ["dr-http.conf", "nat-tcp-misc.conf"] {
        let out = Command::new("keepalived")
            .arg("--config-test")
            .arg("-f")
            .arg(sample(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keepalived rejects {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unsupported_keepalived_keys_are_named_with_their_line() {
    let text = "virtual_server 192.0.2.1 80 {\n    lb_algo rr\n    ops\n    real_server 10.0.0.1 80 {\n    }\n}\n";
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
