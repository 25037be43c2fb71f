//! Skips that count. A test that cannot run here (no root, no io_uring, a tool not
//! installed) calls [`skip`] and returns: it passes for libtest, which has no runtime skip,
//! but `tools/test.sh` counts and lists it as skipped, and under `FASTLB_NO_SKIP=1` (CI) it
//! fails instead, so a test that must run there never goes quiet.
//!
//! Shared by the integration tests (`mod support;`) and the library's own tests.

#![allow(dead_code)]

use std::io::Write;

/// A file every skip appends one line to, `TEST: REASON` (`tools/test.sh` sets it and
/// counts the lines).
pub const SKIP_LOG: &str = "FASTLB_SKIP_LOG";

/// Set to anything but `0` or empty, a skip fails the test (`.ci/run` sets it).
pub const NO_SKIP: &str = "FASTLB_NO_SKIP";

/// The running test's name: libtest runs each test on a thread named after it.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string()
}

/// Records that the running test skips for `reason`; the caller returns right after.
///
/// # Panics
/// Under `FASTLB_NO_SKIP`, always: the test had to run. Also when the skip log cannot be
/// written (the count would be wrong).
pub fn skip(reason: &str) {
    let test = test_name();
    if std::env::var_os(NO_SKIP).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test} would be skipped ({reason}), and {NO_SKIP} says every test must run here");
    }
    println!("SKIP: {test}: {reason}");
    if let Some(path) = std::env::var_os(SKIP_LOG) {
        let line = format!("{test}: {reason}\n");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("writing the skip log {}: {e}", path.to_string_lossy()));
    }
}

/// Whether this process runs as root (network namespaces, XDP, AF_XDP).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether `program` can be run (found on PATH and starts with `arg`).
pub fn have(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}
