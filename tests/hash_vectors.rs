//! fastlb's dh, sh and mh against an independent implementation of the kernel's hashing.
//!
//! `tools/kernel-ipvs/hashing.py` computes what Linux IPVS's `ip_vs_dh.c`, `ip_vs_sh.c` and
//! `ip_vs_mh.c` (with `lib/siphash.c`) compute, written from the kernel's source and sharing
//! no code with fastlb. Its known-answer vectors are committed
//! (`tools/kernel-ipvs/vectors.txt`) and checked three ways: fastlb gives every answer (no
//! Python needed); the oracle still computes the committed file; and fastlb agrees with the
//! oracle on a few hundred random services (weights 0 to 1000, up to 9 servers, every flag,
//! every Maglev table size, IPv4 and IPv6). `tests/kernel_ipvs.rs` runs the same vectors
//! through the real kernel in qemu. The last two print `SKIP: ...` without python3.

#[path = "support/vectors.rs"]
mod vectors;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fastlb::service::SchedulerKind;

fn tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/kernel-ipvs/hashing.py")
}

fn committed() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/kernel-ipvs/vectors.txt"),
    )
    .unwrap()
}

fn python() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn letters(v: &[Option<char>]) -> String {
    v.iter().map(|a| a.unwrap_or('-')).collect()
}

#[test]
fn fastlb_gives_the_known_answers() {
    let groups = vectors::parse(&committed());
    assert!(groups.len() >= 16, "vectors missing");
    let mut failures = Vec::new();
    for g in &groups {
        let want: Vec<Option<char>> = g.conns.iter().map(|c| c.answer).collect();
        let got = vectors::fastlb_answers(g);
        if got != want {
            failures.push(format!(
                "{} {:?} {:?}: want {} got {}",
                g.sched,
                g.flags,
                g.list,
                letters(&want),
                letters(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_oracle_still_computes_the_committed_vectors() {
    if !python() {
        println!("SKIP: python3 is not installed (the committed vectors are still checked)");
        return;
    }
    let out = Command::new("python3")
        .arg(tool())
        .arg("vectors")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed());
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_groups(rng: &mut Rng, n: usize) -> Vec<vectors::Group> {
    let sizes = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];
    (0..n)
        .map(|k| {
            let sched = [SchedulerKind::Dh, SchedulerKind::Sh, SchedulerKind::Mh][k % 3];
            let v6 = rng.below(3) == 0;
            let servers = 1 + rng.below(9) as usize;
            let big = rng.below(5) == 0;
            let list = (0..servers)
                .map(|i| {
                    let w = match rng.below(6) {
                        0 => 0,
                        _ if big => 1 + rng.below(1000) as i32,
                        _ => 1 + rng.below(5) as i32,
                    };
                    ((b'A' + i as u8) as char, w)
                })
                .collect();
            let prefix = match sched {
                SchedulerKind::Sh => "sh",
                _ => "mh",
            };
            let mut flags = Vec::new();
            if sched != SchedulerKind::Dh {
                if rng.below(2) == 0 {
                    flags.push(format!("{prefix}-fallback"));
                }
                if rng.below(2) == 0 {
                    flags.push(format!("{prefix}-port"));
                }
            }
            // Large tables cost the Python oracle seconds: a few only.
            let size = (sched == SchedulerKind::Mh).then(|| {
                let i = if k % 30 == 2 {
                    8
                } else {
                    rng.below(6) as usize
                };
                sizes[i]
            });
            let vport = 1 + rng.below(65535) as u16;
            let conns = (0..24)
                .map(|_| {
                    let (client, vaddr) = if v6 {
                        (
                            std::net::Ipv6Addr::from(
                                u128::from(rng.next()) << 64 | u128::from(rng.next()),
                            )
                            .into(),
                            std::net::Ipv6Addr::from(0xfd90_u128 << 112 | u128::from(rng.next()))
                                .into(),
                        )
                    } else {
                        (
                            std::net::Ipv4Addr::from(rng.next() as u32).into(),
                            std::net::Ipv4Addr::from(rng.next() as u32).into(),
                        )
                    };
                    vectors::Conn {
                        client,
                        cport: rng.below(65536) as u16,
                        vaddr,
                        vport,
                        answer: None,
                    }
                })
                .collect();
            vectors::Group {
                sched,
                flags,
                size,
                list,
                first: None,
                conns,
            }
        })
        .collect()
}

#[test]
fn fastlb_agrees_with_the_oracle_on_random_services() {
    if !python() {
        println!("SKIP: python3 is not installed (the committed vectors are still checked)");
        return;
    }
    let groups = random_groups(&mut Rng(0x05ee_d1b5_2024), 240);
    let mut child = Command::new("python3")
        .arg(tool())
        .arg("answer")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(vectors::render_questions(&groups).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let answered = vectors::parse(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(answered.len(), groups.len());
    let mut failures = Vec::new();
    let mut compared = 0;
    for g in &answered {
        let want: Vec<Option<char>> = g.conns.iter().map(|c| c.answer).collect();
        let got = vectors::fastlb_answers(g);
        compared += want.len();
        if got != want {
            failures.push(format!(
                "{} {:?} size {:?} {:?} v6 {}: oracle {} fastlb {}",
                g.sched,
                g.flags,
                g.size,
                g.list,
                g.conns[0].vaddr.is_ipv6(),
                letters(&want),
                letters(&got)
            ));
        }
    }
    println!(
        "{compared} connections on {} services compared",
        answered.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
