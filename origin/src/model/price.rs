//! Dynamic pricing: a contact's price history at a location → today's price.

use serde::Serialize;

use super::scoring::round2;

/// One recorded price point.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PricePoint {
    /// The price offered, in dollars.
    pub price: f64,
    /// The demand index when it was offered (1.0 = normal).
    pub demand: f64,
    /// Whether the offer converted.
    pub converted: bool,
    /// When, in unix seconds.
    pub recorded_at: i64,
}

/// Price with no history at all, in dollars.
pub const LIST_PRICE: f64 = 100.0;

/// Locations the seed uses, with their price level relative to the list price.
pub const LOCATIONS: [(&str, f64); 6] = [
    ("new-york", 1.25),
    ("san-francisco", 1.3),
    ("london", 1.2),
    ("berlin", 1.05),
    ("austin", 1.0),
    ("remote", 0.9),
];

/// The price level of `location` (1.0 for unknown places).
pub fn location_factor(location: &str) -> f64 {
    LOCATIONS.iter().find(|(name, _)| *name == location).map_or(1.0, |(_, f)| *f)
}

/// Today's price for a contact at a location.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quote {
    /// The recommended price, in dollars.
    pub price: f64,
    /// The median of recent prices (or the list price scaled by location), in dollars.
    pub base_price: f64,
    /// Recent demand index (1.0 = normal).
    pub demand_factor: f64,
    /// Share of recent offers that converted.
    pub conversion_rate: f64,
    /// Price points the quote rests on.
    pub points: usize,
    /// 0..1: how much history backs the quote.
    pub confidence: f64,
}

/// Quotes from `history` (newest first, at the requested location), scaled by `scale` when the
/// history comes from another location.
pub fn quote(history: &[PricePoint], scale: f64) -> Quote {
    let recent = &history[..history.len().min(30)];
    let base_price = if recent.is_empty() {
        LIST_PRICE * scale
    } else {
        let mut prices: Vec<f64> = recent.iter().map(|p| p.price).collect();
        prices.sort_by(f64::total_cmp);
        median(&prices) * scale
    };
    let latest = &history[..history.len().min(10)];
    let demand_factor = if latest.is_empty() {
        1.0
    } else {
        latest.iter().map(|p| p.demand).sum::<f64>() / latest.len() as f64
    };
    let window = &history[..history.len().min(50)];
    let conversion_rate = if window.is_empty() {
        0.3
    } else {
        window.iter().filter(|p| p.converted).count() as f64 / window.len() as f64
    };
    // High conversion means room to raise the price; low conversion means it is too high.
    let conversion_adjust = 1.0 + 0.2 * (conversion_rate - 0.3);
    let demand_adjust = 0.85 + 0.15 * demand_factor;
    let price = round2((base_price * demand_adjust * conversion_adjust).max(1.0));
    Quote {
        price,
        base_price: round2(base_price),
        demand_factor: round2(demand_factor),
        conversion_rate: round2(conversion_rate),
        points: history.len(),
        confidence: round2(1.0 - (-(history.len() as f64) / 20.0).exp()),
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(price: f64, demand: f64, converted: bool) -> PricePoint {
        PricePoint { price, demand, converted, recorded_at: 0 }
    }

    #[test]
    fn no_history_quotes_the_scaled_list_price() {
        let q = quote(&[], 1.25);
        assert_eq!(q.base_price, 125.0);
        assert_eq!(q.points, 0);
        assert_eq!(q.confidence, 0.0);
    }

    #[test]
    fn demand_and_conversion_raise_the_price() {
        let calm: Vec<_> = (0..20).map(|_| point(100.0, 1.0, false)).collect();
        let hot: Vec<_> = (0..20).map(|_| point(100.0, 1.6, true)).collect();
        assert!(quote(&hot, 1.0).price > quote(&calm, 1.0).price);
        assert_eq!(quote(&hot, 1.0).base_price, 100.0);
    }
}
