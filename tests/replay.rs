//! Golden replay: every fixture under `pcap-fixtures/` is replayed through the `fastlb
//! replay` command and its output compared byte for byte with `expected.pcap` (and the report
//! with `report.json`). Every output frame's checksums are then verified by an independent
//! reader (etherparse; tshark too where installed), and the output must read exactly as the
//! fixture's `expect.txt`: a per-frame summary worked out by hand from the kernel's
//! algorithms, or with an independent oracle (`tools/kernel-ipvs/hashing.py` for the hashing
//! schedulers), never copied from fastlb's output unchecked. Every fixture must have one. The
//! partial-checksum fixtures (`csum-*`) are also checked to start from partial checksums and,
//! in DR, to change no byte of a segment but a partial field.
//!
//! `FASTLB_BLESS=1 cargo test --test replay` rewrites expected.pcap and report.json from the
//! current output (check the diff by hand before committing it). Any other value of
//! `FASTLB_BLESS` is an error, and so is `FASTLB_BLESS=1` where `CI` is set: CI only ever
//! compares. `expect.txt` is never rewritten: it is the hand-worked oracle.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use etherparse::{IpNumber, NetSlice, SlicedPacket, TransportSlice};
use fastlb::datapath::pcap::PcapReader;

/// eth0's MAC in `pcap-fixtures/links.txt`.
const DIRECTOR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcap-fixtures")
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("in.pcap").exists())
        .collect();
    v.sort();
    v
}

fn config_of(dir: &Path) -> PathBuf {
    ["fastlb.toml", "ipvsadm.rules", "keepalived.conf"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{}: no configuration", dir.display()))
}

struct Output {
    pcap: Vec<u8>,
    report: String,
}

fn replay(dir: &Path) -> Output {
    replay_input(dir, &dir.join("in.pcap"))
}

/// Replays `input` with the configuration of fixture `dir`.
fn replay_input(dir: &Path, input: &Path) -> Output {
    // Tests run in parallel and may replay the same fixture: one directory per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = std::env::temp_dir().join(format!(
        "fastlb-replay-{}-{call}-{}",
        std::process::id(),
        dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    let (out, report) = (tmp.join("out.pcap"), tmp.join("report.json"));
    let status = Command::new(env!("CARGO_BIN_EXE_fastlb"))
        .arg("replay")
        .arg("--config")
        .arg(config_of(dir))
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .arg("--routes")
        .arg(fixtures_dir().join("routes.txt"))
        .arg("--neigh")
        .arg(fixtures_dir().join("neigh.txt"))
        .arg("--links")
        .arg(fixtures_dir().join("links.txt"))
        .status()
        .unwrap();
    assert!(status.success(), "{}: replay failed", dir.display());
    let o = Output {
        pcap: std::fs::read(&out).unwrap(),
        report: std::fs::read_to_string(&report).unwrap(),
    };
    std::fs::remove_dir_all(&tmp).unwrap();
    o
}

fn frames(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(pcap).unwrap();
    let mut v = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        v.push(rec.data);
    }
    v
}

/// Verifies every checksum of a frame with etherparse, descending into IP-in-IP.
fn check_checksums(frame: &[u8]) -> Result<(), String> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| format!("etherparse: {e}"))?;
    check_net(p.net.as_ref(), p.transport.as_ref(), 0)
}

