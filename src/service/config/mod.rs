//! Configuration files: fastlb's TOML, `ipvsadm -S` rule files and keepalived.conf, told
//! apart by content, all producing the [`Config`] model and all validated the same way
//! ([`validate`]). Errors name the file, the line and the field; nothing is half-applied:
//! a file either yields a whole valid [`Config`] or an error.
//!
//! The formats are described in `docs/config.md`.

pub mod error;
pub mod ipvsadm;
pub mod keepalived;
pub mod render;
pub mod toml;

pub use error::{validate, validate_real, validate_service, ConfigError, Fault, Invalid};

use std::path::Path;

use crate::service::Config;

/// The configuration languages fastlb reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// fastlb's TOML.
    Toml,
    /// An `ipvsadm -S` / `ipvsadm-save` rule file.
    IpvsadmRules,
    /// keepalived.conf with `virtual_server` blocks.
    Keepalived,
}

/// Tells the format of `text` by content: keepalived when a line starts with
/// `virtual_server` and the text has braces; ipvsadm rules when every non-comment line
/// starts with `-` (or `ipvsadm -`); TOML otherwise.
pub fn detect(text: &str) -> Format {
    if keepalived::looks_like_keepalived(text) {
        Format::Keepalived
    } else if ipvsadm::looks_like_rules(text) {
        Format::IpvsadmRules
    } else {
        Format::Toml
    }
}

/// Reads `text` (named `path` in errors) in whichever format it is written and validates it.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    match detect(text) {
        Format::Toml => toml::parse(text, path),
        Format::IpvsadmRules => ipvsadm::parse_rules(text, path),
        Format::Keepalived => keepalived::parse(text, path),
    }
}

/// Why `name` cannot be a Linux network interface's name, or `None` when it can: 1 to 15
/// bytes (`IFNAMSIZ` - 1), not `.` or `..`, no `/`, `:` or white space (the kernel's
/// `dev_valid_name`), and, stricter than the kernel, no control character (a name no `ip`
/// command can type, and one a configuration written back could not hold).
pub fn interface_name_fault(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 15 {
        return Some(format!(
            "interface name `{}` must be 1 to 15 characters",
            name.escape_debug()
        ));
    }
    let bad = name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    bad.then(|| {
        format!(
            "`{}` is not an interface name (no `/`, `:`, white space or control characters)",
            name.escape_debug()
        )
    })
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::at_line(path, 0, format!("cannot read: {e}")))?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_format() {
        assert_eq!(detect("[[service]]\nprotocol = \"tcp\"\n"), Format::Toml);
        assert_eq!(detect(""), Format::Toml);
        assert_eq!(
            detect(
                "# saved\n-A -t 10.0.0.1:80 -s rr\n\n-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 1\n"
            ),
            Format::IpvsadmRules
        );
        assert_eq!(detect("ipvsadm -A -t 10.0.0.1:80\n"), Format::IpvsadmRules);
        assert_eq!(
            detect(
                "global_defs {\n router_id a\n}\nvirtual_server 10.0.0.1 80 {\n lb_algo rr\n}\n"
            ),
            Format::Keepalived
        );
    }

    #[test]
    fn interface_names_are_checked_as_the_kernel_does_and_stricter_on_control_characters() {
        for ok in ["eth0", "d0", "veth-a.100", "a23456789012345"] {
            assert_eq!(interface_name_fault(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a234567890123456",
            ".",
            "..",
            "a/b",
            "eth0:1",
            "eth 0",
            "eth0\0",
            "eth\u{85}",
        ] {
            let fault = interface_name_fault(bad).expect(bad);
            assert!(
                !fault.contains('\0'),
                "the fault quotes the name escaped: {fault}"
            );
        }
    }

    /// Found by the `config_keepalived` fuzz target: an interface name with NUL bytes was
    /// accepted and then written into TOML that does not read again.
    #[test]
    fn a_vrrp_interface_with_control_characters_is_refused_at_its_line() {
        let text = "vrrp_instance VI_1 {\n state MASTER\n interface eth0\0\0_v\n \
                    virtual_router_id 51\n virtual_ipaddress {\n 192.0.2.100\n }\n}\n\
                    virtual_server 192.0.2.100 80 {\n lb_algo rr\n lb_kind DR\n \
                    protocol TCP\n real_server 10.0.0.11 80 {\n }\n}\n";
        let e = parse(text, Path::new("k.conf")).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("not an interface name"), "{e}");
    }

    #[test]
    fn parse_dispatches_and_validates() {
        let p = Path::new("f");
        assert_eq!(
            parse("-A -t 10.0.0.1:80 -s rr\n", p)
                .unwrap()
                .services
                .len(),
            1
        );
        assert_eq!(
            parse(
                "[[service]]\nprotocol = \"tcp\"\naddress = \"10.0.0.1\"\nport = 80\n",
                p
            )
            .unwrap()
            .services
            .len(),
            1
        );
        let e = parse("-A -t 10.0.0.1:0 -s rr\n", p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:1: Zero port specified for non-persistent service"
        );
    }

    #[test]
    fn load_names_an_unreadable_file() {
        let e = load(Path::new("/nonexistent/fastlb.toml")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/fastlb.toml: cannot read:"),
            "{e}"
        );
    }

    #[test]
    fn load_reads_a_file() {
        let dir = std::env::temp_dir().join(format!("fastlb-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("rules");
        std::fs::write(
            &f,
            "-A -u 10.0.0.1:53 -s rr\n-a -u 10.0.0.1:53 -r 10.0.1.1:53 -m\n",
        )
        .unwrap();
        let c = load(&f).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.services[0].reals.len(), 1);
    }
}
