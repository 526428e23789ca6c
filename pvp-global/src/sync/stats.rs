//! [`SyncStats`](super::SyncStats): the node's counters, each kept as a field and reported as a metric through
//! one helper, so that the two never disagree.

/// Counters of one [`CrossRegionSync`](super::CrossRegionSync). Each is also reported through
/// the `metrics` facade as the counter `pvp_global_sync_<field>_total` (e.g.
/// `pvp_global_sync_bytes_sent_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Local writes applied.
    pub writes: u64,
    /// Datagrams handed to the transport.
    pub messages_sent: u64,
    /// Their total bytes.
    pub bytes_sent: u64,
    /// Delta entries sent (after per-key joining), retransmits included.
    pub delta_entries_sent: u64,
    /// Bytes of `Deltas` messages sent.
    pub delta_bytes_sent: u64,
    /// Datagrams accepted.
    pub messages_received: u64,
    /// Datagrams dropped as malformed.
    pub malformed_dropped: u64,
    /// Datagrams dropped as oversized.
    pub oversized_dropped: u64,
    /// Datagrams dropped for an unknown protocol version.
    pub version_dropped: u64,
    /// Datagrams dropped because the sender is not a configured peer (or claims another name).
    pub unknown_peer_dropped: u64,
    /// Datagrams dropped because a stamp was too far in the future.
    pub clock_rejected: u64,
    /// Datagrams from an older incarnation of a peer, dropped.
    pub stale_dropped: u64,
    /// Delta windows resent after `retransmit_after`.
    pub retransmits: u64,
    /// Digests sent.
    pub digests_sent: u64,
    /// Key states sent in `Repair` messages.
    pub repair_entries_sent: u64,
    /// Entries too large for one message, skipped. Deltas are small and always fit; a key's
    /// full state (an anti-entropy repair, or full-state shipping) may not when
    /// `max_message_bytes` is set low: such a key is then not repaired by anti-entropy, only by
    /// deltas. With the default size it stays 0 unless a profile holds many large set fields.
    pub oversized_entries: u64,
    /// Deltas dropped from the log because a peer lagged past `max_delta_log`.
    pub log_overflows: u64,
    /// STRONG writes committed.
    pub strong_committed: u64,
    /// STRONG writes failed.
    pub strong_failed: u64,
    /// Datagrams dropped because the outbox was full (the driver is not draining it).
    pub outbox_dropped: u64,
    /// Events dropped because nobody polled them.
    pub events_dropped: u64,
}

/// One field of [`SyncStats`](super::SyncStats): what the node counts, named once for both the field and its
/// metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counter {
    Writes,
    MessagesSent,
    BytesSent,
    DeltaEntriesSent,
    DeltaBytesSent,
    MessagesReceived,
    MalformedDropped,
    OversizedDropped,
    VersionDropped,
    UnknownPeerDropped,
    ClockRejected,
    StaleDropped,
    Retransmits,
    DigestsSent,
    RepairEntriesSent,
    OversizedEntries,
    LogOverflows,
    StrongCommitted,
    StrongFailed,
    OutboxDropped,
    EventsDropped,
}

impl SyncStats {
    /// Adds `n` to a counter and to its metric.
    pub(super) fn add(&mut self, counter: Counter, n: u64) {
        let (field, metric) = match counter {
            Counter::Writes => (&mut self.writes, "pvp_global_sync_writes_total"),
            Counter::MessagesSent => (&mut self.messages_sent, "pvp_global_sync_messages_sent_total"),
            Counter::BytesSent => (&mut self.bytes_sent, "pvp_global_sync_bytes_sent_total"),
            Counter::DeltaEntriesSent => {
                (&mut self.delta_entries_sent, "pvp_global_sync_delta_entries_sent_total")
            }
            Counter::DeltaBytesSent => (&mut self.delta_bytes_sent, "pvp_global_sync_delta_bytes_sent_total"),
            Counter::MessagesReceived => {
                (&mut self.messages_received, "pvp_global_sync_messages_received_total")
            }
            Counter::MalformedDropped => {
                (&mut self.malformed_dropped, "pvp_global_sync_malformed_dropped_total")
            }
            Counter::OversizedDropped => {
                (&mut self.oversized_dropped, "pvp_global_sync_oversized_dropped_total")
            }
            Counter::VersionDropped => (&mut self.version_dropped, "pvp_global_sync_version_dropped_total"),
            Counter::UnknownPeerDropped => {
                (&mut self.unknown_peer_dropped, "pvp_global_sync_unknown_peer_dropped_total")
            }
            Counter::ClockRejected => (&mut self.clock_rejected, "pvp_global_sync_clock_rejected_total"),
            Counter::StaleDropped => (&mut self.stale_dropped, "pvp_global_sync_stale_dropped_total"),
            Counter::Retransmits => (&mut self.retransmits, "pvp_global_sync_retransmits_total"),
            Counter::DigestsSent => (&mut self.digests_sent, "pvp_global_sync_digests_sent_total"),
            Counter::RepairEntriesSent => {
                (&mut self.repair_entries_sent, "pvp_global_sync_repair_entries_sent_total")
            }
            Counter::OversizedEntries => {
                (&mut self.oversized_entries, "pvp_global_sync_oversized_entries_total")
            }
            Counter::LogOverflows => (&mut self.log_overflows, "pvp_global_sync_log_overflows_total"),
            Counter::StrongCommitted => {
                (&mut self.strong_committed, "pvp_global_sync_strong_committed_total")
            }
            Counter::StrongFailed => (&mut self.strong_failed, "pvp_global_sync_strong_failed_total"),
            Counter::OutboxDropped => (&mut self.outbox_dropped, "pvp_global_sync_outbox_dropped_total"),
            Counter::EventsDropped => (&mut self.events_dropped, "pvp_global_sync_events_dropped_total"),
        };
        *field += n;
        metrics::counter!(metric).increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_moves_its_own_field() {
        let all = [
            Counter::Writes,
            Counter::MessagesSent,
            Counter::BytesSent,
            Counter::DeltaEntriesSent,
            Counter::DeltaBytesSent,
            Counter::MessagesReceived,
            Counter::MalformedDropped,
            Counter::OversizedDropped,
            Counter::VersionDropped,
            Counter::UnknownPeerDropped,
            Counter::ClockRejected,
            Counter::StaleDropped,
            Counter::Retransmits,
            Counter::DigestsSent,
            Counter::RepairEntriesSent,
            Counter::OversizedEntries,
            Counter::LogOverflows,
            Counter::StrongCommitted,
            Counter::StrongFailed,
            Counter::OutboxDropped,
            Counter::EventsDropped,
        ];
        for (i, c) in all.into_iter().enumerate() {
            let mut s = SyncStats::default();
            s.add(c, i as u64 + 1);
            let fields = [
                s.writes,
                s.messages_sent,
                s.bytes_sent,
                s.delta_entries_sent,
                s.delta_bytes_sent,
                s.messages_received,
                s.malformed_dropped,
                s.oversized_dropped,
                s.version_dropped,
                s.unknown_peer_dropped,
                s.clock_rejected,
                s.stale_dropped,
                s.retransmits,
                s.digests_sent,
                s.repair_entries_sent,
                s.oversized_entries,
                s.log_overflows,
                s.strong_committed,
                s.strong_failed,
                s.outbox_dropped,
                s.events_dropped,
            ];
            assert_eq!(fields.iter().sum::<u64>(), i as u64 + 1, "{c:?}");
            assert_eq!(fields[i], i as u64 + 1, "{c:?}");
        }
    }
}