fn check_net(
    net: Option<&NetSlice>,
    transport: Option<&TransportSlice>,
    depth: usize,
) -> Result<(), String> {
    let Some(net) = net else { return Ok(()) };
    let (payload, proto) = match net {
        NetSlice::Ipv4(ip) => {
            let h = ip.header().to_header();
            if h.calc_header_checksum() != h.header_checksum {
                return Err("IPv4 header checksum".into());
            }
            (ip.payload().payload, ip.payload().ip_number)
        }
        NetSlice::Ipv6(ip) => (ip.payload().payload, ip.payload().ip_number),
    };
    if (proto == IpNumber::IPV4 || proto == IpNumber::IPV6) && depth == 0 {
        let inner = SlicedPacket::from_ip(payload).map_err(|e| format!("inner: {e}"))?;
        return check_net(inner.net.as_ref(), inner.transport.as_ref(), 1);
    }
    let ok = match (net, transport) {
        (NetSlice::Ipv4(ip), Some(TransportSlice::Tcp(t))) => {
            t.to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                .unwrap()
                == t.checksum()
        }
        (NetSlice::Ipv6(ip), Some(TransportSlice::Tcp(t))) => {
            t.to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                .unwrap()
                == t.checksum()
        }
        (NetSlice::Ipv4(ip), Some(TransportSlice::Udp(u))) => {
            u.checksum() == 0
                || u.to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
                    .unwrap()
                    == u.checksum()
        }
        (NetSlice::Ipv6(ip), Some(TransportSlice::Udp(u))) => {
            u.to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                .unwrap()
                == u.checksum()
        }
        (_, Some(TransportSlice::Icmpv4(i))) => {
            i.header().icmp_type.calc_checksum(i.payload()) == i.checksum()
        }
        (NetSlice::Ipv6(ip), Some(TransportSlice::Icmpv6(i))) => {
            let h = ip.header();
            i.header()
                .icmp_type
                .calc_checksum(h.source(), h.destination(), i.payload())
                .unwrap()
                == i.checksum()
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err("transport checksum".into())
    }
}

/// One line per frame: destination MAC's last byte, then addresses, ports and what matters.
fn summary(frame: &[u8]) -> String {
    let mut s = format!("{:02x}", frame[5]);
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    if let Some(etherparse::VlanSlice::SingleVlan(v)) = p.vlan.as_ref() {
        write!(s, " vlan{}", v.vlan_identifier().value()).unwrap();
    }
    describe(&mut s, p.net.as_ref(), p.transport.as_ref());
    s
}

fn describe(s: &mut String, net: Option<&NetSlice>, transport: Option<&TransportSlice>) {
    let Some(net) = net else { return };
    let (src, dst, ttl, payload, proto) = match net {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            (
                h.source_addr().to_string(),
                h.destination_addr().to_string(),
                h.ttl(),
                ip.payload().payload,
                ip.payload().ip_number,
            )
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            (
                h.source_addr().to_string(),
                h.destination_addr().to_string(),
                h.hop_limit(),
                ip.payload().payload,
                ip.payload().ip_number,
            )
        }
    };
    if proto == IpNumber::IPV4 || proto == IpNumber::IPV6 {
        write!(s, " tun {src}>{dst} |").unwrap();
        let inner = SlicedPacket::from_ip(payload).unwrap();
        return describe(s, inner.net.as_ref(), inner.transport.as_ref());
    }
    write!(s, " {src}>{dst} ttl{ttl}").unwrap();
    if let Some((offset, more)) = fragment_of(net) {
        // etherparse leaves a fragment's transport unparsed: the ports are in the first.
        write!(s, " frag{offset}{}", if more { "+" } else { "" }).unwrap();
        let name = match proto {
            IpNumber::TCP => "tcp",
            IpNumber::UDP => "udp",
            _ => return,
        };
        if offset == 0 && payload.len() >= 4 {
            let port = |o: usize| u16::from_be_bytes([payload[o], payload[o + 1]]);
            write!(s, " {name} {}>{}", port(0), port(2)).unwrap();
        }
        return;
    }
    match transport {
        Some(TransportSlice::Tcp(t)) => {
            let f: String = [
                (t.syn(), 'S'),
                (t.fin(), 'F'),
                (t.rst(), 'R'),
                (t.ack(), 'A'),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect();
            write!(
                s,
                " tcp {}>{} {f} len{}",
                t.source_port(),
                t.destination_port(),
                t.payload().len()
            )
            .unwrap();
        }
        Some(TransportSlice::Udp(u)) => {
            write!(s, " udp {}>{}", u.source_port(), u.destination_port()).unwrap()
        }
        Some(TransportSlice::Icmpv4(i)) => {
            write!(s, " icmp {}/{}", i.type_u8(), i.code_u8()).unwrap();
            quoted(s, i.payload(), false);
        }
        Some(TransportSlice::Icmpv6(i)) => {
            write!(s, " icmp6 {}/{}", i.type_u8(), i.code_u8()).unwrap();
            quoted(s, i.payload(), true);
        }
        _ => {}
    }
}

/// A fragment's byte offset and more-fragments flag (IPv6: a Fragment header first).
fn fragment_of(net: &NetSlice) -> Option<(usize, bool)> {
    let raw = match net {
        NetSlice::Ipv4(ip) if ip.payload().fragmented => ip.header().slice()[6..8].to_vec(),
        NetSlice::Ipv6(ip) if ip.payload().fragmented => {
            let ext = ip.extensions();
            (ext.first_header() == Some(IpNumber::IPV6_FRAGMENTATION_HEADER))
                .then(|| ext.slice()[2..4].to_vec())?
        }
        _ => return None,
    };
    let word = u16::from_be_bytes([raw[0], raw[1]]);
    Some(match net {
        NetSlice::Ipv4(_) => (usize::from(word & 0x1fff) * 8, word & 0x2000 != 0),
        NetSlice::Ipv6(_) => (usize::from(word & 0xfff8), word & 1 != 0),
    })
}

/// The quoted packet of an ICMP error, as far as it is there: `[src:port>dst:port]`.
fn quoted(s: &mut String, payload: &[u8], v6: bool) {
    let (src, dst, l4): (String, String, &[u8]) = if v6 {
        if payload.len() < 48 {
            return;
        }
        let a = |o: usize| {
            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&payload[o..o + 16]).unwrap()).to_string()
        };
        (a(8), a(24), &payload[40..])
    } else {
        if payload.len() < 28 {
            return;
        }
        let ihl = usize::from(payload[0] & 0xf) * 4;
        let a = |o: usize| {
            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&payload[o..o + 4]).unwrap()).to_string()
        };
        (a(12), a(16), &payload[ihl..])
    };
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    write!(s, " [{src}:{}>{dst}:{}]", port(0), port(2)).unwrap();
}

