//! Frames built with etherparse for tests, and an independent checksum verifier.

use std::net::IpAddr;

use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    NetHeaders, PacketBuilder, PacketHeaders, TransportHeader, VlanId,
};

pub(crate) const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub(crate) const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Clone, Debug)]
pub(crate) enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        syn: bool,
        ack: bool,
        fin: bool,
        rst: bool,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub tos: u8,
    pub df: bool,
    pub ipv4_options: Vec<u8>,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Spec {
    pub(crate) fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> Spec {
        Spec {
            vlan: None,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ttl: 64,
            tos: 0x10,
            df: true,
            ipv4_options: vec![],
            l4: L4::Tcp {
                sport,
                dport,
                syn: true,
                ack: false,
                fin: false,
                rst: false,
            },
            payload: b"hello".to_vec(),
        }
    }

    pub(crate) fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Spec {
        Spec {
            l4: L4::Udp { sport, dport },
            ..Spec::tcp(src, dst, sport, dport)
        }
    }

    fn ip_headers(&self, proto: u8) -> IpHeaders {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h =
                    Ipv4Header::new(0, self.ttl, IpNumber(proto), s.octets(), d.octets()).unwrap();
                h.dont_fragment = self.df;
                h.dscp = etherparse::Ipv4Dscp::try_new(self.tos >> 2).unwrap();
                h.ecn = etherparse::Ipv4Ecn::try_new(self.tos & 3).unwrap();
                h.identification = 0x4242;
                h.options = self.ipv4_options[..].try_into().unwrap();
                IpHeaders::Ipv4(h, Ipv4Extensions::default())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: self.tos,
                    flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
                    payload_length: 0,
                    next_header: IpNumber(proto),
                    hop_limit: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                },
                Ipv6Extensions::default(),
            ),
            _ => panic!("mixed families"),
        }
    }

    fn proto(&self) -> u8 {
        match (&self.l4, self.src) {
            (L4::Tcp { .. }, _) => 6,
            (L4::Udp { .. }, _) => 17,
            (L4::Icmp { .. }, IpAddr::V4(_)) => 1,
            (L4::Icmp { .. }, IpAddr::V6(_)) => 58,
        }
    }

    /// The IP packet alone (no Ethernet header).
    pub(crate) fn ip_packet(&self) -> Vec<u8> {
        let b = PacketBuilder::ip(self.ip_headers(self.proto()));
        write_l4(b, self.src.is_ipv6(), &self.l4, &self.payload)
    }

    /// The whole Ethernet frame, client MAC -> director MAC.
    pub(crate) fn frame(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC);
        let ip = match self.vlan {
            Some(v) => eth
                .single_vlan(VlanId::try_new(v).unwrap())
                .ip(self.ip_headers(self.proto())),
            None => eth.ip(self.ip_headers(self.proto())),
        };
        write_l4(ip, self.src.is_ipv6(), &self.l4, &self.payload)
    }
}

fn write_l4(
    b: etherparse::PacketBuilderStep<IpHeaders>,
    v6: bool,
    l4: &L4,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            syn,
            ack,
            fin,
            rst,
        } => {
            let mut t = b.tcp(sport, dport, 1000, 65535);
            if syn {
                t = t.syn();
            }
            if ack {
                t = t.ack(77);
            }
            if fin {
                t = t.fin();
            }
            if rst {
                t = t.rst();
            }
            t.write(&mut out, payload).unwrap();
        }
        L4::Udp { sport, dport } => b.udp(sport, dport).write(&mut out, payload).unwrap(),
        L4::Icmp { ty, code, rest } if v6 => b
            .icmpv6_raw(ty, code, rest)
            .write(&mut out, payload)
            .unwrap(),
        L4::Icmp { ty, code, rest } => b
            .icmpv4_raw(ty, code, rest)
            .write(&mut out, payload)
            .unwrap(),
    }
    out
}

/// An ICMP error frame from `from` to `to` quoting `quoted` (an IP packet), truncated to
/// `quote_len` bytes.
pub(crate) fn icmp_error(
    vlan: Option<u16>,
    from: &str,
    to: &str,
    ty: u8,
    code: u8,
    quoted: &[u8],
    quote_len: usize,
) -> Vec<u8> {
    let mut s = Spec::tcp(from, to, 0, 0);
    s.vlan = vlan;
    s.df = false;
    s.tos = 0;
    // etherparse models the "unused" bytes as zero, so only MTU-carrying types get some.
    let mtu = (s.src.is_ipv4() && (ty, code) == (3, 4)) || (s.src.is_ipv6() && ty == 2);
    let rest = if mtu { [0, 0, 0x05, 0xdc] } else { [0; 4] };
    s.l4 = L4::Icmp { ty, code, rest };
    s.payload = quoted[..quote_len.min(quoted.len())].to_vec();
    s.frame()
}

/// Every checksum in the frame, verified by etherparse's own full computation.
pub(crate) fn assert_checksums(frame: &[u8]) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse reads the frame");
    let payload = h.payload.slice();
    match h.net.expect("IP") {
        NetHeaders::Ipv4(ip, _) => {
            assert_eq!(
                ip.calc_header_checksum(),
                ip.header_checksum,
                "IPv4 header checksum"
            );
            match h.transport {
                Some(TransportHeader::Tcp(t)) => {
                    assert_eq!(
                        t.calc_checksum_ipv4(&ip, payload).unwrap(),
                        t.checksum,
                        "TCP"
                    )
                }
                Some(TransportHeader::Udp(u)) => {
                    if u.checksum != 0 {
                        assert_eq!(
                            u.calc_checksum_ipv4(&ip, payload).unwrap(),
                            u.checksum,
                            "UDP"
                        )
                    }
                }
                Some(TransportHeader::Icmpv4(i)) => {
                    assert_eq!(i.icmp_type.calc_checksum(payload), i.checksum, "ICMP")
                }
                other => panic!("unexpected transport {other:?}"),
            }
        }
        NetHeaders::Ipv6(ip, _) => match h.transport {
            Some(TransportHeader::Tcp(t)) => {
                assert_eq!(
                    t.calc_checksum_ipv6(&ip, payload).unwrap(),
                    t.checksum,
                    "TCP"
                )
            }
            Some(TransportHeader::Udp(u)) => {
                assert_eq!(
                    u.calc_checksum_ipv6(&ip, payload).unwrap(),
                    u.checksum,
                    "UDP"
                )
            }
            Some(TransportHeader::Icmpv6(i)) => assert_eq!(
                i.icmp_type
                    .calc_checksum(ip.source, ip.destination, payload)
                    .unwrap(),
                i.checksum,
                "ICMPv6"
            ),
            other => panic!("unexpected transport {other:?}"),
        },
    }
}
