//! SLIs, SLOs, error budgets and multi-window multi-burn-rate alerts.
//!
//! [`SloMonitor`] is a sans-IO state machine: feed it readings with
//! [`handle_reading`](SloMonitor::handle_reading) (or let [`evaluate`](SloMonitor::evaluate)
//! pull them from an [`SliSource`]) together with the current time, then read
//! [`status`](SloMonitor::status) and drain [`poll_event`](SloMonitor::poll_event) (or register
//! callbacks with [`on_event`](SloMonitor::on_event)).
//!
//! Two SLI shapes exist:
//! - [`Sli::Events`]: bad events over total events (error rate). The source gives cumulative
//!   counters; the monitor keeps their history and computes every window's ratio itself.
//! - [`Sli::QuantileBelow`]: a time-slice SLI: each second in which the latest interval's
//!   quantile was above the threshold is a bad second (latency p99 ≤ 20 ms).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use pvp_ops::slo::{MonitorConfig, Sli, SliReading, Slo, SloEvent, SloMonitor};
//!
//! let slo = Slo::new("errors", Sli::events("pvp_failed_total", "pvp_requests_total"),
//!                    0.999, Duration::from_secs(30 * 86_400)).unwrap();
//! let mut mon = SloMonitor::new(MonitorConfig::default());
//! mon.add_slo(slo).unwrap();
//! let t0 = Instant::now();
//! // 10 minutes of 5% errors: 50x the budget rate.
//! for m in 0..=10u32 {
//!     let total = f64::from(m) * 1000.0;
//!     let now = t0 + Duration::from_secs(60 * u64::from(m));
//!     mon.handle_reading("errors", now, SliReading::Events { bad: total * 0.05, total }).unwrap();
//! }
//! let fired: Vec<_> = std::iter::from_fn(|| mon.poll_event()).collect();
//! assert!(fired.iter().any(|e| matches!(e, SloEvent::BurnRateFiring(a) if a.factor == 14.4)));
//! ```

mod rules;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use rules::{RulesError, prometheus_rules};

use crate::{SliSource, SourceError};

/// What an SLI measures.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Sli {
    /// Bad events over total events, from two cumulative counters.
    Events {
        /// The counter of bad events (metric name, or a PromQL selector for Prometheus).
        bad: String,
        /// The counter of all events.
        total: String,
    },
    /// Time-slice: a second is bad when the latest interval's `quantile` of `histogram`
    /// exceeds `threshold` (in the histogram's unit).
    QuantileBelow {
        /// The histogram's metric name.
        histogram: String,
        /// The quantile, in (0, 1).
        quantile: f64,
        /// The largest good value.
        threshold: f64,
    },
}

impl Sli {
    /// An event-ratio SLI.
    pub fn events(bad: impl Into<String>, total: impl Into<String>) -> Self {
        Self::Events { bad: bad.into(), total: total.into() }
    }
    /// A time-slice quantile SLI.
    pub fn quantile_below(histogram: impl Into<String>, quantile: f64, threshold: f64) -> Self {
        Self::QuantileBelow { histogram: histogram.into(), quantile, threshold }
    }
}

/// One reading of an SLI from a source.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SliReading {
    /// Cumulative counters for [`Sli::Events`] (a drop is taken as a counter reset).
    Events {
        /// Bad events so far.
        bad: f64,
        /// All events so far.
        total: f64,
    },
    /// The latest interval's quantile for [`Sli::QuantileBelow`]; `None` when the interval
    /// held no values (the slice then counts as neither good nor bad).
    Quantile(Option<f64>),
}

/// A service-level objective: an SLI, the good fraction it must reach, over a rolling window.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    name: String,
    sli: Sli,
    objective: f64,
    window: Duration,
}

