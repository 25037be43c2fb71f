//! The ctl socket's server side, polled by the control thread.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{execute, Request, Response, MAX_REQUEST_BYTES};
use crate::control::{Director, Source};
use crate::log::log;
use crate::time::Instant;

/// How long a connected client may take to send its request or read the answer. The
/// control thread serves one client at a time, so a stalled client stalls it this long at
/// most.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A listening ctl socket.
#[derive(Debug)]
pub struct CtlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl CtlServer {
    /// Listens on `path`, mode 0600 (only root, or whoever runs fastlb, may connect).
    ///
    /// The parent directory is created (mode 0755) if missing. A socket file left by a dead
    /// fastlb is replaced; a live one (something answers on it) is an `AddrInUse` error, and
    /// a path that exists but is not a socket is refused. The socket is bound under a
    /// temporary name, restricted, then renamed into place, so no client ever sees it with
    /// looser permissions.
    pub fn bind(path: &Path) -> io::Result<CtlServer> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is served by a running fastlb", path.display()),
                    ));
                }
                fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "socket path has no name")
        })?;
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)?;
        let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        listener.set_nonblocking(true)?;
        Ok(CtlServer {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves every client waiting to connect, then returns how many it served; never
    /// waits for new ones. Call it every control-loop turn. A client that misbehaves
    /// (garbage, too slow, gone) is dropped and does not make this fail; only an error of
    /// the listening socket itself is returned.
    pub fn poll(&mut self, director: &mut Director) -> io::Result<usize> {
        let mut served = 0;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // A client lost half way changes nothing worth reporting: the command
                    // either ran (and its answer is lost) or never arrived.
                    let _ = serve(stream, director);
                    served += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(served),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The ctl socket as a source of the control loop: serves every waiting client.
impl Source for CtlServer {
    fn poll(&mut self, _now: Instant, director: &mut Director) {
        if let Err(e) = CtlServer::poll(self, director) {
            log(format_args!("ctl: {e}"));
        }
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, director: &mut Director) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = Vec::new();
    BufReader::new((&stream).take(MAX_REQUEST_BYTES)).read_until(b'\n', &mut line)?;
    (&stream).write_all(&answer(director, &line))
}

/// The server's whole answer (one JSON line) to `line`, the bytes a client sent (at most
/// [`MAX_REQUEST_BYTES`], normally one JSON request ending in a newline).
pub fn answer(director: &mut Director, line: &[u8]) -> Vec<u8> {
    let response = match serde_json::from_slice::<Request>(line) {
        Ok(req) => execute(director, &req.args, req.stdin.as_deref()),
        Err(e) if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_REQUEST_BYTES => {
            Response::fail(2, format!("fastlb ctl: request too large: {e}"))
        }
        Err(e) => Response::fail(2, format!("fastlb ctl: bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response).expect("plain data serializes");
    out.push(b'\n');
    out
}
