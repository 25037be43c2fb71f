//! The ctl socket's client side: `fastlb ctl ARGS`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::{Request, Response};
use crate::service::config::ipvsadm::{parse, IpvsCommand};

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

/// Whether the command reads standard input: `-R` only (parsed here so that no other
/// command waits on a terminal).
fn wants_stdin(args: &[String]) -> bool {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--json")
        .collect();
    matches!(parse(&args), Ok(IpvsCommand::Restore))
}

/// [`ctl_main`] with the output streams given: sends `args` (and, for `-R`, all of `stdin`),
/// writes the answer's text to `out` and `err`, and returns the exit code. Failing to reach
/// the server is exit code 2 with a message on `err`.
pub fn ctl_run(
    socket: &Path,
    args: &[String],
    mut stdin: impl Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let input = if wants_stdin(args) {
        let mut text = String::new();
        if let Err(e) = stdin.read_to_string(&mut text) {
            let _ = writeln!(err, "fastlb ctl: cannot read standard input: {e}");
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
                "fastlb ctl: cannot talk to fastlb at {}: {e}\nIs fastlb running, and are you root?",
                socket.display()
            );
            2
        }
    }
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