fn tshark_complaints(pcap: &Path) -> Option<String> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            // A quoted TCP segment in an ICMP error is cut at 576/1280 bytes, and tshark
            // then "verifies" its checksum over the part it has: not meaningful, so quoted
            // TCP is exempt; everything else, quoted UDP included, must verify.
            "-Y",
            "_ws.malformed || ip.checksum.status == \"Bad\" || udp.checksum.status == \"Bad\" \
             || icmp.checksum.status == \"Bad\" || icmpv6.checksum.status == \"Bad\" \
             || (tcp.checksum.status == \"Bad\" && !icmp && !icmpv6)",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether to rewrite the goldens, from `FASTLB_BLESS` and whether `CI` is set: only
/// `FASTLB_BLESS=1`, and never under CI; any other value is an error rather than a silent
/// compare (or a silent rewrite).
fn bless_setting(bless: Option<&std::ffi::OsStr>, ci: bool) -> Result<bool, String> {
    match bless.map(|v| v.to_str()) {
        None => Ok(false),
        Some(Some("1")) if ci => Err(
            "FASTLB_BLESS=1 with CI set: goldens are never rewritten in CI; unset FASTLB_BLESS"
                .into(),
        ),
        Some(Some("1")) => Ok(true),
        Some(v) => Err(format!(
            "FASTLB_BLESS={}: only FASTLB_BLESS=1 rewrites the goldens; unset it to compare",
            v.unwrap_or("(not UTF-8)")
        )),
    }
}

#[test]
fn blessing_needs_exactly_one_and_never_runs_in_ci() {
    use std::ffi::OsStr;
    assert_eq!(bless_setting(None, false), Ok(false));
    assert_eq!(bless_setting(None, true), Ok(false));
    assert_eq!(bless_setting(Some(OsStr::new("1")), false), Ok(true));
    assert!(bless_setting(Some(OsStr::new("1")), true).is_err());
    for v in ["0", "", "yes", "true", "2"] {
        let e = bless_setting(Some(OsStr::new(v)), false).unwrap_err();
        assert!(e.starts_with(&format!("FASTLB_BLESS={v}:")), "{e}");
    }
}

