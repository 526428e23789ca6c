//! x
/// x
#[derive(Debug)]
pub struct IoUringNetwork;
