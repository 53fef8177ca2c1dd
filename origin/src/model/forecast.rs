//! The predictive score of a lead: a Monte Carlo over noisy versions of its signals (the
//! "heavy" endpoint), combined with its contact's price history and earlier predictions into
//! an interval, an expected deal value, a trend and plain-language insights.

use serde::Serialize;

use super::price::PricePoint;
use super::scoring::{self, Curves, Signals, round2, round4};

/// The model version written next to stored predictions.
pub const MODEL_VERSION: &str = "mc-2";

/// Simulated variants of the lead per forecast.
pub const SIMULATIONS: usize = 20_000;

/// The forecast for one lead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// The model version.
    pub model_version: &'static str,
    /// Probability of closing from the signals as recorded.
    pub probability: f64,
    /// 10th, 50th and 90th percentile of the simulated probabilities.
    pub interval: Interval,
    /// Predictive score 0..100.
    pub score: f64,
    /// Expected deal value, in dollars (mean probability × deal size).
    pub expected_value: f64,
    /// Estimated days until the deal closes.
    pub expected_days_to_close: f64,
    /// Conversion rate below the median price minus above it (positive = price sensitive);
    /// absent without enough history.
    pub price_sensitivity: Option<f64>,
    /// Score now minus the mean of earlier predictions; absent without any.
    pub trend: Option<f64>,
    /// What a salesperson should know.
    pub insights: Vec<String>,
}

/// Percentiles of the simulated probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
}

/// Forecasts lead `lead_id` (its id seeds the simulation, so answers are repeatable) from its
/// `signals`, its contact's `history` and the scores of `previous` predictions.
pub fn forecast(lead_id: i64, signals: &Signals, history: &[PricePoint], previous: &[f64]) -> Forecast {
    let detection = scoring::detect(signals);
    let mut samples = simulate(lead_id, signals);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let [p10, p50, p90] = percentiles(&mut samples, [0.1, 0.5, 0.9]);
    let interval = Interval { p10: round4(p10), p50: round4(p50), p90: round4(p90) };

    let deal_size = if history.is_empty() {
        signals.annual_budget * 0.5
    } else {
        12.0 * history.iter().map(|p| p.price).sum::<f64>() / history.len() as f64
    };
    let price_sensitivity = sensitivity(history);
    let trend = (!previous.is_empty())
        .then(|| round2(detection.score - previous.iter().sum::<f64>() / previous.len() as f64));
    let expected_days_to_close =
        round2(14.0 + 120.0 * (1.0 - mean) + f64::from(signals.days_since_last_activity));
    let mut insights = Vec::new();
    if signals.demo_requested && signals.days_since_last_activity > 14 {
        insights.push(format!(
            "asked for a demo but silent for {} days: follow up now",
            signals.days_since_last_activity
        ));
    }
    if signals.pricing_page_views >= 5 && !signals.trial_active {
        insights.push("studies the pricing page without a trial: offer one".to_owned());
    }
    if signals.support_tickets > 5 {
        insights.push(format!("{} support tickets: check the onboarding", signals.support_tickets));
    }
    if let Some(s) = price_sensitivity.filter(|s| *s > 0.15) {
        insights.push(format!(
            "converts {:.0} points more often below the median price: lead with a discount",
            s * 100.0
        ));
    }
    if interval.p90 - interval.p10 > 0.3 {
        insights.push("wide uncertainty: one more touchpoint would firm up the score".to_owned());
    }
    match trend {
        Some(t) if t >= 5.0 => insights.push(format!("warming up: +{t:.1} points since earlier predictions")),
        Some(t) if t <= -5.0 => {
            insights.push(format!("cooling down: {t:.1} points since earlier predictions"))
        }
        _ => {}
    }
    Forecast {
        model_version: MODEL_VERSION,
        probability: detection.probability,
        interval,
        score: detection.score,
        expected_value: round2(mean * deal_size),
        expected_days_to_close,
        price_sensitivity: price_sensitivity.map(round4),
        trend,
        insights,
    }
}

/// The probability of each of [`SIMULATIONS`] variants of the lead, in the order drawn.
fn simulate(lead_id: i64, signals: &Signals) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(lead_id.unsigned_abs() ^ 0x5eed_f0ca_57ed);
    let curves = VariantCurves::new(signals);
    (0..SIMULATIONS)
        .map(|_| {
            let variant = perturb(signals, &mut rng);
            scoring::probability_with(&variant, &curves.of(&variant))
        })
        .collect()
}

