//! The history a session logs for an after-the-run check, in the spirit of Jepsen (issue 15,
//! item 5), and the checker.
//!
//! With [`history_dir`](crate::SessionConfig::history_dir) set, every process appends one JSON
//! line per event to `history-<pid>.jsonl` there, written through at once (a process killed
//! with -9 keeps every line it logged): the leaders' assignments with their term, the
//! regions' hosted matches, results and aborts, bans and rating changes, the terms led, and at
//! the end what each replica holds. [`check`] reads every process's lines and lists the
//! violations:
//!
//! - a match result lost (absent from a replica at the end) or written twice;
//! - a player in two matches at once;
//! - a ban lost (requested in a region that lived on, absent from a replica at the end);
//! - replicas that differ at the end;
//! - two leaders in one term, or a term's assignment made after a later term began.
//!
//! A result written by a process that was killed and never replicated is lost by design
//! (replication is asynchronous): it is counted as lost *within the RPO* when it was written
//! at most [`RPO_ALLOWANCE`] before that process died, and as a violation otherwise. The
//! largest such window is the run's measured RPO.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How much a killed process may lose: results written this shortly before its death.
pub const RPO_ALLOWANCE_MS: u64 = 1_000;

/// [`RPO_ALLOWANCE_MS`] as a `Duration`.
pub const RPO_ALLOWANCE: std::time::Duration = std::time::Duration::from_millis(RPO_ALLOWANCE_MS);

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A process started (its regions are in the entry's `p`).
    Start,
    /// A leader placed a match: the term it holds (0: no election), the hosting region, the
    /// players.
    Assign {
        /// The leader's term.
        term: u64,
        /// The region told to host it.
        region: String,
        /// The match.
        match_id: u64,
        /// Its players.
        players: Vec<u64>,
    },
    /// A region's game server took the match.
    Hosted {
        /// The hosting region.
        region: String,
        /// The match.
        match_id: u64,
    },
    /// A player's session joined its seat on the match's server.
    Joined {
        /// The match.
        match_id: u64,
        /// The player.
        player: u64,
    },
    /// A player left the match before it ended: its server saw the session go (timed out,
    /// disconnected), or the client gave it up (its server silent, its seat void).
    Left {
        /// The match.
        match_id: u64,
        /// The player.
        player: u64,
    },
    /// A region wrote the match's result into its replica.
    Result {
        /// The hosting region.
        region: String,
        /// The match.
        match_id: u64,
    },
    /// The match ended without a result (no-show, refused, its server lost, fenced).
    Aborted {
        /// The match.
        match_id: u64,
    },
    /// This process leads a term.
    Leads {
        /// The term.
        term: u64,
    },
    /// A ban written in a region.
    Ban {
        /// The region it was written in.
        region: String,
        /// The banned player.
        player: u64,
    },
    /// A rating written in a region.
    Rating {
        /// The region it was written in.
        region: String,
        /// The player.
        player: u64,
        /// The new rating.
        rating: i64,
    },
    /// The end of a process: what a replica of its holds.
    Final {
        /// The replica's region.
        region: String,
        /// Match ids of the results it holds.
        results: Vec<u64>,
        /// Banned players it holds.
        bans: Vec<u64>,
        /// Its digest (results and sync state).
        digest: u64,
    },
}

/// One history line: when (Unix ms), which process (pid, and its regions), what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unix time, ms (every host of a run shares the clock).
    pub t: u64,
    /// The process id.
    pub pid: u32,
    /// The process's regions (`kr`, or `kr,jp,sg` in one process).
    pub p: String,
    /// What happened.
    #[serde(flatten)]
    pub ev: Event,
}

/// A process's history writer (one line per event, written through).
#[derive(Debug)]
pub(crate) struct HistoryLog {
    file: Mutex<std::fs::File>,
    process: String,
    pid: u32,
    /// Lines that could not be written (a full disk): the checker's input is then partial.
    pub(crate) failed: std::sync::atomic::AtomicU64,
}

