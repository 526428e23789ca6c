//! The [`Coordinator`] contract on an etcd cluster (feature `etcd`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream, Watcher,
};
use pvp_core::ids::RegionId;

use super::{
    CasOutcome, Change, ChangeFeed, CoordError, CoordStats, Coordinator, Expected, LEADERS_PREFIX,
    Leadership, LeaseId, RECORDS_PREFIX, REGIONS_PREFIX, VersionedRecord, WatchScope, check_name, check_ttl,
    check_value, classify, decode_region, scope_prefix,
};

/// How an [`EtcdCoordinator`] reaches its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdCoordinatorConfig {
    /// Client URLs of the members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix under which everything is stored, e.g. `/pvp/`.
    pub namespace: String,
    /// Longest wait for one operation; past it the call fails with
    /// [`CoordError::NoQuorum`]. Keep it well under the lease TTL.
    pub op_timeout: Duration,
    /// Longest wait to connect.
    pub connect_timeout: Duration,
}

impl EtcdCoordinatorConfig {
    /// Defaults (namespace `/pvp/`, 1 s operation timeout, 2 s connect timeout) for these
    /// endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: "/pvp/".to_owned(),
            op_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// Sets the namespace (key prefix).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-operation timeout.
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }
}

#[derive(Debug, Default)]
struct AtomicStats {
    leases_granted: AtomicU64,
    leases_expired: AtomicU64,
    cas_applied: AtomicU64,
    cas_conflicts: AtomicU64,
    campaigns_won: AtomicU64,
    campaigns_lost: AtomicU64,
    rejected: AtomicU64,
    unavailable: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct LeaseBelief {
    /// Latest instant at which the lease certainly still lives at the cluster: the sending of
    /// the last acknowledged grant or keep-alive plus the TTL it acknowledged.
    valid_until: Instant,
}

/// [`Coordinator`] on etcd: leases with keep-alive, leader election by lease-bound
/// create-if-absent transactions, compare-and-set by revision, watches.
///
/// Every operation is bounded by [`EtcdCoordinatorConfig::op_timeout`]; a cluster without
/// quorum yields [`CoordError::NoQuorum`] within that time (requests ask for a leader, so a
/// member that lost its leader refuses at once rather than waiting).
///
/// Split brain: a campaign winner must act as leader only while
/// [`Coordinator::lease_believed_valid`] holds. That belief runs out at the *send* time of the
/// last acknowledged keep-alive plus its TTL, never later than the cluster can expire the lease
/// and let another region win, so two regions never both believe they lead.
pub struct EtcdCoordinator {
    client: Client,
    config: EtcdCoordinatorConfig,
    leases: Mutex<HashMap<LeaseId, LeaseBelief>>,
    stats: AtomicStats,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordinator")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn classify_error(op: &'static str, e: etcd_client::Error) -> CoordError {
    match &e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message();
            // gRPC status codes: 4 = DeadlineExceeded, 14 = Unavailable.
            let code = s.code() as i32;
            if msg.contains("lease not found") {
                return CoordError::LeaseNotFound(LeaseId(0));
            }
            if msg.contains("no leader")
                || msg.contains("timed out")
                || msg.contains("leader changed")
                || msg.contains("not capable")
                || code == 4
                // 1 = Cancelled: tonic's own per-request timeout ("Timeout expired").
                || (code == 1 && msg.contains("Timeout"))
            {
                return CoordError::NoQuorum { op };
            }
            if code == 14 { CoordError::Unreachable { op } } else { CoordError::Etcd(e) }
        }
        etcd_client::Error::LeaseKeepAliveError(msg) if msg.contains("not found") => {
            CoordError::LeaseNotFound(LeaseId(0))
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            CoordError::Unreachable { op }
        }
        _ => CoordError::Etcd(e),
    }
}