/// The `quantiles` (ascending) of `samples`, nearest rank, without sorting them all: each is
/// selected among the samples above the one before it. The samples are left reordered.
fn percentiles<const N: usize>(samples: &mut [f64], quantiles: [f64; N]) -> [f64; N] {
    let last = samples.len().saturating_sub(1);
    let mut from = 0;
    quantiles.map(|q| {
        let rank = ((last as f64 * q).round() as usize).max(from);
        let (_, value, _) = samples[from..].select_nth_unstable_by(rank - from, f64::total_cmp);
        let value = *value;
        from = rank;
        value
    })
}

/// Longest table of a curve; counts beyond it are computed when drawn.
const MAX_TABLE: u32 = 4096;

/// The curves of one lead's variants. A variant's counts stay within 25 % of the lead's and its
/// recency within 3 days, so their logarithms and decays are computed once per value, not
/// once per variant; size and budget do not vary at all.
struct VariantCurves {
    counts: Table,
    recency: Table,
    lead: Curves,
}

impl VariantCurves {
    fn new(s: &Signals) -> Self {
        let most = [s.email_opens, s.page_views, s.pricing_page_views, s.support_tickets]
            .into_iter()
            .max()
            .unwrap_or(0);
        let days = s.days_since_last_activity;
        Self {
            counts: Table::new(0, most.saturating_add(most / 4 + 1), scoring::count_curve),
            recency: Table::new(days.saturating_sub(3), days.saturating_add(3), scoring::recency_curve),
            lead: Curves::of(s),
        }
    }

    /// The curves of `variant`, the same values [`Curves::of`] computes.
    fn of(&self, variant: &Signals) -> Curves {
        Curves {
            email_opens: self.counts.get(variant.email_opens),
            page_views: self.counts.get(variant.page_views),
            pricing_page_views: self.counts.get(variant.pricing_page_views),
            extra_support_tickets: self.counts.get(variant.support_tickets.saturating_sub(3)),
            company_size: self.lead.company_size,
            budget: self.lead.budget,
            recency: self.recency.get(variant.days_since_last_activity),
        }
    }
}

/// `curve` of the values `first..=last` (at most [`MAX_TABLE`] of them), computed up front.
struct Table {
    first: u32,
    values: Vec<f64>,
    curve: fn(u32) -> f64,
}

impl Table {
    fn new(first: u32, last: u32, curve: fn(u32) -> f64) -> Self {
        let last = last.min(first.saturating_add(MAX_TABLE - 1));
        Self { first, values: (first..=last).map(curve).collect(), curve }
    }

    fn get(&self, n: u32) -> f64 {
        let index = n.checked_sub(self.first).and_then(|i| self.values.get(i as usize));
        index.copied().unwrap_or_else(|| (self.curve)(n))
    }
}

/// A plausible variant of `signals`: counts ±25 %, recency ±3 days.
fn perturb(signals: &Signals, rng: &mut fastrand::Rng) -> Signals {
    let mut noisy = |n: u32| -> u32 { round_to_u32(f64::from(n) * (0.75 + 0.5 * rng.f64())) };
    let mut s = signals.clone();
    s.email_opens = noisy(s.email_opens);
    s.email_clicks = noisy(s.email_clicks);
    s.page_views = noisy(s.page_views);
    s.pricing_page_views = noisy(s.pricing_page_views);
    s.support_tickets = noisy(s.support_tickets);
    s.days_since_last_activity = s.days_since_last_activity.saturating_add(rng.u32(0..7)).saturating_sub(3);
    s
}

/// `x.round() as u32` for `0 <= x < 2^52`, bit for bit, without the library call that
/// `round` is on baseline x86-64 (a fifth of the simulation's time).
fn round_to_u32(x: f64) -> u32 {
    let whole = x as u64;
    // Exact: `whole` is within a factor of two of `x` (or zero).
    let up = x - whole as f64 >= 0.5;
    u32::try_from(whole + u64::from(up)).unwrap_or(u32::MAX)
}

