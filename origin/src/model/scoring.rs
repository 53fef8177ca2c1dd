//! Golden-lead detection: a lead's behavioural signals → probability of closing, score, tier
//! and the reasons behind them. A logistic model over transformed features; the seed uses the
//! same model, so stored leads agree with what `POST /api/golden-leads/detect` answers.

use serde::{Deserialize, Serialize};

/// What we know about a lead's behaviour. Unknown fields and wrong types are rejected (422).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signals {
    /// Marketing emails opened.
    pub email_opens: u32,
    /// Links clicked in those emails.
    pub email_clicks: u32,
    /// Pages of the product site viewed.
    pub page_views: u32,
    /// Visits to the pricing page.
    pub pricing_page_views: u32,
    /// Whether the lead asked for a demo.
    pub demo_requested: bool,
    /// Whether the lead runs a trial now.
    pub trial_active: bool,
    /// Employees at the lead's company.
    pub company_size: u32,
    /// The lead's stated annual budget, in dollars.
    pub annual_budget: f64,
    /// Days since the last recorded activity.
    pub days_since_last_activity: u32,
    /// Support tickets opened during the trial.
    pub support_tickets: u32,
    /// The lead's industry.
    pub industry: Industry,
}

/// Industries the model knows; they shift the base rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Industry {
    /// Software and internet.
    Software,
    /// Banks, insurers, fintech.
    Finance,
    /// Hospitals, clinics, health tech.
    Healthcare,
    /// Shops and e-commerce.
    Retail,
    /// Schools and universities.
    Education,
    /// Anything else.
    Other,
}

impl Industry {
    /// Every industry, for the seed.
    pub const ALL: [Self; 6] =
        [Self::Software, Self::Finance, Self::Healthcare, Self::Retail, Self::Education, Self::Other];

    fn weight(self) -> f64 {
        match self {
            Self::Software => 0.35,
            Self::Finance => 0.25,
            Self::Healthcare => 0.1,
            Self::Retail => -0.1,
            Self::Education => -0.25,
            Self::Other => 0.0,
        }
    }
}

/// A lead's tier, by probability of closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Probability ≥ 0.8.
    Platinum,
    /// Probability ≥ 0.6.
    Gold,
    /// Probability ≥ 0.35.
    Silver,
    /// Below.
    Bronze,
}

impl Tier {
    /// The tier of `probability`.
    pub fn of(probability: f64) -> Self {
        if probability >= 0.8 {
            Self::Platinum
        } else if probability >= 0.6 {
            Self::Gold
        } else if probability >= 0.35 {
            Self::Silver
        } else {
            Self::Bronze
        }
    }

    /// The name stored in the database and used in query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platinum => "platinum",
            Self::Gold => "gold",
            Self::Silver => "silver",
            Self::Bronze => "bronze",
        }
    }

    /// Parses a stored or requested tier name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "platinum" => Some(Self::Platinum),
            "gold" => Some(Self::Gold),
            "silver" => Some(Self::Silver),
            "bronze" => Some(Self::Bronze),
            _ => None,
        }
    }
}

/// One feature's contribution to the log-odds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// The feature.
    pub feature: &'static str,
    /// Its contribution to the log-odds (positive helps).
    pub impact: f64,
}

/// The model's verdict on a lead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Probability of closing, 0..1.
    pub probability: f64,
    /// Score 0..100: probability weighted by the deal's size and freshness.
    pub score: f64,
    /// Tier by probability.
    pub tier: Tier,
    /// Whether the lead is golden (gold or platinum).
    pub golden: bool,
    /// The features that moved the verdict most, strongest first.
    pub reasons: Vec<Reason>,
}

/// Model intercept (log-odds of a lead with no signals).
const INTERCEPT: f64 = -3.2;

/// Scores `signals`.
pub fn detect(signals: &Signals) -> Detection {
    let contributions = features(signals, &Curves::of(signals));
    let log_odds = INTERCEPT + contributions.iter().map(|(_, v)| v).sum::<f64>();
    let probability = 1.0 / (1.0 + (-log_odds).exp());
    let size = (f64::from(signals.company_size.max(1))).log10() / 5.0;
    let budget = (signals.annual_budget.max(1.0)).log10() / 7.0;
    let freshness = (-f64::from(signals.days_since_last_activity) / 30.0).exp();
    let fit = (0.4 * size.min(1.0) + 0.4 * budget.min(1.0) + 0.2 * freshness).clamp(0.0, 1.0);
    let score = round2(100.0 * probability * (0.6 + 0.4 * fit));
    let mut reasons: Vec<Reason> = contributions
        .into_iter()
        .filter(|(_, v)| v.abs() >= 0.05)
        .map(|(feature, impact)| Reason { feature, impact: round2(impact) })
        .collect();
    reasons.sort_by(|a, b| b.impact.abs().total_cmp(&a.impact.abs()));
    reasons.truncate(5);
    let tier = Tier::of(probability);
    Detection {
        probability: round4(probability),
        score,
        tier,
        golden: matches!(tier, Tier::Platinum | Tier::Gold),
        reasons,
    }
}

