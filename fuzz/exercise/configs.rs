//! The bodies of the configuration fuzz targets, shared with `tests/fuzz_corpus.rs`: each
//! configuration language fastlb reads (its TOML, `ipvsadm -S` rules, keepalived.conf) over
//! arbitrary text.
//!
//! Checked: no panic; a refusal names a line of the text (1 to one past the last line, for
//! faults found at the end); an accepted configuration, written back as TOML, reads again
//! to the same configuration (the TOML target) or is accepted by the TOML reader (the
//! others), so nothing fastlb accepts is something it cannot write.

use std::path::Path;

use fastlb::service::config::{self, ipvsadm, keepalived, render, ConfigError};
use fastlb::service::Config;

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn check(text: &str, result: Result<Config, ConfigError>, language: &str) -> Option<Config> {
    match result {
        Ok(c) => Some(c),
        Err(e) => {
            let lines = text.lines().count();
            assert!(
                e.line >= 1 && e.line <= lines + 1,
                "{language}: the error names no line of the text ({} lines): {e}",
                lines
            );
            assert!(
                !e.message.trim().is_empty(),
                "{language}: an error without a message: {e:?} in {text:?}"
            );
            None
        }
    }
}

fn rendered_reads_again(c: &Config, language: &str) -> Config {
    let toml = render::to_toml(c);
    match config::toml::parse(&toml, Path::new("rendered.toml")) {
        Ok(again) => again,
        Err(e) => panic!("{language}: accepted, but its TOML rendering is refused: {e}\n{toml}"),
    }
}

/// fastlb's TOML.
pub fn toml(data: &[u8]) {
    let t = text(data);
    if let Some(c) = check(&t, config::toml::parse(&t, Path::new("fuzz.toml")), "toml") {
        let again = rendered_reads_again(&c, "toml");
        assert_eq!(
            render::to_toml(&again),
            render::to_toml(&c),
            "toml: rendering is not stable"
        );
    }
}

/// `ipvsadm -S` rules, as `-R` and a rules file read them.
pub fn ipvsadm_rules(data: &[u8]) {
    let t = text(data);
    if let Some(c) = check(
        &t,
        ipvsadm::parse_rules(&t, Path::new("fuzz.rules")),
        "rules",
    ) {
        rendered_reads_again(&c, "rules");
        let saved = ipvsadm::save(&c);
        match ipvsadm::parse_rules(&saved, Path::new("saved.rules")) {
            Ok(_) => {}
            Err(e) => panic!("rules: accepted, but its `-S` output is refused: {e}\n{saved}"),
        }
    }
}

/// keepalived.conf.
pub fn keepalived(data: &[u8]) {
    let t = text(data);
    if let Some(c) = check(
        &t,
        keepalived::parse(&t, Path::new("keepalived.conf")),
        "keepalived",
    ) {
        rendered_reads_again(&c, "keepalived");
    }
}