/// Conversion rate below the median price minus above it; `None` under 8 points.
fn sensitivity(history: &[PricePoint]) -> Option<f64> {
    if history.len() < 8 {
        return None;
    }
    let mut prices: Vec<f64> = history.iter().map(|p| p.price).collect();
    prices.sort_by(f64::total_cmp);
    let median = prices[prices.len() / 2];
    let rate = |below: bool| {
        let side: Vec<_> = history.iter().filter(|p| (p.price < median) == below).collect();
        if side.is_empty() {
            0.0
        } else {
            side.iter().filter(|p| p.converted).count() as f64 / side.len() as f64
        }
    };
    Some(rate(true) - rate(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::scoring::Industry;

    fn signals() -> Signals {
        Signals {
            email_opens: 10,
            email_clicks: 3,
            page_views: 30,
            pricing_page_views: 6,
            demo_requested: true,
            trial_active: false,
            company_size: 120,
            annual_budget: 60_000.0,
            days_since_last_activity: 20,
            support_tickets: 0,
            industry: Industry::Finance,
        }
    }

    #[test]
    fn forecasts_are_repeatable_and_ordered() {
        let a = forecast(7, &signals(), &[], &[]);
        assert_eq!(a, forecast(7, &signals(), &[], &[]));
        assert!(a.interval.p10 <= a.interval.p50 && a.interval.p50 <= a.interval.p90);
        assert!(a.trend.is_none());
        assert!(a.insights.iter().any(|i| i.contains("follow up")), "{:?}", a.insights);
    }

    #[test]
    fn looked_up_curves_give_the_same_probabilities_as_computed_ones() {
        let leads = [
            signals(),
            Signals { email_opens: 0, support_tickets: 9, days_since_last_activity: 1, ..signals() },
            // Counts beyond the longest table are computed when drawn.
            Signals { page_views: 90_000, days_since_last_activity: u32::MAX - 1, ..signals() },
        ];
        for (lead_id, lead) in leads.iter().enumerate() {
            let mut rng = fastrand::Rng::with_seed(lead_id as u64 ^ 0x5eed_f0ca_57ed);
            let expected: Vec<u64> = (0..SIMULATIONS)
                .map(|_| scoring::detect_probability(&perturb(lead, &mut rng)).to_bits())
                .collect();
            let simulated: Vec<u64> = simulate(lead_id as i64, lead).into_iter().map(f64::to_bits).collect();
            assert!(simulated == expected, "lead {lead_id}: the simulation drifted from detect");
        }
    }

    #[test]
    fn percentiles_are_the_nearest_ranks_of_the_sorted_samples() {
        let mut rng = fastrand::Rng::with_seed(3);
        for len in [1, 2, 10, 101, 5000] {
            let samples: Vec<f64> = (0..len).map(|_| (rng.f64() * 20.0).round() / 20.0).collect();
            let mut sorted = samples.clone();
            sorted.sort_by(f64::total_cmp);
            let at = |q: f64| sorted[((len - 1) as f64 * q).round() as usize];
            let mut shuffled = samples;
            let got = percentiles(&mut shuffled, [0.1, 0.5, 0.9]);
            assert_eq!(got, [at(0.1), at(0.5), at(0.9)], "{len} samples");
        }
    }

    #[test]
    fn rounding_to_u32_matches_the_library_round() {
        let mut rng = fastrand::Rng::with_seed(11);
        let edges = [0.0, 0.5, 1.5, 2.5, 0.49999999999999994, 4.499999999999999, 1e9 + 0.5, 5.4e9];
        let drawn = (0..100_000).map(|i| f64::from(i % 4000) * (0.75 + 0.5 * rng.f64()));
        for x in edges.into_iter().chain(drawn) {
            assert_eq!(round_to_u32(x), x.round() as u32, "{x:?}");
        }
    }

    #[test]
    fn cheap_conversions_show_price_sensitivity() {
        let history: Vec<_> = (0..20)
            .map(|i| PricePoint {
                price: 80.0 + f64::from(i) * 2.0,
                demand: 1.0,
                converted: i < 10,
                recorded_at: 0,
            })
            .collect();
        let f = forecast(1, &signals(), &history, &[10.0]);
        assert!(f.price_sensitivity.is_some_and(|s| s > 0.9), "{f:?}");
        assert!(f.trend.is_some());
    }
}