/// Unix time now, ms: the clock every history line, election line and fault time is on
/// (the hosts of a run share it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl HistoryLog {
    /// Opens `dir/history-<pid>.jsonl` for appending.
    pub(crate) fn open(dir: &Path, process: String) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pid = std::process::id();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(history_file(dir, pid))?;
        Ok(Self { file: Mutex::new(file), process, pid, failed: Default::default() })
    }

    /// Logs `ev` now.
    pub(crate) fn record(&self, ev: Event) {
        let e = Entry { t: unix_ms(), pid: self.pid, p: self.process.clone(), ev };
        let ok = serde_json::to_vec(&e).is_ok_and(|mut line| {
            line.push(b'\n');
            // One write per line: a kill -9 leaves whole lines behind.
            crate::session::lock(&self.file).write_all(&line).is_ok()
        });
        if !ok {
            self.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Where process `pid` logs under `dir`.
pub fn history_file(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("history-{pid}.jsonl"))
}

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A file could not be read.
    #[error("history i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not an entry (its file and line number).
    #[error("{0}:{1}: not a history entry")]
    Corrupt(PathBuf, usize),
}

/// Every entry of every `history-*.jsonl` under `dir`, by time. A torn last line (a process
/// killed mid-write) is skipped; any other line that does not parse is an error.
pub fn read_dir(dir: &Path) -> Result<Vec<Entry>, HistoryError> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir)? {
        let path = f?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("history-") && name.ends_with(".jsonl")) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            match serde_json::from_str::<Entry>(l) {
                Ok(e) => out.push(e),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(_) => return Err(HistoryError::Corrupt(path.clone(), i + 1)),
            }
        }
    }
    out.sort_by_key(|e| e.t);
    Ok(out)
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Verdict {
    /// Each violation, in words.
    pub violations: Vec<String>,
    /// Entries read.
    pub entries: usize,
    /// Results written (distinct matches).
    pub results: usize,
    /// Assignments made.
    pub assignments: usize,
    /// Results lost with a killed process, written at most [`RPO_ALLOWANCE`] before it died.
    pub lost_within_rpo: usize,
    /// The largest such window, ms: the measured RPO (`None`: nothing was lost).
    pub rpo_ms: Option<u64>,
    /// Terms led.
    pub terms: usize,
    /// Bans written.
    pub bans: usize,
    /// Processes that ended with a final report, and those that did not (killed).
    pub processes: (usize, usize),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "history: {} entries from {} processes ({} killed): {} assignments, {} results, {} bans, {} terms",
            self.entries,
            self.processes.0 + self.processes.1,
            self.processes.1,
            self.assignments,
            self.results,
            self.bans,
            self.terms
        )?;
        writeln!(
            f,
            "history: lost with a killed process within the RPO allowance ({} ms): {} results, largest window {}",
            RPO_ALLOWANCE_MS,
            self.lost_within_rpo,
            self.rpo_ms.map_or("-".into(), |ms| format!("{ms} ms"))
        )?;
        if self.violations.is_empty() {
            write!(f, "history: 0 violations")
        } else {
            writeln!(f, "history: {} violations", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  VIOLATION {v}")?;
            }
            Ok(())
        }
    }
}

/// What one replica held at the end.
struct Held<'a> {
    region: &'a str,
    results: HashSet<u64>,
    bans: HashSet<u64>,
    digest: u64,
}

