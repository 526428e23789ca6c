//! Properties of the matchmaker over random queues, cancellations, outages and time steps:
//! no player is ever in two matches, and every match respects every member's limits.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use pvp_core::ids::{PlayerId, RegionId};
use pvp_global::cluster::{FleetConfig, JP, KR, SG};
use pvp_global::matchmaking::{GameMode, GameModeId, GlobalMatchmaking, MatchRequest, MatchmakingConfig};

const REGIONS: [RegionId; 3] = [KR, JP, SG];

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        five: bool,
        party: Vec<u16>,
        rating: u16,
        lat: [u16; 3],
        max: u16,
        ceiling: Option<u16>,
        home: u8,
    },
    Tick {
        advance_ms: u32,
    },
    Cancel {
        nth: u16,
    },
    Outage {
        region: u8,
        down: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            any::<bool>(),
            prop::collection::vec(0u16..3000, 0..5),
            0u16..3000,
            [5u16..200, 5u16..200, 5u16..200],
            20u16..150,
            prop::option::of(0u16..60),
            0u8..3,
        )
            .prop_map(|(five, party, rating, lat, max, ceiling, home)| Op::Enqueue {
                five,
                party,
                rating,
                lat,
                max,
                ceiling,
                home
            }),
        2 => (0u32..12_000).prop_map(|advance_ms| Op::Tick { advance_ms }),
        1 => any::<u16>().prop_map(|nth| Op::Cancel { nth }),
        1 => (0u8..3, any::<bool>()).prop_map(|(region, down)| Op::Outage { region, down }),
    ]
}

struct Asked {
    ticket_rating: f64,
    lat: [u16; 3],
    max_ms: u64,
    ceiling_ms: u64,
    leader: PlayerId,
    mode: GameModeId,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn matches_are_disjoint_and_respect_every_limit(ops in prop::collection::vec(op(), 1..300), cross in any::<bool>()) {
        let config = MatchmakingConfig { cross_region: cross, queue_timeout: None, ..MatchmakingConfig::default() };
        let (win0, wstep, wmax) = (config.skill_window, config.skill_window_step, config.skill_window_max);
        let interval = config.expansion_interval;
        let lat_step_ms = config.latency_step.as_millis() as u64;
        let mut mm = GlobalMatchmaking::new(FleetConfig::reference(), config, Duration::ZERO).unwrap();
        let mut now = Duration::ZERO;
        mm.heartbeat_all(now);
        let mut next_id = 1u64;
        let mut asked: HashMap<PlayerId, Asked> = HashMap::new();
        let mut leaders: Vec<PlayerId> = Vec::new();
        let mut down = [false; 3];
        let mut seen: HashSet<PlayerId> = HashSet::new();
        let mut handles = Vec::new();
        for op in ops {
            match op {
                Op::Enqueue { five, party, rating, lat, max, ceiling, home } => {
                    let mode = if five { GameMode::FIVE_V_FIVE } else { GameMode::ONE_V_ONE };
                    let leader = PlayerId::new(next_id);
                    next_id += 1;
                    let mut req = MatchRequest::new(leader, f64::from(rating), REGIONS[usize::from(home)], mode)
                        .max_latency(Duration::from_millis(u64::from(max)));
                    if let Some(c) = ceiling {
                        req = req.widen_latency_to(Duration::from_millis(u64::from(max + c)));
                    }
                    for (r, l) in REGIONS.iter().zip(lat) {
                        req = req.latency(*r, Duration::from_millis(u64::from(l)));
                    }
                    let party: Vec<u16> = if five { party } else { Vec::new() };
                    let mut members = vec![leader];
                    for r in &party {
                        let p = PlayerId::new(next_id);
                        next_id += 1;
                        members.push(p);
                        req = req.party_member(p, f64::from(*r));
                    }
                    let total: f64 = f64::from(rating) + party.iter().map(|r| f64::from(*r)).sum::<f64>();
                    let before = mm.queued_players();
                    match mm.find_match(req, now) {
                        Ok(h) => {
                            for p in &members {
                                asked.insert(*p, Asked {
                                    ticket_rating: total / members.len() as f64,
                                    lat,
                                    max_ms: u64::from(max),
                                    ceiling_ms: u64::from(max + ceiling.unwrap_or(0)),
                                    leader,
                                    mode,
                                });
                            }
                            leaders.push(leader);
                            handles.push(h);
                            prop_assert_eq!(mm.queued_players(), before + members.len());
                        }
                        Err(_) => prop_assert_eq!(mm.queued_players(), before),
                    }
                }
                Op::Cancel { nth } => {
                    if !leaders.is_empty() {
                        let p = leaders[usize::from(nth) % leaders.len()];
                        let _ = mm.cancel(p);
                    }
                }
                Op::Outage { region, down: d } => {
                    let r = REGIONS[usize::from(region)];
                    if d { mm.mark_region_down(r).unwrap() } else { mm.mark_region_up(r).unwrap() }
                    down[usize::from(region)] = d;
                }
                Op::Tick { advance_ms } => {
                    now += Duration::from_millis(u64::from(advance_ms));
                    mm.heartbeat_all(now);
                    mm.tick(now);
                    while let Some(m) = mm.poll_match() {
                        let ri = REGIONS.iter().position(|r| *r == m.region()).unwrap();
                        prop_assert!(!down[ri], "match placed in a Down region");
                        prop_assert!(!m.is_backfill());
                        let mode = asked[&m.players()[0].player()].mode;
                        let (team_size, teams) = if mode == GameMode::ONE_V_ONE { (1, 2) } else { (5, 2) };
                        prop_assert_eq!(m.players().len(), team_size * teams);
                        for t in 0..teams as u8 {
                            prop_assert_eq!(m.team(t).count(), team_size);
                        }
                        let mut lo = f64::INFINITY;
                        let mut hi = f64::NEG_INFINITY;
                        let mut narrowest = f64::INFINITY;
                        for p in m.players() {
                            prop_assert!(seen.insert(p.player()), "player {} in two matches", p.player());
                            let a = &asked[&p.player()];
                            prop_assert_eq!(a.mode, mode);
                            if !cross {
                                prop_assert_eq!(asked[&a.leader].lat, a.lat);
                            }
                            // Party members share the leader's team.
                            let leader_team = m.players().iter().find(|q| q.player() == a.leader).map(|q| q.team());
                            prop_assert_eq!(leader_team, Some(p.team()));
                            let steps = (p.waited().as_nanos() / interval.as_nanos()) as u64;
                            let limit = (a.max_ms + steps * lat_step_ms).min(a.ceiling_ms.max(a.max_ms));
                            let lat = u64::from(a.lat[ri]);
                            prop_assert_eq!(p.latency(), Duration::from_millis(lat));
                            prop_assert!(lat <= limit, "latency {} > limit {}", lat, limit);
                            let window = (win0 + steps as f64 * wstep).min(wmax);
                            narrowest = narrowest.min(window);
                            lo = lo.min(a.ticket_rating);
                            hi = hi.max(a.ticket_rating);
                        }
                        prop_assert!(hi - lo <= narrowest + 1e-9, "spread {} > window {}", hi - lo, narrowest);
                    }
                }
            }
        }
        // Every handle that finished with a match names a match its player was seen in.
        for h in handles {
            if let Some(Ok(m)) = h.try_result() {
                prop_assert!(m.players().iter().any(|p| Some(p.player()) == h.player()));
            }
        }
    }
}
