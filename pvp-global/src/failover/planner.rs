//! The failover state machine: routing around Down regions and bringing them back.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId, ServerId};

use super::{FailoverError, RegionHealth};

/// Round-trip times from where players connect (their origin region) to each serving region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyMatrix {
    rtt: BTreeMap<(RegionId, RegionId), Duration>,
}

impl LatencyMatrix {
    /// Sets the RTT from players in `origin` to servers in `target`.
    pub fn set(&mut self, origin: RegionId, target: RegionId, rtt: Duration) {
        self.rtt.insert((origin, target), rtt);
    }

    /// Sets the RTT both ways between `a` and `b`.
    pub fn set_symmetric(&mut self, a: RegionId, b: RegionId, rtt: Duration) {
        self.set(a, b, rtt);
        self.set(b, a, rtt);
    }

    /// The RTT from `origin` to `target`, if known (unknown pairs are never routed).
    pub fn rtt(&self, origin: RegionId, target: RegionId) -> Option<Duration> {
        self.rtt.get(&(origin, target)).copied()
    }
}

/// A player in a match on a server, as matchmaking placed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerSession {
    /// The player.
    pub player: PlayerId,
    /// The game server they play on.
    pub server: ServerId,
    /// The region of that server.
    pub region: RegionId,
    /// Where the player connects from (row of the [`LatencyMatrix`]).
    pub origin: RegionId,
    /// The highest RTT this player accepts.
    pub latency_limit: Duration,
}

/// Whether a region takes matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionAvailability {
    /// Takes new matches (unless drained for maintenance).
    Serving,
    /// Down: no new matches, its players are offered other regions.
    Down,
    /// Back, but waiting for anti-entropy to catch it up before it takes matches.
    CatchingUp,
}

/// What the planner decided; drain with [`FailoverPlanner::poll_decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverDecision {
    /// A region went Down; routing avoids it from now on.
    RegionDown {
        /// The region.
        region: RegionId,
        /// When the planner learnt it.
        at: Duration,
    },
    /// The default route for players of `origin` changed (`None`: no region within the default
    /// latency limit). Store it as the routing table control record if you share one.
    RouteChanged {
        /// Where the players connect from.
        origin: RegionId,
        /// Where their new matches go now.
        to: Option<RegionId>,
    },
    /// Offer this player a reconnect to a server in `to` (with a fresh connect token); `to` is
    /// within the player's latency limit.
    OfferReconnect {
        /// The player.
        player: PlayerId,
        /// The server they were on.
        from_server: ServerId,
        /// The region they were in.
        from: RegionId,
        /// The region to reconnect to.
        to: RegionId,
    },
    /// No region within the player's latency limit can take them now; they are offered one as
    /// soon as one can.
    PlayerStranded {
        /// The player.
        player: PlayerId,
        /// The region they were in.
        region: RegionId,
    },
    /// A Down region is reachable again: run anti-entropy with it, then call
    /// [`FailoverPlanner::handle_caught_up`].
    AwaitingCatchUp {
        /// The region.
        region: RegionId,
    },
    /// The region caught up and takes matches again.
    RegionRestored {
        /// The region.
        region: RegionId,
        /// When.
        at: Duration,
    },
}

/// Settings of a [`FailoverPlanner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannerConfig {
    /// Latency limit used for the per-origin default routes ([`FailoverDecision::RouteChanged`]).
    pub default_latency_limit: Duration,
    /// Most sessions tracked.
    pub max_sessions: usize,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self { default_latency_limit: Duration::from_millis(100), max_sessions: 1 << 20 }
    }
}

/// Counters of a [`FailoverPlanner`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannerStats {
    /// Regions that went Down.
    pub regions_down: u64,
    /// Regions restored after catch-up.
    pub regions_restored: u64,
    /// Reconnect offers made.
    pub reconnect_offers: u64,
    /// Times a player was stranded (no region within their limit).
    pub stranded: u64,
    /// Default-route changes.
    pub route_changes: u64,
    /// Inputs refused (unknown region or player, full table, stale catch-up).
    pub rejected: u64,
}

