//! Pipeline benchmark (filled in with the pipeline).
fn main() {}
