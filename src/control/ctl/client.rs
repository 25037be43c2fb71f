//! The ctl socket's client side: `fastlb ctl ARGS`, and `ipvsadm ARGS` when fastlb is started
//! through a link named `ipvsadm`.
//!
//! `-h` and `-v` are answered here, without a running fastlb, as ipvsadm answers them
//! without asking the kernel; every other command goes to the appliance.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{Request, Response, DEFAULT_SOCKET};
use crate::control::listing::IPVS_VERSION;
use crate::service::config::ipvsadm::{parse, IpvsCommand, IpvsError};

/// The environment variable that names the ctl socket when no option does (for the
/// appliance, `fastlb ctl` and the `ipvsadm` link alike).
pub const SOCKET_ENV: &str = "FASTLB_CTL_SOCKET";

/// The ipvsadm release whose language and output fastlb speaks (Debian 12's).
pub const IPVSADM_VERSION: &str = "v1.31 2019/12/24";

/// What `-v` prints. As `ipvsadm`: ipvsadm's version line (`ipvsadm v1.31 2019/12/24
/// (compiled with popt and IPVS v1.2.1)`), with fastlb named where ipvsadm names its option
/// parser, so scripts that read the version find ipvsadm's; as `fastlb ctl`, fastlb's
/// version and the ipvsadm it speaks.
pub fn version_line(prog: &str) -> String {
    let fastlb = env!("CARGO_PKG_VERSION");
    if prog == "ipvsadm" {
        format!(
            "ipvsadm {IPVSADM_VERSION} (compiled with fastlb {fastlb} and IPVS v{IPVS_VERSION})\n"
        )
    } else {
        format!("{prog} {fastlb} (speaks ipvsadm {IPVSADM_VERSION} and IPVS v{IPVS_VERSION})\n")
    }
}

/// What `-h` prints: the version line, then ipvsadm's usage layout with the commands and
/// options fastlb takes, `prog` standing where ipvsadm prints its own name.
pub fn usage(prog: &str) -> String {
    let mut text = version_line(prog);
    text.push_str("Usage:\n");
    for line in [
        "-A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]",
        "-D virtual-service",
        "-C",
        "-R",
        "-S [-n]",
        "-a|e virtual-service -r server-address [options]",
        "-d virtual-service -r server-address",
        "-L|l [virtual-service] [options]",
        "-Z [virtual-service]",
        "--set tcp tcpfin udp",
        "--start-daemon {master|backup} [daemon-options]",
        "--stop-daemon {master|backup}",
        "-h",
    ] {
        text.push_str(&format!("  {prog} {line}\n"));
    }
    text.push_str(USAGE_BODY);
    text.push_str(&format!(
        "\nThis {prog} is fastlb: each command goes to the running fastlb over its ctl socket\n\
         (--socket PATH, else ${SOCKET_ENV}, else {DEFAULT_SOCKET}). See docs/ctl.md.\n\
         fastlb's own: --drain, --undrain, --announced [--json] (BGP; docs/bgp.md).\n"
    ));
    text
}

/// The part of [`usage`] that does not name the program.
const USAGE_BODY: &str = "
Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin (all or nothing)
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --start-daemon              start connection sync daemon
  --stop-daemon               stop connection sync daemon
  --help            -h        display this help message
  --version         -v        display the version

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero

Options:
  --ipv6         -6                   fwmark entry uses IPv6
  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos,
                                      the default scheduler is wlc.
  --persistent   -p [timeout]         persistent service
  --netmask      -M netmask           persistent granularity mask
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --tun-info                          output of tunnel information
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --numeric      -n                   numeric output of addresses and ports
  --sched-flags  -b flags             scheduler flags (comma-separated)
  --json                              -L and -c as JSON (fastlb's own)

Daemon Options:
  --syncid sid                        syncid for connection sync (default=0)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)
";