/// The per-origin default routes, as a small control record.
///
/// ```
/// use pvp_core::ids::RegionId;
/// use pvp_global::failover::RoutingTable;
///
/// let [kr, jp] = ["kr", "jp"].map(|r| RegionId::new(r).unwrap());
/// let mut table = RoutingTable::default();
/// table.routes.insert(kr, Some(jp));
/// table.routes.insert(jp, None);
/// assert_eq!(RoutingTable::decode(&table.encode())?, table);
/// # Ok::<(), pvp_global::failover::FailoverError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    /// Origin region -> region its new matches go to (`None`: none within the limit).
    pub routes: BTreeMap<RegionId, Option<RegionId>>,
}

impl RoutingTable {
    /// Encodes as lines `origin=target` (an empty target for none: every byte a region name
    /// may hold, `-` included, is taken by real names).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (origin, to) in &self.routes {
            let to = to.as_ref().map_or("", RegionId::as_str);
            let _ = writeln!(out, "{origin}={to}");
        }
        out.into_bytes()
    }

    /// Decodes what [`RoutingTable::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, FailoverError> {
        let text = core::str::from_utf8(bytes).map_err(|_| FailoverError::BadRoutingTable)?;
        let mut routes = BTreeMap::new();
        for line in text.lines() {
            let (origin, to) = line.split_once('=').ok_or(FailoverError::BadRoutingTable)?;
            let origin = RegionId::new(origin).map_err(|_| FailoverError::BadRoutingTable)?;
            let to = match to {
                "" => None,
                r => Some(RegionId::new(r).map_err(|_| FailoverError::BadRoutingTable)?),
            };
            if routes.insert(origin, to).is_some() {
                return Err(FailoverError::BadRoutingTable);
            }
        }
        Ok(Self { routes })
    }
}

#[derive(Debug, Clone, Copy)]
struct RegionState {
    health: RegionHealth,
    availability: RegionAvailability,
    drained: bool,
}

#[derive(Debug, Clone, Copy)]
struct SessionEntry {
    session: PlayerSession,
    offered: Option<RegionId>,
}

/// Failover state machine: region availability, routing of new matches, reconnect offers and
/// the catch-up gate for returning regions. See the [module docs](super) for an example.
///
/// Call order per input: `handle_*` (health from a [`RegionHealthTracker`](super::RegionHealthTracker),
/// catch-up from cross-region sync, placements from matchmaking), then drain
/// [`FailoverPlanner::poll_decision`]. [`FailoverPlanner::route`] answers any time.
#[derive(Debug)]
pub struct FailoverPlanner {
    config: PlannerConfig,
    latency: LatencyMatrix,
    regions: BTreeMap<RegionId, RegionState>,
    sessions: HashMap<PlayerId, SessionEntry>,
    by_region: BTreeMap<RegionId, BTreeSet<PlayerId>>,
    stranded: BTreeSet<PlayerId>,
    routes: BTreeMap<RegionId, Option<RegionId>>,
    decisions: VecDeque<FailoverDecision>,
    stats: PlannerStats,
}

impl FailoverPlanner {
    /// A planner with no regions yet.
    pub fn new(config: PlannerConfig, latency: LatencyMatrix) -> Self {
        Self {
            config,
            latency,
            regions: BTreeMap::new(),
            sessions: HashMap::new(),
            by_region: BTreeMap::new(),
            stranded: BTreeSet::new(),
            routes: BTreeMap::new(),
            decisions: VecDeque::new(),
            stats: PlannerStats::default(),
        }
    }

    /// Adds a Healthy, serving region (adding it again changes nothing).
    pub fn add_region(&mut self, region: RegionId) -> Result<(), FailoverError> {
        if !self.regions.contains_key(&region) {
            if self.regions.len() >= super::MAX_REGIONS {
                return Err(self.reject(FailoverError::TooManyRegions));
            }
            self.regions.insert(
                region,
                RegionState {
                    health: RegionHealth::Healthy,
                    availability: RegionAvailability::Serving,
                    drained: false,
                },
            );
            self.refresh();
        }
        Ok(())
    }

    /// Replaces the latency matrix (new measurements); routes are recomputed.
    pub fn set_latency(&mut self, latency: LatencyMatrix) {
        self.latency = latency;
        self.refresh();
    }