/// Why an SLO or a monitor call was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SloError {
    /// The objective is not strictly between 0 and 1.
    #[error("objective {0} is outside (0, 1)")]
    ObjectiveOutOfRange(f64),
    /// The window is zero.
    #[error("the SLO window is empty")]
    EmptyWindow,
    /// The name is empty or holds characters other than `[A-Za-z0-9_-]`.
    #[error("SLO name `{0}` must be non-empty [A-Za-z0-9_-]")]
    BadName(String),
    /// A metric name in the SLI is empty.
    #[error("the SLI names an empty metric")]
    EmptyMetric,
    /// The quantile is not strictly between 0 and 1.
    #[error("quantile {0} is outside (0, 1)")]
    QuantileOutOfRange(f64),
    /// The threshold is negative or not finite.
    #[error("threshold {0} must be finite and >= 0")]
    BadThreshold(f64),
    /// An SLO with this name is already monitored.
    #[error("SLO `{0}` already exists")]
    Duplicate(String),
    /// No SLO has this name.
    #[error("no SLO named `{0}`")]
    UnknownSlo(String),
    /// The reading's shape does not match the SLI, or holds negative/NaN numbers.
    #[error("reading does not fit SLO `{0}`")]
    BadReading(String),
    /// The reading is older than the SLO's latest one.
    #[error("reading for `{0}` goes back in time")]
    TimeWentBack(String),
    /// A burn-rate rule or budget threshold in the config is invalid.
    #[error("invalid monitor config: {0}")]
    BadConfig(&'static str),
}

impl Slo {
    /// An SLO, checked: `objective` in (0, 1), non-empty `window`, a `[A-Za-z0-9_-]` name.
    pub fn new(
        name: impl Into<String>,
        sli: Sli,
        objective: f64,
        window: Duration,
    ) -> Result<Self, SloError> {
        let name = name.into();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(SloError::BadName(name));
        }
        if !(objective > 0.0 && objective < 1.0) {
            return Err(SloError::ObjectiveOutOfRange(objective));
        }
        if window.is_zero() {
            return Err(SloError::EmptyWindow);
        }
        match &sli {
            Sli::Events { bad, total } => {
                if bad.is_empty() || total.is_empty() {
                    return Err(SloError::EmptyMetric);
                }
            }
            Sli::QuantileBelow { histogram, quantile, threshold } => {
                if histogram.is_empty() {
                    return Err(SloError::EmptyMetric);
                }
                if !(*quantile > 0.0 && *quantile < 1.0) {
                    return Err(SloError::QuantileOutOfRange(*quantile));
                }
                if !(threshold.is_finite() && *threshold >= 0.0) {
                    return Err(SloError::BadThreshold(*threshold));
                }
            }
        }
        Ok(Self { name, sli, objective, window })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The SLI.
    pub fn sli(&self) -> &Sli {
        &self.sli
    }
    /// The objective (good fraction), in (0, 1).
    pub fn objective(&self) -> f64 {
        self.objective
    }
    /// The rolling window.
    pub fn window(&self) -> Duration {
        self.window
    }
    /// The error budget: `1 - objective`.
    pub fn error_budget(&self) -> f64 {
        1.0 - self.objective
    }
}

/// Metric names the seed SLOs read.
pub mod names {
    /// Request round-trip latency histogram, seconds.
    pub const LATENCY_SECONDS: &str = "pvp_net_request_latency_seconds";
    /// Failed requests counter.
    pub const REQUESTS_FAILED: &str = "pvp_net_requests_failed_total";
    /// All requests counter.
    pub const REQUESTS_TOTAL: &str = "pvp_net_requests_total";
    /// Matchmaking wait histogram, seconds.
    pub const MATCHMAKING_WAIT_SECONDS: &str = "pvp_matchmaking_wait_seconds";
}