/// Takes every `--socket PATH`, `--socket=PATH`, `--ctl-socket PATH` and `--ctl-socket=PATH`
/// out of `args` (ipvsadm has no such option, so none of its arguments is mistaken for one)
/// and returns the last path given.
pub fn take_socket_option(args: &mut Vec<String>) -> Result<Option<PathBuf>, String> {
    let mut socket = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut it = std::mem::take(args).into_iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        if name != "--socket" && name != "--ctl-socket" {
            rest.push(a);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("{name}: a path is needed"))?,
        };
        if value.is_empty() {
            return Err(format!("{name}: a path is needed"));
        }
        socket = Some(PathBuf::from(value));
    }
    *args = rest;
    Ok(socket)
}

/// The socket to use when no option names one: `$FASTLB_CTL_SOCKET` if set and not empty,
/// else [`DEFAULT_SOCKET`].
pub fn default_socket() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Whether a program started as `argv0` is to behave as ipvsadm: its file name is `ipvsadm`
/// (`ln -s fastlb /usr/local/sbin/ipvsadm`).
pub fn invoked_as_ipvsadm(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0).file_name() == Some(std::ffi::OsStr::new("ipvsadm"))
}

/// `ipvsadm ARGS` through the link: the arguments after the program name, the socket from
/// `--socket`/`--ctl-socket`, `$FASTLB_CTL_SOCKET` or the default. Returns the exit code.
pub fn ipvsadm_main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let mut text = Vec::new();
    for a in args {
        match a.into_string() {
            Ok(s) => text.push(s),
            Err(a) => {
                eprintln!("ipvsadm: argument {a:?} is not UTF-8");
                return 2;
            }
        }
    }
    let socket = match take_socket_option(&mut text) {
        Ok(s) => s.unwrap_or_else(default_socket),
        Err(e) => {
            eprintln!("ipvsadm: {e}");
            return 2;
        }
    };
    run_as(
        "ipvsadm",
        &socket,
        &text,
        io::stdin().lock(),
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

/// Sends one command and returns the server's answer.
pub fn request(socket: &Path, args: &[String], stdin: Option<String>) -> io::Result<Response> {
    let stream = UnixStream::connect(socket)?;
    let mut line = serde_json::to_vec(&Request {
        args: args.to_vec(),
        stdin,
    })
    .expect("plain data serializes");
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut answer = Vec::new();
    BufReader::new(&stream).read_until(b'\n', &mut answer)?;
    serde_json::from_slice(&answer).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer from fastlb: {e}"),
        )
    })
}

/// The command in `args` as the client sees it (`--json` aside; no arguments list the
/// table, which is the server's to answer).
fn local_parse(args: &[String]) -> Option<Result<IpvsCommand, IpvsError>> {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--json")
        .collect();
    // fastlb's own verbs are the server's to answer (super::bgp_verb).
    if let [verb] = args[..] {
        if super::OWN_VERBS.contains(&verb) {
            return None;
        }
    }
    if args.first() == Some(&super::SYSCTL_VERB) {
        return None;
    }
    (!args.is_empty()).then(|| parse(&args))
}

/// [`ctl_main`] with the output streams given: sends `args` (and, for `-R`, all of `stdin`),
/// writes the answer's text to `out` and `err`, and returns the exit code. Failing to reach
/// the server is exit code 2 with a message on `err`.
pub fn ctl_run(
    socket: &Path,
    args: &[String],
    stdin: impl Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    run_as("fastlb ctl", socket, args, stdin, out, err)
}

