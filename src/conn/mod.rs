//! The connection table, the IPVS TCP state machine and persistence templates.
