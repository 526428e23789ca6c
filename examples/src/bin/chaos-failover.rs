//! The chaos failover run (filled in below).
fn main() {}
