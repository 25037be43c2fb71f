//! Zero-copy header views over frame bytes.
