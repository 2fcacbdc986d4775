//! Project automation. Placeholder.
fn main() {}
