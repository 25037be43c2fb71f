//! The `fastlb` command.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("fastlb: not yet wired")
}
