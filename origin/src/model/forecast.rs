//! The predictive score of a lead: a Monte Carlo over noisy versions of its signals (the
//! "heavy" endpoint), combined with its contact's price history and earlier predictions into
//! an interval, an expected deal value, a trend and plain-language insights.

use serde::Serialize;

use super::price::PricePoint;
use super::scoring::{self, Signals, round2, round4};

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
    let mut rng = fastrand::Rng::with_seed(lead_id.unsigned_abs() ^ 0x5eed_f0ca_57ed);
    let mut samples: Vec<f64> =
        (0..SIMULATIONS).map(|_| scoring::detect_probability(&perturb(signals, &mut rng))).collect();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let interval = Interval { p10: round4(at(0.1)), p50: round4(at(0.5)), p90: round4(at(0.9)) };

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

/// A plausible variant of `signals`: counts ±25 %, recency ±3 days.
fn perturb(signals: &Signals, rng: &mut fastrand::Rng) -> Signals {
    let mut noisy = |n: u32| -> u32 { (f64::from(n) * (0.75 + 0.5 * rng.f64())).round() as u32 };
    let mut s = signals.clone();
    s.email_opens = noisy(s.email_opens);
    s.email_clicks = noisy(s.email_clicks);
    s.page_views = noisy(s.page_views);
    s.pricing_page_views = noisy(s.pricing_page_views);
    s.support_tickets = noisy(s.support_tickets);
    s.days_since_last_activity = s.days_since_last_activity.saturating_add(rng.u32(0..7)).saturating_sub(3);
    s
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