#[test]
fn every_fixture_replays_to_its_golden_output() {
    let bless = bless_setting(
        std::env::var_os("FASTLB_BLESS").as_deref(),
        std::env::var_os("CI").is_some(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    let list = fixtures();
    assert!(list.len() >= 30, "fixtures missing: {}", list.len());
    for dir in &list {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let out = replay(dir);
        let (exp_pcap, exp_report) = (dir.join("expected.pcap"), dir.join("report.json"));
        if bless {
            std::fs::write(&exp_pcap, &out.pcap).unwrap();
            std::fs::write(&exp_report, &out.report).unwrap();
        }
        if std::fs::read(&exp_pcap).ok().as_deref() != Some(&out.pcap[..]) {
            failures.push(format!("{name}: output differs from expected.pcap"));
        }
        if std::fs::read_to_string(&exp_report).ok().as_deref() != Some(&out.report[..]) {
            failures.push(format!("{name}: report differs from report.json"));
        }
        let out_frames = frames(&out.pcap);
        for (i, f) in out_frames.iter().enumerate() {
            if let Err(e) = check_checksums(f) {
                failures.push(format!("{name}: frame {}: {e}", i + 1));
            }
            // links.txt: the director's one interface. Whatever MAC a frame was sent to
            // (a VRRP virtual MAC, broadcast), it leaves from the interface's own.
            if f[6..12] != DIRECTOR_MAC {
                failures.push(format!(
                    "{name}: frame {}: source MAC {:02x?}, not the director's own",
                    i + 1,
                    &f[6..12]
                ));
            }
        }
        // Every fixture needs an oracle that does not come from fastlb's own output.
        let Ok(expect) = std::fs::read_to_string(dir.join("expect.txt")) else {
            failures.push(format!(
                "{name}: no expect.txt (work the output out by hand or with an oracle)"
            ));
            continue;
        };
        {
            let got: Vec<String> = out_frames.iter().map(|f| summary(f)).collect();
            let want: Vec<&str> = expect
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .collect();
            if got != want {
                failures.push(format!(
                    "{name}: frames differ from expect.txt; got:\n{}",
                    got.join("\n")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tshark_reads_every_output_cleanly() {
    if !support::have("tshark", "--version") {
        support::skip("tshark is not installed; etherparse still checks every checksum");
        return;
    }
    for dir in fixtures() {
        let exp = dir.join("expected.pcap");
        let complaints = tshark_complaints(&exp).expect("tshark ran");
        assert!(
            complaints.trim().is_empty(),
            "{}: tshark complains:\n{complaints}",
            exp.display()
        );
    }
}

/// One's-complement sum of big-endian 16-bit words (RFC 1071), folded, not complemented:
/// written here again so the check below does not lean on fastlb's own.
fn ones_sum(data: &[u8]) -> u16 {
    let mut s: u64 = data
        .chunks(2)
        .map(|w| u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0)))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A TCP or UDP frame's segment as read by etherparse.
struct Segment {
    bytes: Vec<u8>,
    /// Offset of the checksum field in `bytes`.
    field: usize,
    /// The field holds only the pseudo-header sum: a partial checksum, as a sender with
    /// checksum offload leaves it (or, by a one-in-65 535 chance, a complete one).
    looks_partial: bool,
    /// The complete checksum of the segment, computed here in full (0 written 0xffff).
    complete: u16,
}

impl Segment {
    fn of(frame: &[u8]) -> Option<Segment> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        let (mut pseudo, seg, proto) = match p.net.as_ref()? {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                let mut a = h.source().to_vec();
                a.extend_from_slice(&h.destination());
                (a, ip.payload().payload, ip.payload().ip_number)
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                let mut a = h.source().to_vec();
                a.extend_from_slice(&h.destination());
                (a, ip.payload().payload, ip.payload().ip_number)
            }
        };
        let field = match proto {
            IpNumber::TCP => 16,
            IpNumber::UDP => 6,
            _ => return None,
        };
        pseudo.extend_from_slice(&u16::from(proto.0).to_be_bytes());
        pseudo.extend_from_slice(&(seg.len() as u32).to_be_bytes());
        let value = u16::from_be_bytes([seg[field], seg[field + 1]]);
        let mut zeroed = seg.to_vec();
        zeroed[field..field + 2].fill(0);
        let sum = ones_sum(&[pseudo.clone(), zeroed].concat());
        let complete = match !sum {
            0 => 0xffff,
            c => c,
        };
        Some(Segment {
            bytes: seg.to_vec(),
            field,
            looks_partial: value == ones_sum(&pseudo),
            complete,
        })
    }

    fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.bytes[self.field], self.bytes[self.field + 1]])
    }
}

/// The MAC fixtures start from frames to other hosts' MACs, and each is dropped and counted
/// as `other_host` (a frame of the director's is never counted so).
#[test]
fn mac_fixtures_drop_and_count_frames_for_other_hosts() {
    for (name, foreign) in [("mac-foreign-v4", 5), ("mac-vmac-v4", 2)] {
        let dir = fixtures_dir().join(name);
        let input = frames(&std::fs::read(dir.join("in.pcap")).unwrap());
        let ours = |f: &Vec<u8>| {
            f[..6] == DIRECTOR_MAC
                || f[0] & 1 == 1
                || (name == "mac-vmac-v4" && f[..5] == [0, 0, 0x5e, 0, 1] && f[5] == 0x33)
                || (name == "mac-vmac-v4" && f[..5] == [0, 0, 0x5e, 0, 2] && f[5] == 0x33)
        };
        assert_eq!(
            input.iter().filter(|f| !ours(f)).count(),
            foreign,
            "{name}: frames to other MACs"
        );
        let out = replay(&dir);
        let report: serde_json::Value = serde_json::from_str(&out.report).unwrap();
        assert_eq!(report["drops"]["other_host"], foreign, "{name}");
        assert_eq!(
            frames(&out.pcap).len(),
            input.len() - foreign,
            "{name}: every frame of the director's is forwarded"
        );
    }
}

/// The partial-checksum fixtures (`csum-*`) do start from partial checksums (TCP and UDP,
/// each mode). In DR, where nothing above the IP header changes, every segment leaves byte
/// for byte as it came, except that a partial field leaves as the complete checksum
/// computed here; a complete checksum that happens to equal the pseudo-header sum (one
/// such frame in each DR fixture) leaves as it came.
#[test]
fn partial_checksum_fixtures_start_partial_and_dr_keeps_every_other_byte() {
    let list: Vec<PathBuf> = fixtures()
        .into_iter()
        .filter(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("csum-")
        })
        .collect();
    assert_eq!(list.len(), 6, "csum-{{dr,nat,tun}}-{{v4,v6}}");
    for dir in &list {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let input = frames(&std::fs::read(dir.join("in.pcap")).unwrap());
        let segs: Vec<Option<Segment>> = input.iter().map(|f| Segment::of(f)).collect();
        let partial = |field| {
            segs.iter()
                .flatten()
                .any(|s| s.field == field && s.looks_partial && s.checksum() != s.complete)
        };
        assert!(partial(16), "{name}: no partial TCP input");
        assert!(partial(6), "{name}: no partial UDP input");
        if !name.starts_with("csum-dr-") {
            continue;
        }
        let output = frames(&replay(dir).pcap);
        assert_eq!(input.len(), output.len(), "{name}: DR forwards every frame");
        let mut coincidences = 0;
        for (i, (a, b)) in segs.iter().zip(&output).enumerate() {
            let (Some(a), Some(b)) = (a, Segment::of(b)) else {
                continue;
            };
            let at = format!("{name}: frame {}", i + 1);
            let f = a.field;
            if a.looks_partial {
                assert_eq!(a.bytes[..f], b.bytes[..f], "{at}");
                assert_eq!(a.bytes[f + 2..], b.bytes[f + 2..], "{at}");
                assert_eq!(b.checksum(), a.complete, "{at}: completed");
                coincidences += usize::from(a.checksum() == a.complete);
            } else {
                assert_eq!(a.bytes, b.bytes, "{at}: a complete checksum changed");
            }
        }
        assert_eq!(
            coincidences, 1,
            "{name}: the chance match is in the fixture"
        );
    }
}

#[test]
fn replay_is_deterministic() {
    let dir = fixtures_dir().join("persist-v4");
    let (a, b) = (replay(&dir), replay(&dir));
    assert_eq!(a.pcap, b.pcap);
    assert_eq!(a.report, b.report);
}

/// `pcap-fixtures/pcapng/NAME[.nsec][.be].pcapng`: fixture NAME's input converted by
/// `editcap -F pcapng` (`.nsec`: through `editcap -F nsecpcap` first, so `if_tsresol` is
/// 10^-9; `.be`: rewritten big-endian by `tools/pcapng-swap.py`, which tshark reads as the
/// original). Each replays to the same output bytes and report as the classic input.
#[test]
fn pcapng_inputs_replay_as_their_classic_originals() {
    let ng_dir = fixtures_dir().join("pcapng");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&ng_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcapng"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 6, "{inputs:?}");
    let (mut nsec, mut big) = (0, 0);
    for input in &inputs {
        let file = input.file_name().unwrap().to_string_lossy().to_string();
        let name = file.split('.').next().unwrap();
        nsec += usize::from(file.contains(".nsec."));
        big += usize::from(file.contains(".be."));
        let dir = fixtures_dir().join(name);
        let bytes = std::fs::read(input).unwrap();
        assert_eq!(&bytes[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "{file}: not pcapng");
        let classic = replay(&dir);
        let ng = replay_input(&dir, input);
        assert!(!classic.pcap.is_empty());
        assert!(
            ng.pcap == classic.pcap,
            "{file}: output differs from {name}'s"
        );
        assert_eq!(ng.report, classic.report, "{file}: report differs");
        // Same frames in: the classic input's records, read through the pcapng reader.
        let classic_in = frames(&std::fs::read(dir.join("in.pcap")).unwrap());
        assert_eq!(frames(&bytes), classic_in, "{file}: frames differ");
    }
    assert!(nsec > 0 && big > 0, "a nanosecond and a big-endian capture");
}

/// A malformed pcapng is refused whole, with what is wrong and where; no output is kept
/// as if it were good.
#[test]
fn malformed_pcapng_is_refused_with_a_clear_error() {
    let dir = fixtures_dir().join("timeouts-v4");
    let good = std::fs::read(fixtures_dir().join("pcapng/timeouts-v4.pcapng")).unwrap();
    let tmp = std::env::temp_dir().join(format!("fastlb-pcapng-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "truncated",
            good[..good.len() - 10].to_vec(),
            "truncated block",
        ),
        (
            "trailer",
            {
                let mut b = good.clone();
                let n = b.len();
                b[n - 4] ^= 4;
                b
            },
            "trailing block length differs from the leading one",
        ),
        (
            "byte-order",
            {
                let mut b = good.clone();
                b[8] = 0x11;
                b
            },
            "pcapng block at byte 0: section header with a bad byte-order magic",
        ),
    ];
    for (name, bytes, want) in cases {
        let input = tmp.join(format!("{name}.pcapng"));
        std::fs::write(&input, bytes).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_fastlb"))
            .arg("replay")
            .arg("--config")
            .arg(config_of(&dir))
            .arg("--in")
            .arg(&input)
            .arg("--out")
            .arg(tmp.join("out.pcap"))
            .arg("--links")
            .arg(fixtures_dir().join("links.txt"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(stderr.contains(want), "{name}: {stderr}");
        assert!(stderr.contains("pcapng block at byte"), "{name}: {stderr}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