/// The seed's SLOs, each at 99.9 % over 30 days: latency p99 ≤ 20 ms, error rate ≤ 0.1 %,
/// matchmaking p95 ≤ 30 s (metric names in [`names`]).
pub fn seed_slos() -> Vec<Slo> {
    let window = Duration::from_secs(30 * 86_400);
    let mk = |name: &str, sli| Slo::new(name, sli, 0.999, window);
    [
        mk("latency-p99", Sli::quantile_below(names::LATENCY_SECONDS, 0.99, 0.020)),
        mk("error-rate", Sli::events(names::REQUESTS_FAILED, names::REQUESTS_TOTAL)),
        mk("matchmaking-p95", Sli::quantile_below(names::MATCHMAKING_WAIT_SECONDS, 0.95, 30.0)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// One multi-window burn-rate rule: fire when both windows burn at least `factor` times the
/// budget rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnRateRule {
    /// Burn-rate factor (14.4 means the 30-day budget is gone in ~2 days).
    pub factor: f64,
    /// The long window.
    pub long: Duration,
    /// The short window (it makes the alert reset quickly).
    pub short: Duration,
    /// Page (true) or ticket.
    pub page: bool,
}

impl BurnRateRule {
    /// The SRE workbook's four rules: 14.4× 1h/5m and 6× 6h/30m page; 3× 1d/2h and 1× 3d/6h
    /// open a ticket.
    pub fn workbook() -> Vec<BurnRateRule> {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let m = |n: u64| Duration::from_secs(n * 60);
        vec![
            BurnRateRule { factor: 14.4, long: h(1), short: m(5), page: true },
            BurnRateRule { factor: 6.0, long: h(6), short: m(30), page: true },
            BurnRateRule { factor: 3.0, long: h(24), short: h(2), page: false },
            BurnRateRule { factor: 1.0, long: h(72), short: h(6), page: false },
        ]
    }
}

/// How the monitor keeps history and when it alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// The burn-rate rules (default [`BurnRateRule::workbook`]).
    pub rules: Vec<BurnRateRule>,
    /// Remaining-budget fractions at which a [`SloEvent::BudgetThreshold`] fires, once per
    /// downward crossing (default 0.5, 0.25, 0.1, 0.0).
    pub budget_thresholds: Vec<f64>,
    /// History granularity (default 10 s): a reading less than this after the second-newest
    /// kept sample replaces the newest one, so kept samples lie about `resolution` apart and a
    /// window's start (the newest kept sample at or before it) may reach back up to this much
    /// further. `Duration::ZERO` keeps every reading.
    pub resolution: Duration,
    /// The most history samples kept per SLO; older ones are thinned out (default 4096).
    pub max_samples: usize,
    /// The most undrained events kept; older ones are dropped and counted (default 1024).
    pub max_events: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            rules: BurnRateRule::workbook(),
            budget_thresholds: vec![0.5, 0.25, 0.1, 0.0],
            resolution: Duration::from_secs(10),
            max_samples: 4096,
            max_events: 1024,
        }
    }
}

/// A burn-rate alert (fired or resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct BurnRateAlert {
    /// The SLO.
    pub slo: String,
    /// The rule's factor.
    pub factor: f64,
    /// The rule's long window.
    pub long_window: Duration,
    /// The rule's short window.
    pub short_window: Duration,
    /// The burn rate measured over the long window.
    pub long_burn: f64,
    /// The burn rate measured over the short window.
    pub short_burn: f64,
    /// Page (true) or ticket.
    pub page: bool,
}

/// Something the monitor wants someone to know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SloEvent {
    /// A burn-rate rule started firing.
    BurnRateFiring(BurnRateAlert),
    /// A burn-rate rule stopped firing.
    BurnRateResolved(BurnRateAlert),
    /// The remaining error budget fell to or below `threshold`.
    BudgetThreshold {
        /// The SLO.
        slo: String,
        /// The crossed threshold (fraction of budget remaining).
        threshold: f64,
        /// The remaining budget now.
        remaining: f64,
    },
    /// A reading failed; the SLO is evaluated on its last good data until a reading succeeds.
    SourceStale {
        /// The SLO.
        slo: String,
        /// Why.
        error: SourceError,
    },
    /// Readings succeed again after [`SloEvent::SourceStale`].
    SourceRecovered {
        /// The SLO.
        slo: String,
    },
}

/// Why an SLO's data is stale.
#[derive(Debug, Clone, PartialEq)]
pub struct Staleness {
    /// When the first failed reading happened.
    pub since: Instant,
    /// The latest failure.
    pub error: SourceError,
    /// Failed readings in a row.
    pub failures: u64,
}

/// An SLO's state at one instant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SloStatus {
    /// The SLO's name.
    pub slo: String,
    /// The error ratio over the SLO window (`None` before any event).
    pub error_ratio: Option<f64>,
    /// The fraction of the error budget left over the SLO window (1 = untouched, < 0 =
    /// overspent); `None` before any event.
    pub budget_remaining: Option<f64>,
    /// For each rule: (long-window burn, short-window burn), `None` without data.
    pub burn_rates: Vec<(Option<f64>, Option<f64>)>,
    /// The rules firing now.
    pub firing: Vec<BurnRateAlert>,
    /// How much history backs the numbers (capped at the SLO window).
    pub coverage: Duration,
    /// `Some` when the latest readings failed and these numbers come from the last good data.
    pub stale: Option<Staleness>,
}