    /// Counters so far.
    pub fn stats(&self) -> PlannerStats {
        self.stats
    }

    /// Whether `region` takes matches, if known.
    pub fn availability(&self, region: RegionId) -> Option<RegionAvailability> {
        self.regions.get(&region).map(|r| r.availability)
    }

    /// The session of `player`, if tracked.
    pub fn session(&self, player: PlayerId) -> Option<PlayerSession> {
        self.sessions.get(&player).map(|e| e.session)
    }

    /// Number of sessions tracked.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The region for a new match of a player from `origin` who accepts at most
    /// `latency_limit`: the serving, non-drained region with the lowest RTT within the limit,
    /// Healthy ones before Degraded ones. `None`: no region within the limit now (the player
    /// waits rather than being placed over their limit).
    pub fn route(&self, origin: RegionId, latency_limit: Duration) -> Option<RegionId> {
        self.regions
            .iter()
            .filter(|(_, s)| s.availability == RegionAvailability::Serving && !s.drained)
            .filter_map(|(r, s)| {
                let rtt = self.latency.rtt(origin, *r)?;
                (rtt <= latency_limit).then_some((s.health, rtt, *r))
            })
            .min()
            .map(|(_, _, r)| r)
    }

    /// The current default routes (per origin, at the default latency limit).
    pub fn routing_table(&self) -> RoutingTable {
        RoutingTable { routes: self.routes.clone() }
    }

    /// The health of `region` changed (from a [`RegionHealthTracker`](super::RegionHealthTracker)
    /// or an operator).
    pub fn handle_health(
        &mut self,
        now: Duration,
        region: RegionId,
        health: RegionHealth,
    ) -> Result<(), FailoverError> {
        let Some(state) = self.regions.get_mut(&region) else {
            return Err(self.reject(FailoverError::UnknownRegion(region)));
        };
        state.health = health;
        match (state.availability, health) {
            (RegionAvailability::Serving | RegionAvailability::CatchingUp, RegionHealth::Down) => {
                state.availability = RegionAvailability::Down;
                self.stats.regions_down += 1;
                metrics::counter!("pvp_global_failover_regions_down_total").increment(1);
                self.decisions.push_back(FailoverDecision::RegionDown { region, at: now });
                self.refresh();
                self.evacuate(region);
            }
            (RegionAvailability::Down, RegionHealth::Healthy | RegionHealth::Degraded) => {
                state.availability = RegionAvailability::CatchingUp;
                self.decisions.push_back(FailoverDecision::AwaitingCatchUp { region });
            }
            _ => self.refresh(),
        }
        Ok(())
    }

    /// Anti-entropy with `region` completed after it returned: it takes matches again.
    /// Refused with [`FailoverError::NotCatchingUp`] unless the region is
    /// [`RegionAvailability::CatchingUp`] (a report from before it returned proves nothing).
    pub fn handle_caught_up(&mut self, now: Duration, region: RegionId) -> Result<(), FailoverError> {
        match self.regions.get_mut(&region) {
            None => Err(self.reject(FailoverError::UnknownRegion(region))),
            Some(s) if s.availability != RegionAvailability::CatchingUp => {
                Err(self.reject(FailoverError::NotCatchingUp(region)))
            }
            Some(s) => {
                s.availability = RegionAvailability::Serving;
                self.stats.regions_restored += 1;
                metrics::counter!("pvp_global_failover_regions_restored_total").increment(1);
                self.decisions.push_back(FailoverDecision::RegionRestored { region, at: now });
                self.refresh();
                Ok(())
            }
        }
    }

    /// Drains `region` for maintenance (no new matches; its sessions play on) or undrains it.
    pub fn handle_drain(&mut self, region: RegionId, drained: bool) -> Result<(), FailoverError> {
        match self.regions.get_mut(&region) {
            None => Err(self.reject(FailoverError::UnknownRegion(region))),
            Some(s) => {
                s.drained = drained;
                self.refresh();
                Ok(())
            }
        }
    }

