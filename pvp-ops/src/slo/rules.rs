//! Export of SLOs as Prometheus recording and alerting rules, shaped as Sloth generates them.

use std::fmt::Write as _;
use std::time::Duration;

use super::{BurnRateRule, Sli, Slo};

/// Why rules could not be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// A window is not a whole number of seconds (PromQL durations are).
    #[error("window {0:?} is not a whole number of seconds")]
    FractionalWindow(Duration),
    /// No burn-rate rules were given.
    #[error("no burn-rate rules")]
    NoRules,
}

fn prom_duration(d: Duration) -> Result<String, RulesError> {
    if d.subsec_nanos() != 0 || d.is_zero() {
        return Err(RulesError::FractionalWindow(d));
    }
    let s = d.as_secs();
    Ok(if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    })
}

/// A YAML double-quoted scalar (JSON string escaping is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The PromQL error ratio of `sli` over `w` (a PromQL duration).
fn error_ratio_expr(sli: &Sli, w: &str) -> String {
    match sli {
        Sli::Events { bad, total } => {
            format!("(sum(rate({bad}[{w}])) or vector(0)) / sum(rate({total}[{w}]))")
        }
        Sli::QuantileBelow { histogram, quantile, threshold } => format!(
            "avg_over_time((histogram_quantile({quantile}, sum by (le) (rate({histogram}_bucket[1m]))) > bool {threshold})[{w}:30s])"
        ),
    }
}

/// Prometheus rule groups (YAML) for `slos`: per SLO, recording rules
/// `slo:sli_error:ratio_rate<window>` for every window `rules` use plus the SLO window,
/// `slo:error_budget:ratio`, `slo:current_burn_rate:ratio` and `slo:period_error_budget_remaining:ratio`,
/// and two multi-window multi-burn-rate alerts (`<Slo>PageBurnRate` with `severity: page`,
/// `<Slo>TicketBurnRate` with `severity: ticket`), as Sloth does, except that a rule fires at
/// `>=` its factor (as [`SloMonitor`](super::SloMonitor) does) where Sloth uses `>`. `promtool check rules`
/// accepts the output.
pub fn prometheus_rules(service: &str, slos: &[Slo], rules: &[BurnRateRule]) -> Result<String, RulesError> {
    if rules.is_empty() {
        return Err(RulesError::NoRules);
    }
    let mut y = String::from("groups:\n");
    for slo in slos {
        let name = slo.name();
        let sel = format!("{{service=\"{}\", slo=\"{}\"}}", esc(service), esc(name));
        let mut windows: Vec<Duration> =
            rules.iter().flat_map(|r| [r.short, r.long]).chain([slo.window()]).collect();
        windows.sort();
        windows.dedup();
        let budget = format!("(1 - {})", slo.objective());

        let _ = writeln!(y, "- name: {}", q(&format!("pvp-slo-sli-recordings-{service}-{name}")));
        y.push_str("  rules:\n");
        let short_most = windows[0];
        let short_most_s = prom_duration(short_most)?;
        for w in &windows {
            let ws = prom_duration(*w)?;
            let expr = if *w == slo.window() && *w > Duration::from_secs(3 * 86_400) {
                // Long periods come from the shortest recording, as Sloth does.
                format!(
                    "sum_over_time(slo:sli_error:ratio_rate{short_most_s}{sel}[{ws}]) / count_over_time(slo:sli_error:ratio_rate{short_most_s}{sel}[{ws}])"
                )
            } else {
                error_ratio_expr(slo.sli(), &ws)
            };
            record(&mut y, &format!("slo:sli_error:ratio_rate{ws}"), &expr, service, name, Some(&ws));
        }
        let _ = writeln!(y, "- name: {}", q(&format!("pvp-slo-meta-recordings-{service}-{name}")));
        y.push_str("  rules:\n");
        record(&mut y, "slo:objective:ratio", &format!("vector({})", slo.objective()), service, name, None);
        record(&mut y, "slo:error_budget:ratio", &format!("vector{budget}"), service, name, None);
        record(
            &mut y,
            "slo:current_burn_rate:ratio",
            &format!(
                "slo:sli_error:ratio_rate{short_most_s}{sel} / on(service, slo) group_left slo:error_budget:ratio{sel}"
            ),
            service,
            name,
            None,
        );
        let period = prom_duration(slo.window())?;
        record(
            &mut y,
            "slo:period_error_budget_remaining:ratio",
            &format!(
                "1 - slo:sli_error:ratio_rate{period}{sel} / on(service, slo) group_left slo:error_budget:ratio{sel}"
            ),
            service,
            name,
            None,
        );

        let _ = writeln!(y, "- name: {}", q(&format!("pvp-slo-alerts-{service}-{name}")));
        y.push_str("  rules:\n");
        for (page, sev) in [(true, "page"), (false, "ticket")] {
            let mut parts = Vec::new();
            for r in rules.iter().filter(|r| r.page == page) {
                let (l, s) = (prom_duration(r.long)?, prom_duration(r.short)?);
                parts.push(format!(
                    "(slo:sli_error:ratio_rate{l}{sel} >= ({f} * {budget}) and ignoring(window) slo:sli_error:ratio_rate{s}{sel} >= ({f} * {budget}))",
                    f = r.factor
                ));
            }
            if parts.is_empty() {
                continue;
            }
            let alert = format!("{}{}BurnRate", camel(name), if page { "Page" } else { "Ticket" });
            let _ = writeln!(y, "  - alert: {}", q(&alert));
            let _ = writeln!(y, "    expr: {}", q(&parts.join(" or ")));
            y.push_str("    labels:\n");
            let _ = writeln!(y, "      severity: {}", q(sev));
            let _ = writeln!(y, "      service: {}", q(service));
            let _ = writeln!(y, "      slo: {}", q(name));
            y.push_str("    annotations:\n");
            let _ = writeln!(
                y,
                "      summary: {}",
                q(&format!("{service} SLO {name} error budget burn rate is too high ({sev})"))
            );
        }
    }
    Ok(y)
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn camel(s: &str) -> String {
    s.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

fn record(y: &mut String, record: &str, expr: &str, service: &str, slo: &str, window: Option<&str>) {
    let _ = writeln!(y, "  - record: {}", q(record));
    let _ = writeln!(y, "    expr: {}", q(expr));
    y.push_str("    labels:\n");
    let _ = writeln!(y, "      service: {}", q(service));
    let _ = writeln!(y, "      slo: {}", q(slo));
    if let Some(w) = window {
        let _ = writeln!(y, "      window: {}", q(w));
    }
}
