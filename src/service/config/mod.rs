//! Configuration files: fastlb's TOML, `ipvsadm -S` rule files and keepalived.conf, told
//! apart by content, all producing the [`Config`] model and all validated the same way.

pub mod error;
pub mod toml;

pub use error::{validate, validate_service, ConfigError, Fault, Invalid};
pub mod ipvsadm;