/// Counters the monitor keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MonitorStats {
    /// Readings accepted.
    pub readings: u64,
    /// Readings refused (bad shape, going back in time).
    pub rejected_readings: u64,
    /// Source failures.
    pub source_errors: u64,
    /// Events emitted.
    pub events: u64,
    /// Events dropped because nobody drained the queue.
    pub dropped_events: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    bad: f64,
    total: f64,
}

type Callback = Box<dyn FnMut(&SloEvent) + Send>;

#[derive(Debug)]
struct SloState {
    slo: Slo,
    history: VecDeque<Sample>,
    last_raw: Option<(f64, f64)>,
    last_at: Option<Instant>,
    firing: Vec<Option<BurnRateAlert>>,
    budget_level: usize,
    stale: Option<Staleness>,
}

/// Watches SLOs: error budgets, burn-rate alerts, stale sources. Sans-IO: time comes in as
/// `now`.
pub struct SloMonitor {
    config: MonitorConfig,
    slos: Vec<SloState>,
    events: VecDeque<SloEvent>,
    callbacks: Vec<Callback>,
    stats: MonitorStats,
}

impl std::fmt::Debug for SloMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SloMonitor")
            .field("config", &self.config)
            .field("slos", &self.slos)
            .field("events", &self.events.len())
            .field("callbacks", &self.callbacks.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl SloMonitor {
    /// A monitor with no SLOs. Invalid rules (zero windows, non-positive or non-finite factors)
    /// and thresholds outside 0..=1 (or NaN) are dropped, `max_samples` is raised to at least 2
    /// and `max_events` to at least 1; use [`try_new`](Self::try_new) to get an error instead.
    pub fn new(mut config: MonitorConfig) -> Self {
        config.rules.retain(rule_ok);
        config.budget_thresholds.retain(|t| (0.0..=1.0).contains(t));
        Self::build(config)
    }

    /// A monitor with no SLOs, refusing an invalid config.
    pub fn try_new(config: MonitorConfig) -> Result<Self, SloError> {
        if !config.rules.iter().all(rule_ok) {
            return Err(SloError::BadConfig("burn-rate rule needs factor > 0 and non-zero windows"));
        }
        if !config.budget_thresholds.iter().all(|t| (0.0..=1.0).contains(t)) {
            return Err(SloError::BadConfig("budget thresholds must be within 0..=1"));
        }
        if config.max_samples < 2 || config.max_events == 0 {
            return Err(SloError::BadConfig("max_samples >= 2 and max_events >= 1"));
        }
        Ok(Self::build(config))
    }

    fn build(mut config: MonitorConfig) -> Self {
        config.budget_thresholds.sort_by(|a, b| b.total_cmp(a));
        config.budget_thresholds.dedup();
        config.max_samples = config.max_samples.max(2);
        config.max_events = config.max_events.max(1);
        Self {
            config,
            slos: Vec::new(),
            events: VecDeque::new(),
            callbacks: Vec::new(),
            stats: MonitorStats::default(),
        }
    }

    /// Starts monitoring `slo`.
    pub fn add_slo(&mut self, slo: Slo) -> Result<(), SloError> {
        if self.slos.iter().any(|s| s.slo.name == slo.name) {
            return Err(SloError::Duplicate(slo.name));
        }
        self.slos.push(SloState {
            firing: vec![None; self.config.rules.len()],
            slo,
            history: VecDeque::new(),
            last_raw: None,
            last_at: None,
            budget_level: 0,
            stale: None,
        });
        Ok(())
    }

    /// The monitored SLOs.
    pub fn slos(&self) -> impl Iterator<Item = &Slo> {
        self.slos.iter().map(|s| &s.slo)
    }

    /// The config in use.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Calls `f` for every event, as it happens (events are also queued for
    /// [`poll_event`](Self::poll_event)).
    pub fn on_event(&mut self, f: impl FnMut(&SloEvent) + Send + 'static) {
        self.callbacks.push(Box::new(f));
    }

    /// The next queued event.
    pub fn poll_event(&mut self) -> Option<SloEvent> {
        self.events.pop_front()
    }

    /// Counters about the monitor.
    pub fn stats(&self) -> MonitorStats {
        self.stats
    }

    fn emit(&mut self, e: SloEvent) {
        self.stats.events += 1;
        let kind = match &e {
            SloEvent::BurnRateFiring(_) => "burn_rate_firing",
            SloEvent::BurnRateResolved(_) => "burn_rate_resolved",
            SloEvent::BudgetThreshold { .. } => "budget_threshold",
            SloEvent::SourceStale { .. } => "source_stale",
            SloEvent::SourceRecovered { .. } => "source_recovered",
        };
        metrics::counter!("pvp_ops_slo_events_total", "kind" => kind).increment(1);
        for cb in &mut self.callbacks {
            cb(&e);
        }
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
            self.stats.dropped_events += 1;
        }
        self.events.push_back(e);
    }

    fn index(&self, slo: &str) -> Result<usize, SloError> {
        self.slos.iter().position(|s| s.slo.name == slo).ok_or_else(|| SloError::UnknownSlo(slo.to_string()))
    }

    /// Reads every SLO from `source` at `now` and handles the readings; a failed read marks
    /// that SLO stale (it keeps its last good data). Returns every SLO's status.
    pub fn evaluate(&mut self, now: Instant, source: &mut dyn SliSource) -> Vec<SloStatus> {
        for i in 0..self.slos.len() {
            let name = self.slos[i].slo.name.clone();
            match source.read_sli(&self.slos[i].slo.sli) {
                Ok(r) => {
                    let _ = self.handle_reading(&name, now, r);
                }
                Err(e) => {
                    let _ = self.handle_source_error(&name, now, e);
                }
            }
        }
        self.slos.iter().map(|s| status_of(&self.config, s, now)).collect()
    }

    /// Records that reading `slo` failed at `now`: its status says stale until the next good
    /// reading; alerts keep their state.
    pub fn handle_source_error(
        &mut self,
        slo: &str,
        now: Instant,
        error: SourceError,
    ) -> Result<(), SloError> {
        let i = self.index(slo)?;
        self.stats.source_errors += 1;
        let st = &mut self.slos[i];
        let first = st.stale.is_none();
        match &mut st.stale {
            Some(s) => {
                s.failures += 1;
                s.error = error.clone();
            }
            None => st.stale = Some(Staleness { since: now, error: error.clone(), failures: 1 }),
        }
        if first {
            self.emit(SloEvent::SourceStale { slo: slo.to_string(), error });
        }
        Ok(())
    }

    /// Feeds one reading of `slo` taken at `now`, then evaluates budget and burn-rate alerts.
    pub fn handle_reading(&mut self, slo: &str, now: Instant, reading: SliReading) -> Result<(), SloError> {
        let i = self.index(slo)?;
        let res = self.accept(i, now, reading);
        if res.is_err() {
            self.stats.rejected_readings += 1;
            return res;
        }
        self.stats.readings += 1;
        if self.slos[i].stale.take().is_some() {
            self.emit(SloEvent::SourceRecovered { slo: slo.to_string() });
        }
        self.check_alerts(i, now);
        Ok(())
    }

    fn accept(&mut self, i: usize, now: Instant, reading: SliReading) -> Result<(), SloError> {
        let config = &self.config;
        let st = &mut self.slos[i];
        let bad_reading = || SloError::BadReading(st.slo.name.clone());
        if st.last_at.is_some_and(|t| now < t) {
            return Err(SloError::TimeWentBack(st.slo.name.clone()));
        }
        let (dbad, dtotal) = match (&st.slo.sli, reading) {
            (Sli::Events { .. }, SliReading::Events { bad, total }) => {
                if !(bad.is_finite() && total.is_finite() && bad >= 0.0 && total >= bad) {
                    return Err(bad_reading());
                }
                let d = match st.last_raw {
                    None => (0.0, 0.0),
                    Some((lb, lt)) => {
                        // A counter that went down was reset: count from zero.
                        let db = if bad >= lb { bad - lb } else { bad };
                        let dt = if total >= lt { total - lt } else { total };
                        (db.min(dt), dt)
                    }
                };
                st.last_raw = Some((bad, total));
                d
            }
            (Sli::QuantileBelow { threshold, .. }, SliReading::Quantile(q)) => {
                if q.is_some_and(|v| v.is_nan() || v < 0.0) {
                    return Err(bad_reading());
                }
                let secs = st.last_at.map_or(0.0, |t| (now - t).as_secs_f64());
                match q {
                    None => (0.0, 0.0),
                    Some(v) if v > *threshold => (secs, secs),
                    Some(_) => (0.0, secs),
                }
            }
            _ => return Err(bad_reading()),
        };
        st.last_at = Some(now);
        let (bad, total) = st.history.back().map_or((0.0, 0.0), |s| (s.bad, s.total));
        let sample = Sample { at: now, bad: bad + dbad, total: total + dtotal };
        let n = st.history.len();
        if n >= 2 && now.duration_since(st.history[n - 2].at) < config.resolution {
            st.history[n - 1] = sample;
        } else {
            st.history.push_back(sample);
        }
        // Forget what lies beyond the longest window we ever look at (keep one older sample).
        let longest =
            config.rules.iter().map(|r| r.long).chain([st.slo.window]).max().unwrap_or(st.slo.window);
        while st.history.len() > 2 && now.duration_since(st.history[1].at) >= longest {
            st.history.pop_front();
        }
        if st.history.len() > config.max_samples {
            // Thin the older half: drop every other sample there.
            let half = st.history.len() / 2;
            let mut idx = 0usize;
            st.history.retain(|_| {
                let keep = idx == 0 || idx >= half || idx % 2 == 0;
                idx += 1;
                keep
            });
            // With a tiny cap the older half may hold nothing to drop: keep the oldest sample
            // (the windows' start) and drop the next ones so the cap always holds.
            while st.history.len() > config.max_samples && st.history.len() > 1 {
                st.history.remove(1);
            }
        }
        Ok(())
    }

    fn check_alerts(&mut self, i: usize, now: Instant) {
        let status = status_of(&self.config, &self.slos[i], now);
        let name = self.slos[i].slo.name.clone();
        let mut out = Vec::new();
        for (r, rule) in self.config.rules.iter().enumerate() {
            let (long, short) = status.burn_rates[r];
            let firing = matches!((long, short), (Some(l), Some(s)) if reaches(l, rule.factor) && reaches(s, rule.factor));
            let alert = BurnRateAlert {
                slo: name.clone(),
                factor: rule.factor,
                long_window: rule.long,
                short_window: rule.short,
                long_burn: long.unwrap_or(0.0),
                short_burn: short.unwrap_or(0.0),
                page: rule.page,
            };
            let was = &mut self.slos[i].firing[r];
            match (was.is_some(), firing) {
                (false, true) => {
                    *was = Some(alert.clone());
                    out.push(SloEvent::BurnRateFiring(alert));
                }
                (true, false) => {
                    *was = None;
                    out.push(SloEvent::BurnRateResolved(alert));
                }
                (true, true) => *was = Some(alert),
                (false, false) => {}
            }
        }
        if let Some(rem) = status.budget_remaining {
            let th = &self.config.budget_thresholds;
            let level = th.iter().take_while(|t| rem <= **t).count();
            let st = &mut self.slos[i];
            if level > st.budget_level {
                for t in &th[st.budget_level..level] {
                    out.push(SloEvent::BudgetThreshold { slo: name.clone(), threshold: *t, remaining: rem });
                }
            }
            st.budget_level = level;
        }
        for e in out {
            self.emit(e);
        }
    }

    /// The burn rate of `slo` over the `window` ending at `now` (error ratio / error budget),
    /// `None` without events in the window or for an unknown SLO. The window runs from the
    /// newest sample at or before `now - window` (a sample exactly at the start is the start;
    /// the oldest sample when history is shorter) to the newest sample at or before `now`.
    pub fn burn_rate(&self, slo: &str, window: Duration, now: Instant) -> Option<f64> {
        let st = self.slos.iter().find(|s| s.slo.name == slo)?;
        error_ratio(&st.history, window, now).map(|r| r / st.slo.error_budget())
    }

    /// The status of `slo` at `now`, `None` for an unknown SLO.
    pub fn status(&self, slo: &str, now: Instant) -> Option<SloStatus> {
        let st = self.slos.iter().find(|s| s.slo.name == slo)?;
        Some(status_of(&self.config, st, now))
    }
}