/// Checks a run's history (every process's entries, any order). `deaths` are the kills the
/// run made: (region, Unix ms); a process with no final entry died at the first of its
/// region's deaths after its last entry (else at its last entry).
pub fn check(entries: &[Entry], deaths: &[(String, u64)]) -> Verdict {
    let mut v = Verdict { entries: entries.len(), ..Verdict::default() };
    let mut entries: Vec<&Entry> = entries.iter().collect();
    entries.sort_by_key(|e| e.t);
    // Processes: their last entry, and whether they ended with a final one.
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut finals: HashMap<u32, Vec<Held<'_>>> = HashMap::new();
    let mut region_of: HashMap<u32, &str> = HashMap::new();
    for e in &entries {
        last.insert(e.pid, e.t);
        region_of.insert(e.pid, e.p.as_str());
        if let Event::Final { region, results, bans, digest } = &e.ev {
            finals.entry(e.pid).or_default().push(Held {
                region,
                results: results.iter().copied().collect(),
                bans: bans.iter().copied().collect(),
                digest: *digest,
            });
        }
    }
    v.processes = (finals.len(), last.len() - finals.len());
    let death = |pid: u32| -> Option<u64> {
        if finals.contains_key(&pid) {
            return None;
        }
        let after = last.get(&pid).copied().unwrap_or(0);
        let region = region_of.get(&pid).copied().unwrap_or("");
        Some(
            deaths.iter().filter(|(r, t)| r == region && *t >= after).map(|(_, t)| *t).min().unwrap_or(after),
        )
    };
    let all_finals: Vec<&Held<'_>> = finals.values().flatten().collect();

    // Results: written once each, held by every replica at the end (or lost within the RPO
    // with the process that wrote them).
    let mut written: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
    let mut ended: HashMap<u64, u64> = HashMap::new();
    let mut hosted: HashMap<u64, &Entry> = HashMap::new();
    let mut assigns: Vec<(&Entry, u64, u64, &[u64])> = Vec::new();
    let mut leads: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
    for e in &entries {
        match &e.ev {
            Event::Result { match_id, .. } => {
                written.entry(*match_id).or_default().push(e);
                ended.entry(*match_id).or_insert(e.t);
            }
            Event::Aborted { match_id } => {
                ended.entry(*match_id).or_insert(e.t);
            }
            Event::Hosted { match_id, .. } => {
                hosted.entry(*match_id).or_insert(e);
            }
            Event::Assign { term, match_id, players, .. } => assigns.push((e, *term, *match_id, players)),
            Event::Leads { term } => leads.entry(*term).or_default().push(e),
            Event::Ban { .. } => v.bans += 1,
            _ => {}
        }
    }
    v.results = written.len();
    v.assignments = assigns.len();
    v.terms = leads.len();
    for (m, ws) in &written {
        if ws.len() > 1 {
            v.violations.push(format!(
                "match {m}: result written {} times (by {})",
                ws.len(),
                ws.iter().map(|w| format!("{} at {}", w.p, w.t)).collect::<Vec<_>>().join(", ")
            ));
        }
        let w = ws[0];
        let missing: Vec<&str> =
            all_finals.iter().filter(|f| !f.results.contains(m)).map(|f| f.region).collect();
        if missing.is_empty() {
            continue;
        }
        let holders = all_finals.len() - missing.len();
        match death(w.pid) {
            Some(d) if holders == 0 && d.saturating_sub(w.t) <= RPO_ALLOWANCE_MS => {
                v.lost_within_rpo += 1;
                v.rpo_ms = v.rpo_ms.max(Some(d.saturating_sub(w.t)));
            }
            Some(d) if holders == 0 => v.violations.push(format!(
                "match {m}: result written by {} at {} lost, {} ms before that process died",
                w.p,
                w.t,
                d.saturating_sub(w.t)
            )),
            _ => v.violations.push(format!(
                "match {m}: result written by {} at {} missing from the replica of {} at the end",
                w.p,
                w.t,
                missing.join(", ")
            )),
        }
    }

    // A player is in one match at a time, as the servers saw it: from its session joining
    // the seat to its leaving, the match's end, or the hosting process's death (a match that
    // neither ended nor lost its host holds the player to the end of the run).
    let mut left: HashMap<(u64, u64), u64> = HashMap::new();
    for e in &entries {
        if let Event::Left { match_id, player } = &e.ev {
            left.entry((*player, *match_id)).or_insert(e.t);
        }
    }
    let mut by_player: HashMap<u64, Vec<(u64, u64, u64)>> = HashMap::new();
    let mut joined_seen: HashSet<(u64, u64)> = HashSet::new();
    for e in &entries {
        let Event::Joined { match_id: m, player } = &e.ev else { continue };
        if !joined_seen.insert((*player, *m)) {
            continue;
        }
        let end = left
            .get(&(*player, *m))
            .copied()
            .into_iter()
            .chain(ended.get(m).copied())
            .chain(death(e.pid))
            .min()
            .unwrap_or(u64::MAX);
        by_player.entry(*player).or_default().push((e.t, end, *m));
    }
    let mut overlaps = 0;
    for (p, mut ms) in by_player {
        ms.sort_unstable();
        for w in ms.windows(2) {
            if w[1].0 < w[0].1 {
                overlaps += 1;
                if overlaps <= 20 {
                    v.violations.push(format!(
                        "player {p}: joined match {} at {} while in match {} (joined {}, left {})",
                        w[1].2,
                        w[1].0,
                        w[0].2,
                        w[0].0,
                        if w[0].1 == u64::MAX { "never".into() } else { w[0].1.to_string() }
                    ));
                }
            }
        }
    }
    if overlaps > 20 {
        v.violations.push(format!("... {} more players in two matches at once", overlaps - 20));
    }

    // Bans: written in a region that lived on, held by every replica at the end.
    for e in &entries {
        if let Event::Ban { player, .. } = &e.ev {
            if death(e.pid).is_some() {
                continue;
            }
            for f in all_finals.iter().filter(|f| !f.bans.contains(player)) {
                v.violations.push(format!(
                    "ban of player {player} (at {}) missing from the replica of {}",
                    e.t, f.region
                ));
            }
        }
    }

    // Replicas equal at the end.
    let digests: HashSet<u64> = all_finals.iter().map(|f| f.digest).collect();
    if digests.len() > 1 {
        v.violations.push(format!(
            "replicas differ at the end: {}",
            all_finals
                .iter()
                .map(|f| format!("{} {:016x}", f.region, f.digest))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    // Terms: one leader each; no assignment of a term after a later term began.
    for (t, ls) in &leads {
        let who: HashSet<u32> = ls.iter().map(|l| l.pid).collect();
        if who.len() > 1 {
            v.violations.push(format!("term {t}: led by {} processes", who.len()));
        }
    }
    for (e, term, m, _) in &assigns {
        if let Some(&l) = leads.get(term).and_then(|ls| ls.first()) {
            if l.pid != e.pid {
                v.violations
                    .push(format!("match {m}: assigned in term {term} by {}, which did not lead it", e.p));
            }
        }
        if let Some((later, l)) =
            leads.range(term + 1..).find(|(_, ls)| ls.first().is_some_and(|l| l.t <= e.t))
        {
            v.violations.push(format!(
                "match {m}: assigned in term {term} by {} at {}, after term {later} began at {}",
                e.p,
                e.t,
                l.first().map_or(0, |l| l.t)
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: u64, pid: u32, p: &str, ev: Event) -> Entry {
        Entry { t, pid, p: p.into(), ev }
    }

    fn fin(t: u64, pid: u32, p: &str, results: &[u64], bans: &[u64], digest: u64) -> Entry {
        e(
            t,
            pid,
            p,
            Event::Final { region: p.into(), results: results.to_vec(), bans: bans.to_vec(), digest },
        )
    }

    fn assign(t: u64, pid: u32, p: &str, term: u64, m: u64, players: &[u64]) -> Entry {
        e(t, pid, p, Event::Assign { term, region: p.into(), match_id: m, players: players.to_vec() })
    }

    fn result(t: u64, pid: u32, p: &str, m: u64) -> Entry {
        e(t, pid, p, Event::Result { region: p.into(), match_id: m })
    }

    /// kr (pid 1) leads term 1 and places match 10 on jp (pid 2); both end holding it.
    fn clean() -> Vec<Entry> {
        vec![
            e(100, 1, "kr", Event::Start),
            e(100, 2, "jp", Event::Start),
            e(200, 1, "kr", Event::Leads { term: 1 }),
            assign(300, 1, "kr", 1, 10, &[1, 2]),
            e(310, 2, "jp", Event::Hosted { region: "jp".into(), match_id: 10 }),
            result(2_300, 2, "jp", 10),
            e(2_400, 2, "jp", Event::Ban { region: "jp".into(), player: 7 }),
            fin(9_000, 1, "kr", &[10], &[7], 0xab),
            fin(9_000, 2, "jp", &[10], &[7], 0xab),
        ]
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let v = check(&clean(), &[]);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.results, v.assignments, v.terms, v.bans, v.processes), (1, 1, 1, 1, (2, 0)));
        assert_eq!(v.rpo_ms, None);
    }

    #[test]
    fn a_lost_or_doubled_result_is_a_violation() {
        let mut h = clean();
        // jp's replica lacks match 10 at the end.
        h[8] = fin(9_000, 2, "jp", &[], &[7], 0xab);
        let v = check(&h, &[]);
        assert!(v.violations.iter().any(|x| x.contains("match 10") && x.contains("missing")), "{v}");
        let mut h = clean();
        h.push(result(2_500, 1, "kr", 10));
        assert!(check(&h, &[]).violations.iter().any(|x| x.contains("written 2 times")));
    }

    #[test]
    fn a_result_lost_with_its_killed_writer_counts_against_the_rpo() {
        // sg (pid 3) writes match 11 and is killed 400 ms later; nobody holds it.
        let mut h = clean();
        h.push(e(150, 3, "sg", Event::Start));
        h.push(result(5_000, 3, "sg", 11));
        let v = check(&h, &[("sg".into(), 5_400)]);
        assert!(v.violations.is_empty(), "{v}");
        assert_eq!((v.lost_within_rpo, v.rpo_ms), (1, Some(400)));
        // Killed 3 s after it wrote: more than the allowance.
        let v = check(&h, &[("sg".into(), 8_000)]);
        assert!(v.violations.iter().any(|x| x.contains("match 11") && x.contains("lost")), "{v}");
    }

    fn joined(t: u64, pid: u32, m: u64, player: u64) -> Entry {
        e(t, pid, "jp", Event::Joined { match_id: m, player })
    }

    #[test]
    fn a_player_in_two_matches_at_once_is_a_violation() {
        let mut h = clean();
        h.push(joined(400, 2, 10, 2));
        // Player 2 joins match 12 while still in match 10 (it ends at 2,300).
        h.push(joined(1_000, 2, 12, 2));
        let v = check(&h, &[]);
        assert!(v.violations.iter().any(|x| x.starts_with("player 2:")), "{v}");
        // Having left 10 first (its session timed out), it may.
        h.push(e(900, 2, "jp", Event::Left { match_id: 10, player: 2 }));
        let v = check(&h, &[]);
        assert!(!v.violations.iter().any(|x| x.starts_with("player 2:")), "{v}");
        // A match that never ends on a host that lives on holds its player to the end; one
        // whose host died holds it until the death.
        let mut h = clean();
        h.push(e(150, 3, "sg", Event::Start));
        h.push(joined(500, 2, 30, 3));
        h.push(joined(600, 3, 31, 4));
        h.push(joined(700, 2, 32, 3));
        h.push(joined(5_700, 2, 33, 4));
        let v = check(&h, &[("sg".into(), 5_000)]);
        assert!(v.violations.iter().any(|x| x.starts_with("player 3:")), "{v}");
        assert!(!v.violations.iter().any(|x| x.starts_with("player 4:")), "{v}");
    }

    #[test]
    fn a_lost_ban_and_unequal_replicas_are_violations() {
        let mut h = clean();
        h[8] = fin(9_000, 2, "jp", &[10], &[], 0xcd);
        let v = check(&h, &[]);
        assert!(v.violations.iter().any(|x| x.starts_with("ban of player 7")), "{v}");
        assert!(v.violations.iter().any(|x| x.starts_with("replicas differ")), "{v}");
    }

    #[test]
    fn two_leaders_or_a_stale_term_assigning_are_violations() {
        let mut h = clean();
        h.push(e(250, 2, "jp", Event::Leads { term: 1 }));
        assert!(check(&h, &[]).violations.iter().any(|x| x.contains("term 1: led by 2")));
        // jp leads term 2 at 5,000; kr still assigns in term 1 at 6,000.
        let mut h = clean();
        h.push(e(5_000, 2, "jp", Event::Leads { term: 2 }));
        h.push(assign(6_000, 1, "kr", 1, 20, &[8, 9]));
        let v = check(&h, &[]);
        assert!(v.violations.iter().any(|x| x.contains("after term 2 began")), "{v}");
        // Assigning in a term it never led.
        let mut h = clean();
        h.push(assign(700, 2, "jp", 1, 21, &[8, 9]));
        assert!(check(&h, &[]).violations.iter().any(|x| x.contains("which did not lead it")));
    }

    #[test]
    fn histories_round_trip_through_files_and_torn_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("pvp-history-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = HistoryLog::open(&dir, "kr".into()).unwrap();
        log.record(Event::Start);
        log.record(Event::Leads { term: 3 });
        // A line torn by a kill -9.
        std::fs::OpenOptions::new()
            .append(true)
            .open(history_file(&dir, std::process::id()))
            .unwrap()
            .write_all(b"{\"t\":1,\"pid\"")
            .unwrap();
        let got = read_dir(&dir).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].ev, Event::Leads { term: 3 });
        assert_eq!(got[1].p, "kr");
        // A corrupt line in the middle is an error, not a silent skip.
        std::fs::write(dir.join("history-1.jsonl"), "garbage\n{}\n").unwrap();
        assert!(matches!(read_dir(&dir), Err(HistoryError::Corrupt(_, 1))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
