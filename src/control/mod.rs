//! The control thread's side: it owns the configuration, builds immutable snapshots of the
//! service table and hands them to the workers over channels.
//!
//! Workers never wait for the control thread: they look for a newer snapshot between
//! batches (`try_recv`), keep the newest, and drop the old one.

pub mod appliance;
pub mod ctl;
pub mod listing;
pub mod metrics;
mod publisher;

pub use publisher::{PublishError, Publisher};