/// `burn >= factor`, forgiving float noise: `0.0144 / (1 - 0.999)` is 14.399999999999988.
fn reaches(burn: f64, factor: f64) -> bool {
    burn >= factor * (1.0 - 1e-9)
}

/// `1 - ratio / budget`, snapped to 0 when the budget is exactly spent (`0.001 / (1 - 0.999)`
/// is not 1 in floats, which would keep the 0 % threshold from firing).
fn remaining(ratio: f64, budget: f64) -> f64 {
    let r = 1.0 - ratio / budget;
    if r.abs() < 1e-9 { 0.0 } else { r }
}

fn rule_ok(r: &BurnRateRule) -> bool {
    r.factor > 0.0 && r.factor.is_finite() && !r.long.is_zero() && !r.short.is_zero()
}

/// The error ratio over `window` ending at `now`: uses the newest sample at or before
/// `now - window` as the start (or the oldest sample when history is shorter).
fn error_ratio(h: &VecDeque<Sample>, window: Duration, now: Instant) -> Option<f64> {
    let end_idx = h.partition_point(|s| s.at <= now).checked_sub(1)?;
    let end = h[end_idx];
    let start = match now.checked_sub(window) {
        Some(from) => {
            let p = h.partition_point(|s| s.at <= from);
            h[p.saturating_sub(1)]
        }
        None => h[0],
    };
    let total = end.total - start.total;
    (total > 0.0).then(|| ((end.bad - start.bad) / total).clamp(0.0, 1.0))
}