/// [`ctl_run`] for a program called `prog` (`fastlb ctl` or `ipvsadm`), the name its help,
/// version and own error messages carry. `-h`, `-v` and a command line that does not parse
/// are answered here (ipvsadm's exit codes: 0, and 2 for a command-line error), so they
/// need no running fastlb.
pub fn run_as(
    prog: &str,
    socket: &Path,
    args: &[String],
    mut stdin: impl Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let command = local_parse(args);
    match &command {
        Some(Ok(IpvsCommand::Help)) => return answer(out, &usage(prog)),
        Some(Ok(IpvsCommand::Version)) => return answer(out, &version_line(prog)),
        Some(Err(e @ IpvsError::Usage(_))) => {
            let _ = writeln!(err, "{e}");
            return 2;
        }
        _ => {}
    }
    let input = if matches!(command, Some(Ok(IpvsCommand::Restore))) {
        let mut text = String::new();
        if let Err(e) = stdin.read_to_string(&mut text) {
            let _ = writeln!(err, "{prog}: cannot read standard input: {e}");
            return 2;
        }
        Some(text)
    } else {
        None
    };
    match request(socket, args, input) {
        Ok(r) => {
            let _ = out.write_all(r.stdout.as_bytes());
            let _ = err.write_all(r.stderr.as_bytes());
            let _ = out.flush();
            r.code
        }
        Err(e) => {
            let _ = writeln!(
                err,
                "{prog}: cannot talk to fastlb at {}: {e}\nIs fastlb running, and are you root?",
                socket.display()
            );
            2
        }
    }
}

fn answer(out: &mut dyn Write, text: &str) -> i32 {
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    0
}

/// `fastlb ctl ARGS`: runs one ipvsadm command on the fastlb serving `socket`, prints its
/// answer on standard output and standard error, and returns the exit code to exit with.
pub fn ctl_main(socket: &Path, args: &[String], stdin: impl Read) -> i32 {
    ctl_run(
        socket,
        args,
        stdin,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn socket_options_are_taken_out_wherever_they_stand() {
        let mut a = strings("-L --socket /a -n --ctl-socket=/b --json");
        assert_eq!(take_socket_option(&mut a), Ok(Some(PathBuf::from("/b"))));
        assert_eq!(a, strings("-L -n --json"));
        let mut a = strings("-A -t 10.0.0.1:80");
        assert_eq!(take_socket_option(&mut a), Ok(None));
        assert_eq!(a.len(), 3);
        assert!(take_socket_option(&mut strings("-L --socket")).is_err());
        assert!(take_socket_option(&mut strings("-L --socket=")).is_err());
    }

    #[test]
    fn the_link_name_decides() {
        for (argv0, yes) in [
            ("ipvsadm", true),
            ("/usr/local/sbin/ipvsadm", true),
            ("./ipvsadm", true),
            ("fastlb", false),
            ("/sbin/ipvsadm-save", false),
            ("ipvsadm/fastlb", false),
        ] {
            assert_eq!(invoked_as_ipvsadm(argv0.as_ref()), yes, "{argv0}");
        }
    }

    /// Runs `prog ARGS` against a socket nobody serves.
    fn offline(prog: &str, line: &str) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_as(
            prog,
            Path::new("/nonexistent/fastlb.sock"),
            &strings(line),
            io::empty(),
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn help_version_and_bad_lines_need_no_server() {
        let (code, out, err) = offline("ipvsadm", "-v");
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(
            out.starts_with("ipvsadm v1.31 2019/12/24 (compiled with fastlb "),
            "{out}"
        );
        assert!(out.ends_with(" and IPVS v1.2.1)\n"), "{out}");
        assert_eq!(offline("ipvsadm", "--version").1, out);
        let (code, help, _) = offline("ipvsadm", "--help");
        assert_eq!(code, 0);
        assert!(help.starts_with(&out), "help opens with the version line");
        assert!(
            help.contains("\nUsage:\n  ipvsadm -A|E virtual-service"),
            "{help}"
        );
        assert!(help.contains("\nCommands:\n") && help.contains("\nOptions:\n"));
        assert_eq!(offline("ipvsadm", "-h").1, help);
        let (code, out, _) = offline("fastlb ctl", "-v");
        assert_eq!(code, 0);
        assert!(out.starts_with("fastlb ctl 0."), "{out}");
        let (code, out, err) = offline("ipvsadm", "-A -t 10.0.0.1:80 -w 2");
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (
                2,
                "",
                "Illegal 'weight' option with the 'add-service' command\n"
            )
        );
        let (code, _, err) = offline("ipvsadm", "-L -n");
        assert_eq!(code, 2);
        assert!(
            err.starts_with("ipvsadm: cannot talk to fastlb at /nonexistent/fastlb.sock: "),
            "{err}"
        );
    }
}