impl EtcdCoordinator {
    /// Connects to the cluster (bounded by the connect timeout).
    pub async fn connect(config: EtcdCoordinatorConfig) -> Result<Self, CoordError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.op_timeout)
            .with_keep_alive(Duration::from_secs(1), config.op_timeout)
            .with_require_leader(true);
        let client = tokio::time::timeout(
            config.connect_timeout,
            Client::connect(config.endpoints.clone(), Some(options)),
        )
        .await
        .map_err(|_| CoordError::Unreachable { op: "connect" })?
        .map_err(|e| classify_error("connect", e))?;
        Ok(Self { client, config, leases: Mutex::new(HashMap::new()), stats: Default::default() })
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &EtcdCoordinatorConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> CoordStats {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CoordStats {
            leases_granted: l(&s.leases_granted),
            leases_expired: l(&s.leases_expired),
            cas_applied: l(&s.cas_applied),
            cas_conflicts: l(&s.cas_conflicts),
            campaigns_won: l(&s.campaigns_won),
            campaigns_lost: l(&s.campaigns_lost),
            rejected: l(&s.rejected),
            unavailable: l(&s.unavailable),
            watch_dropped: 0,
        }
    }

    /// When this client's belief in `lease` runs out, if it holds one.
    pub fn lease_valid_until(&self, lease: LeaseId) -> Option<Instant> {
        self.beliefs().get(&lease).map(|b| b.valid_until)
    }

    fn beliefs(&self) -> MutexGuard<'_, HashMap<LeaseId, LeaseBelief>> {
        // Each update is a single insert/remove: a poisoned map is still consistent.
        self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, prefix: &str, name: &str) -> String {
        format!("{}{prefix}{name}", self.config.namespace)
    }

    /// Runs one operation within the op timeout. An endpoint that refuses the connection is
    /// retried (the balanced channel may pick a dead member first); every operation here is
    /// safe to repeat: puts are idempotent, transactions compare first.
    async fn run<T, F>(&self, op: &'static str, mut attempt: impl FnMut(Client) -> F) -> Result<T, CoordError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.config.op_timeout;
        let mut last = CoordError::NoQuorum { op };
        let result = loop {
            match tokio::time::timeout_at(deadline, attempt(self.client.clone())).await {
                Err(_) => break Err(last),
                Ok(Ok(v)) => break Ok(v),
                Ok(Err(e)) => match classify_error(op, e) {
                    CoordError::Unreachable { .. } => {
                        last = CoordError::Unreachable { op };
                        let pause = tokio::time::Instant::now() + Duration::from_millis(20);
                        if pause >= deadline {
                            break Err(last);
                        }
                        tokio::time::sleep_until(pause).await;
                    }
                    other => break Err(other),
                },
            }
        };
        if let Err(e) = &result {
            let counter = match e {
                CoordError::NoQuorum { .. } | CoordError::Unreachable { .. } => &self.stats.unavailable,
                _ => &self.stats.rejected,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pvp_global_coord_errors_total").increment(1);
        }
        result
    }

    fn reject(&self, e: CoordError) -> CoordError {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pvp_global_coord_rejected_total").increment(1);
        e
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<etcd_client::TxnResponse, CoordError> {
        let txn = &txn;
        self.run(op, |mut c| async move { c.txn(txn.clone()).await }).await
    }
}

fn first_kv(resp: &etcd_client::TxnResponse) -> Option<etcd_client::KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

fn version_of(kv: &etcd_client::KeyValue) -> u64 {
    u64::try_from(kv.mod_revision()).unwrap_or(0)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Coordinator for EtcdCoordinator {
    type Feed = EtcdChangeFeed;

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, CoordError> {
        check_ttl(ttl).map_err(|e| self.reject(e))?;
        let secs = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(1);
        let sent = Instant::now();
        let resp = self.run("grant_lease", |mut c| async move { c.lease_grant(secs, None).await }).await?;
        let granted = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0));
        let id = LeaseId(resp.id());
        self.beliefs().insert(id, LeaseBelief { valid_until: sent + granted });
        self.stats.leases_granted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pvp_global_coord_leases_granted_total").increment(1);
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, CoordError> {
        let sent = Instant::now();
        let resp = self
            .run("keep_alive", |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease.0).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
        match resp {
            Ok(Some(r)) if r.ttl() > 0 => {
                let ttl = Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(0));
                self.beliefs().insert(lease, LeaseBelief { valid_until: sent + ttl });
                Ok(ttl)
            }
            Err(e) if !matches!(e, CoordError::LeaseNotFound(_)) => Err(e),
            _ => {
                if self.beliefs().remove(&lease).is_some() {
                    self.stats.leases_expired.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("pvp_global_coord_leases_expired_total").increment(1);
                }
                Err(self.reject(CoordError::LeaseNotFound(lease)))
            }
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), CoordError> {
        // Stop believing first: from here on the lease may be gone at any moment.
        self.beliefs().remove(&lease);
        match self.run("revoke_lease", |mut c| async move { c.lease_revoke(lease.0).await }).await {
            Ok(_) => Ok(()),
            Err(CoordError::LeaseNotFound(_)) => Err(CoordError::LeaseNotFound(lease)),
            Err(e) => Err(e),
        }
    }

    fn lease_believed_valid(&self, lease: LeaseId) -> bool {
        self.beliefs().get(&lease).is_some_and(|b| Instant::now() < b.valid_until)
    }

    async fn announce_region(&self, region: RegionId, lease: LeaseId) -> Result<(), CoordError> {
        let key = self.key(REGIONS_PREFIX, region.as_str());
        let key = key.as_str();
        match self
            .run("announce_region", |mut c| async move {
                c.put(key, region.as_str(), Some(PutOptions::new().with_lease(lease.0))).await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(CoordError::LeaseNotFound(_)) => Err(CoordError::LeaseNotFound(lease)),
            Err(e) => Err(e),
        }
    }

    async fn live_regions(&self) -> Result<Vec<RegionId>, CoordError> {
        let key = self.key(REGIONS_PREFIX, "");
        let key = key.as_str();
        let resp =
            self.run("live_regions", |mut c| async move {
                c.get(key, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let mut regions =
            resp.kvs().iter().map(|kv| decode_region(kv.value())).collect::<Result<Vec<_>, _>>()?;
        regions.sort();
        Ok(regions)
    }

    async fn campaign(
        &self,
        job: &str,
        candidate: RegionId,
        lease: LeaseId,
    ) -> Result<Leadership, CoordError> {
        check_name(job).map_err(|e| self.reject(e))?;
        let key = self.key(LEADERS_PREFIX, job);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                candidate.as_str(),
                Some(PutOptions::new().with_lease(lease.0)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = match self.txn("campaign", txn).await {
            Err(CoordError::LeaseNotFound(_)) => return Err(CoordError::LeaseNotFound(lease)),
            r => r?,
        };
        let result = if resp.succeeded() {
            Leadership { leader: candidate, won: true }
        } else {
            // The holder may have gone between compare and get; report no win then.
            let kv = first_kv(&resp).ok_or(CoordError::NoQuorum { op: "campaign" })?;
            let leader = decode_region(kv.value())?;
            Leadership { leader, won: leader == candidate && kv.lease() == lease.0 }
        };
        let counter = if result.won { &self.stats.campaigns_won } else { &self.stats.campaigns_lost };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    }

    async fn leader(&self, job: &str) -> Result<Option<RegionId>, CoordError> {
        check_name(job).map_err(|e| self.reject(e))?;
        let key = self.key(LEADERS_PREFIX, job);
        let key = key.as_str();
        let resp = self.run("leader", |mut c| async move { c.get(key, None).await }).await?;
        resp.kvs().first().map(|kv| decode_region(kv.value())).transpose()
    }

    async fn resign(&self, job: &str, lease: LeaseId) -> Result<bool, CoordError> {
        check_name(job).map_err(|e| self.reject(e))?;
        let key = self.key(LEADERS_PREFIX, job);
        let txn = Txn::new()
            .when([Compare::lease(key.as_str(), CompareOp::Equal, lease.0)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        Ok(self.txn("resign", txn).await?.succeeded())
    }

    async fn read_record(&self, name: &str) -> Result<Option<VersionedRecord>, CoordError> {
        check_name(name).map_err(|e| self.reject(e))?;
        let key = self.key(RECORDS_PREFIX, name);
        let key = key.as_str();
        let resp = self.run("read_record", |mut c| async move { c.get(key, None).await }).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| VersionedRecord { value: kv.value().to_vec(), version: version_of(kv) }))
    }

    async fn compare_and_set(
        &self,
        name: &str,
        expected: Expected,
        value: Vec<u8>,
    ) -> Result<CasOutcome, CoordError> {
        check_name(name).and_then(|()| check_value(&value)).map_err(|e| self.reject(e))?;
        let key = self.key(RECORDS_PREFIX, name);
        let cmp = match expected {
            Expected::Absent => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Expected::Version(v) => Compare::mod_revision(key.as_str(), CompareOp::Equal, as_i64(v)),
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key.as_str(), value, None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = self.txn("compare_and_set", txn).await?;
        if resp.succeeded() {
            self.stats.cas_applied.fetch_add(1, Ordering::Relaxed);
            let version = resp.header().map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0));
            Ok(CasOutcome::Applied { version })
        } else {
            self.stats.cas_conflicts.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pvp_global_coord_cas_conflicts_total").increment(1);
            let current = first_kv(&resp)
                .map(|kv| VersionedRecord { value: kv.value().to_vec(), version: version_of(&kv) });
            Ok(CasOutcome::Conflict { current })
        }
    }

    async fn delete_record(&self, name: &str, expected: Expected) -> Result<bool, CoordError> {
        check_name(name).map_err(|e| self.reject(e))?;
        let Expected::Version(v) = expected else {
            return Ok(false);
        };
        let key = self.key(RECORDS_PREFIX, name);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, as_i64(v))])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        Ok(self.txn("delete_record", txn).await?.succeeded())
    }

    async fn watch(&self, scope: WatchScope) -> Result<EtcdChangeFeed, CoordError> {
        let prefix = scope_prefix(&scope).map_err(|e| self.reject(e))?;
        let key = format!("{}{prefix}", self.config.namespace);
        let key = key.as_str();
        let (watcher, stream) = self
            .run("watch", |mut c| async move { c.watch(key, Some(WatchOptions::new().with_prefix())).await })
            .await?;
        Ok(EtcdChangeFeed {
            _watcher: watcher,
            stream,
            namespace: self.config.namespace.clone(),
            pending: VecDeque::new(),
        })
    }
}

/// The change stream of an [`EtcdCoordinator`] watch. Dropping it ends the watch.
#[derive(Debug)]
pub struct EtcdChangeFeed {
    _watcher: Watcher,
    stream: WatchStream,
    namespace: String,
    pending: VecDeque<Change>,
}

impl ChangeFeed for EtcdChangeFeed {
    async fn next_change(&mut self) -> Result<Change, CoordError> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(c);
            }
            let resp = self
                .stream
                .message()
                .await
                .map_err(|e| classify_error("watch", e))?
                .ok_or(CoordError::WatchClosed)?;
            if resp.canceled() {
                return Err(if resp.compact_revision() > 0 {
                    CoordError::WatchLagged
                } else {
                    CoordError::WatchClosed
                });
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Some(key) = kv.key().strip_prefix(self.namespace.as_bytes()) else {
                    continue;
                };
                let Ok(key) = core::str::from_utf8(key) else {
                    continue;
                };
                let revision = version_of(kv);
                let value = match ev.event_type() {
                    EventType::Put => Some((kv.value(), revision)),
                    EventType::Delete => None,
                };
                if let Some(change) = classify(key, value, revision) {
                    self.pending.push_back(change);
                }
            }
        }
    }
}