fn status_of(config: &MonitorConfig, st: &SloState, now: Instant) -> SloStatus {
    let budget = st.slo.error_budget();
    let burn = |w| error_ratio(&st.history, w, now).map(|r| r / budget);
    let ratio = error_ratio(&st.history, st.slo.window, now);
    let coverage =
        st.history.front().map_or(Duration::ZERO, |s| now.saturating_duration_since(s.at)).min(st.slo.window);
    SloStatus {
        slo: st.slo.name.clone(),
        error_ratio: ratio,
        budget_remaining: ratio.map(|r| remaining(r, budget)),
        burn_rates: config.rules.iter().map(|r| (burn(r.long), burn(r.short))).collect(),
        firing: st.firing.iter().flatten().cloned().collect(),
        coverage,
        stale: st.stale.clone(),
    }
}

/// The in-process [`MetricsRegistry`](crate::metrics::MetricsRegistry) as an [`SliSource`]:
/// event SLIs read the summed counters (a missing `bad` counter reads 0, a missing `total` is
/// [`SourceError::NoData`]); quantile SLIs read the quantile of the values recorded since the
/// previous read of the same histogram (HdrHistogram subtraction), `None` when there were none.
#[derive(Debug)]
pub struct RegistrySli {
    registry: crate::metrics::MetricsRegistry,
    last: std::collections::HashMap<String, crate::metrics::HistogramSnapshot>,
}

impl RegistrySli {
    /// A source over `registry`.
    pub fn new(registry: crate::metrics::MetricsRegistry) -> Self {
        Self { registry, last: std::collections::HashMap::new() }
    }
}

impl SliSource for RegistrySli {
    fn read_sli(&mut self, sli: &Sli) -> Result<SliReading, SourceError> {
        match sli {
            Sli::Events { bad, total } => {
                let t =
                    self.registry.counter_total(total).ok_or_else(|| SourceError::NoData(total.clone()))?;
                let b = self.registry.counter_total(bad).unwrap_or(0);
                Ok(SliReading::Events { bad: b as f64, total: t as f64 })
            }
            Sli::QuantileBelow { histogram, quantile, threshold } => {
                let Some(now) = self.registry.histogram(histogram) else {
                    return Ok(SliReading::Quantile(None));
                };
                // Per SLI, so two SLOs on one histogram each see every interval.
                let key = format!("{histogram}|{quantile}|{threshold}");
                let interval = match self.last.get(&key) {
                    Some(prev) => now.since(prev),
                    None => now.clone(),
                };
                self.last.insert(key, now);
                Ok(SliReading::Quantile(interval.quantile(*quantile)))
            }
        }
    }
}
