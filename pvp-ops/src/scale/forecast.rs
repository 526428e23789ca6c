use super::ScaleError;

/// Additive Holt-Winters (triple exponential smoothing) with one season.
///
/// The first full season initialises level and season; after that
/// [`forecast`](Self::forecast) is available. With one sample a minute, a daily season is
/// `period = 1440`.
#[derive(Debug, Clone)]
pub struct HoltWinters {
    alpha: f64,
    beta: f64,
    gamma: f64,
    period: usize,
    warmup: Vec<f64>,
    level: f64,
    trend: f64,
    season: Vec<f64>,
    /// Index in `season` of the next observation.
    pos: usize,
    ready: bool,
}

impl HoltWinters {
    /// A forecaster with smoothing factors `alpha` (level), `beta` (trend), `gamma` (season),
    /// each in [0, 1], and a season of `period` samples (>= 2).
    pub fn new(period: usize, alpha: f64, beta: f64, gamma: f64) -> Result<Self, ScaleError> {
        if period < 2 {
            return Err(ScaleError::InvalidConfig("season period must be >= 2"));
        }
        if ![alpha, beta, gamma].iter().all(|x| (0.0..=1.0).contains(x)) {
            return Err(ScaleError::InvalidConfig("smoothing factors must be within [0, 1]"));
        }
        Ok(Self {
            alpha,
            beta,
            gamma,
            period,
            warmup: Vec::new(),
            level: 0.0,
            trend: 0.0,
            season: Vec::new(),
            pos: 0,
            ready: false,
        })
    }

    /// Whether a full season has been seen (forecasts are available).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Adds the next observation. Non-finite values are ignored (returns false).
    pub fn observe(&mut self, x: f64) -> bool {
        if !x.is_finite() {
            return false;
        }
        if !self.ready {
            self.warmup.push(x);
            if self.warmup.len() == self.period {
                let mean = self.warmup.iter().sum::<f64>() / self.period as f64;
                self.level = mean;
                self.trend = 0.0;
                self.season = self.warmup.iter().map(|v| v - mean).collect();
                self.warmup = Vec::new();
                self.pos = 0;
                self.ready = true;
            }
            return true;
        }
        let s = self.season[self.pos];
        let prev_level = self.level;
        self.level = self.alpha * (x - s) + (1.0 - self.alpha) * (self.level + self.trend);
        self.trend = self.beta * (self.level - prev_level) + (1.0 - self.beta) * self.trend;
        self.season[self.pos] = self.gamma * (x - self.level) + (1.0 - self.gamma) * s;
        self.pos = (self.pos + 1) % self.period;
        true
    }

    /// The forecast `h` samples after the latest (`h >= 1`); `None` before a full season.
    pub fn forecast(&self, h: usize) -> Option<f64> {
        if !self.ready || h == 0 {
            return None;
        }
        // `h` may be huge: reduce it before adding so the index cannot overflow.
        let idx = (self.pos + (h - 1) % self.period) % self.period;
        Some(self.level + h as f64 * self.trend + self.season[idx])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_seasonal_pattern() {
        let mut hw = HoltWinters::new(24, 0.3, 0.01, 0.3).unwrap();
        let f = |i: usize| 100.0 + 50.0 * ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
        for i in 0..24 * 5 {
            hw.observe(f(i));
        }
        for h in 1..=6 {
            let want = f(24 * 5 + h - 1);
            let got = hw.forecast(h).unwrap();
            assert!((got - want).abs() < 2.0, "h={h} want {want} got {got}");
        }
    }
}