    /// Matchmaking placed (or re-placed, after a reconnect) a player.
    pub fn handle_session_placed(&mut self, session: PlayerSession) -> Result<(), FailoverError> {
        if !self.regions.contains_key(&session.region) {
            return Err(self.reject(FailoverError::UnknownRegion(session.region)));
        }
        let old = self.sessions.get(&session.player).map(|e| e.session.region);
        if old.is_none() && self.sessions.len() >= self.config.max_sessions {
            return Err(self.reject(FailoverError::TooManySessions));
        }
        if let Some(old) = old {
            if let Some(set) = self.by_region.get_mut(&old) {
                set.remove(&session.player);
            }
        }
        self.stranded.remove(&session.player);
        self.sessions.insert(session.player, SessionEntry { session, offered: None });
        self.by_region.entry(session.region).or_default().insert(session.player);
        if self.regions.get(&session.region).map(|s| s.availability) == Some(RegionAvailability::Down) {
            // Placed by a stale route into a region that is already Down: move them at once.
            self.offer(session.player);
        }
        Ok(())
    }

    /// A player's session ended (match over or player left).
    pub fn handle_session_ended(&mut self, player: PlayerId) -> Result<(), FailoverError> {
        match self.sessions.remove(&player) {
            None => Err(self.reject(FailoverError::UnknownPlayer(player))),
            Some(e) => {
                if let Some(set) = self.by_region.get_mut(&e.session.region) {
                    set.remove(&player);
                }
                self.stranded.remove(&player);
                Ok(())
            }
        }
    }

    /// The next decision, oldest first.
    pub fn poll_decision(&mut self) -> Option<FailoverDecision> {
        self.decisions.pop_front()
    }

    fn reject(&mut self, e: FailoverError) -> FailoverError {
        self.stats.rejected += 1;
        metrics::counter!("pvp_global_failover_rejected_total").increment(1);
        e
    }

    fn evacuate(&mut self, region: RegionId) {
        let mut players: BTreeSet<PlayerId> = self.by_region.get(&region).cloned().unwrap_or_default();
        // Players offered this region who have not reconnected yet need a new offer too.
        players.extend(self.sessions.iter().filter(|(_, e)| e.offered == Some(region)).map(|(p, _)| *p));
        for p in players {
            self.offer(p);
        }
    }

    fn offer(&mut self, player: PlayerId) {
        let Some(entry) = self.sessions.get(&player).copied() else {
            return;
        };
        let s = entry.session;
        match self.route(s.origin, s.latency_limit) {
            Some(to) if to != s.region || entry.offered.is_some() => {
                if entry.offered == Some(to) {
                    return;
                }
                if let Some(e) = self.sessions.get_mut(&player) {
                    e.offered = Some(to);
                }
                self.stranded.remove(&player);
                self.stats.reconnect_offers += 1;
                metrics::counter!("pvp_global_failover_reconnect_offers_total").increment(1);
                self.decisions.push_back(FailoverDecision::OfferReconnect {
                    player,
                    from_server: s.server,
                    from: s.region,
                    to,
                });
            }
            Some(_) => {
                // Their own region serves again: nothing to move.
                self.stranded.remove(&player);
            }
            None => {
                // An earlier offer is void (its region is gone): the next one is made afresh.
                if let Some(e) = self.sessions.get_mut(&player) {
                    e.offered = None;
                }
                if self.stranded.insert(player) {
                    self.stats.stranded += 1;
                    self.decisions.push_back(FailoverDecision::PlayerStranded { player, region: s.region });
                }
            }
        }
    }

    fn refresh(&mut self) {
        let limit = self.config.default_latency_limit;
        let origins: Vec<RegionId> = self.regions.keys().copied().collect();
        for origin in origins {
            let to = self.route(origin, limit);
            if self.routes.get(&origin) != Some(&to) {
                self.routes.insert(origin, to);
                self.stats.route_changes += 1;
                self.decisions.push_back(FailoverDecision::RouteChanged { origin, to });
            }
        }
        let stranded: Vec<PlayerId> = self.stranded.iter().copied().collect();
        for p in stranded {
            self.offer(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table_rejects_garbage() {
        for bad in [&b"kr"[..], b"kr=JP", b"kr=jp\nkr=sg", b"\xff=kr", b"=kr"] {
            assert_eq!(RoutingTable::decode(bad), Err(FailoverError::BadRoutingTable));
        }
    }
}
