//! Configuration files: fastlb's TOML and `ipvsadm -S` rule files, told apart by content.
