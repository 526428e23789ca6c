//! CrossRegionSync: deterministic three-region simulations (`sim`), the replication semantics
//! the rustdoc promises (`node`: strong and eventual writes, snapshots, anti-entropy, batching,
//! catch-up), and bad input (`bad_input`: garbage datagrams, hostile sequence numbers, bad
//! configs and writes, huge times). Sync over real UDP sockets is in `udp.rs`.

mod bad_input;
#[path = "../common/mod.rs"]
mod common;
mod node;
mod sim;
