//! Region health and failover.
