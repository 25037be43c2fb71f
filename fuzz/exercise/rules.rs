//! The service rules (`ipvsadm -R` text) the `sync` and `state_file` exercises bind their
//! entries to: one set for both, so that the `sync` target's seeds make state files whose
//! entries find their real servers. The fuzz targets and `tests/fuzz_corpus.rs` include it
//! at their root (`#[path]`), beside the exercises, which use it as `crate::rules::RULES`.

/// TCP, UDP with persistence, a firewall mark and IPv6; DR, NAT and tunnel real servers.
pub const RULES: &str = "-A -t 192.0.2.100:80 -s rr\n\
-a -t 192.0.2.100:80 -r 10.0.0.11:80 -g -w 1\n\
-a -t 192.0.2.100:80 -r 10.0.0.12:80 -g -w 1\n\
-A -u 192.0.2.100:53 -s wrr -p 60\n\
-a -u 192.0.2.100:53 -r 10.0.0.11:53 -m -w 1\n\
-A -f 7 -s sh\n\
-a -f 7 -r 10.0.0.13:0 -i -w 1\n\
-A -t [2001:db8::100]:80 -s rr\n\
-a -t [2001:db8::100]:80 -r [fd00::11]:80 -g -w 1\n";