/// The probability alone: no reasons, no allocation.
pub fn detect_probability(signals: &Signals) -> f64 {
    probability_with(signals, &Curves::of(signals))
}

/// The probability from `signals` and their [`Curves`] (the forecast's inner loop, which looks
/// the curves up). The same arithmetic in the same order as [`detect`], so the same bits.
pub fn probability_with(signals: &Signals, curves: &Curves) -> f64 {
    let log_odds = INTERCEPT + features(signals, curves).iter().map(|(_, v)| v).sum::<f64>();
    1.0 / (1.0 + (-log_odds).exp())
}

/// The logarithms and the decay the features are made of: the costly part of a score. A
/// forecast scores thousands of variants of one lead whose counts take few distinct values,
/// so it looks them up instead of computing each again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curves {
    /// [`count_curve`] of the emails opened.
    pub email_opens: f64,
    /// [`count_curve`] of the pages viewed.
    pub page_views: f64,
    /// [`count_curve`] of the pricing page visits.
    pub pricing_page_views: f64,
    /// [`count_curve`] of the support tickets beyond the first three.
    pub extra_support_tickets: f64,
    /// Natural logarithm of the employees (at least one).
    pub company_size: f64,
    /// Decimal logarithm of the budget (at least one dollar).
    pub budget: f64,
    /// [`recency_curve`] of the days since the last activity.
    pub recency: f64,
}

impl Curves {
    /// Computes every curve for `s`.
    pub fn of(s: &Signals) -> Self {
        Self {
            email_opens: count_curve(s.email_opens),
            page_views: count_curve(s.page_views),
            pricing_page_views: count_curve(s.pricing_page_views),
            extra_support_tickets: count_curve(s.support_tickets.saturating_sub(3)),
            company_size: f64::from(s.company_size.max(1)).ln(),
            budget: s.annual_budget.max(1.0).log10(),
            recency: recency_curve(s.days_since_last_activity),
        }
    }
}

/// How a count weighs: `ln(1 + n)`, so the first touches count most.
pub fn count_curve(n: u32) -> f64 {
    f64::from(n).ln_1p()
}

/// How recency weighs: decays by `e` every two weeks.
pub fn recency_curve(days: u32) -> f64 {
    (-f64::from(days) / 14.0).exp()
}

/// Each feature's contribution to the log-odds.
fn features(s: &Signals, c: &Curves) -> [(&'static str, f64); 10] {
    let click_rate = if s.email_opens == 0 {
        0.0
    } else {
        f64::from(s.email_clicks.min(s.email_opens)) / f64::from(s.email_opens)
    };
    [
        ("email_engagement", 0.35 * c.email_opens + 1.2 * click_rate),
        ("page_views", 0.3 * c.page_views),
        ("pricing_interest", 0.55 * c.pricing_page_views),
        ("demo_requested", if s.demo_requested { 1.4 } else { 0.0 }),
        ("trial_active", if s.trial_active { 0.9 } else { 0.0 }),
        ("company_size", 0.18 * c.company_size - 0.4),
        ("budget", 0.25 * c.budget - 0.9),
        ("recency", 1.1 * c.recency - 0.6),
        ("support_tickets", -0.2 * c.extra_support_tickets),
        ("industry", s.industry.weight()),
    ]
}

/// Rounds to two decimals (scores, impacts).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Rounds to four decimals (probabilities).
pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Checks ranges serde cannot: a finite, non-negative budget.
pub fn validate(signals: &Signals) -> Result<(), &'static str> {
    if !signals.annual_budget.is_finite() || signals.annual_budget < 0.0 {
        return Err("annual_budget must be a finite, non-negative number");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold() -> Signals {
        Signals {
            email_opens: 0,
            email_clicks: 0,
            page_views: 1,
            pricing_page_views: 0,
            demo_requested: false,
            trial_active: false,
            company_size: 5,
            annual_budget: 1_000.0,
            days_since_last_activity: 90,
            support_tickets: 0,
            industry: Industry::Education,
        }
    }

    fn hot() -> Signals {
        Signals {
            email_opens: 40,
            email_clicks: 18,
            page_views: 120,
            pricing_page_views: 12,
            demo_requested: true,
            trial_active: true,
            company_size: 800,
            annual_budget: 250_000.0,
            days_since_last_activity: 1,
            support_tickets: 2,
            industry: Industry::Software,
        }
    }

    #[test]
    fn engaged_leads_score_higher_and_are_golden() {
        let (cold, hot) = (detect(&cold()), detect(&hot()));
        assert!(hot.probability > 0.8, "{hot:?}");
        assert_eq!(hot.tier, Tier::Platinum);
        assert!(hot.golden);
        assert!(cold.probability < 0.1, "{cold:?}");
        assert_eq!(cold.tier, Tier::Bronze);
        assert!(hot.score > cold.score);
        assert!(hot.reasons.iter().any(|r| r.feature == "demo_requested"), "{hot:?}");
    }

    #[test]
    fn a_demo_request_raises_the_probability() {
        let mut signals = cold();
        let before = detect(&signals).probability;
        signals.demo_requested = true;
        assert!(detect(&signals).probability > before);
    }
}
