//! The origin's heaviest endpoint: a lead's forecast, a Monte Carlo over 20,000 noisy variants
//! of its signals, and one detection for comparison.
//!
//! `cargo bench -p accel-benches --bench forecast`

use std::hint::black_box;

use accel_origin::model::forecast::{self, SIMULATIONS};
use accel_origin::model::price::PricePoint;
use accel_origin::model::scoring::{self, Industry, Signals};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A lead like the seeded ones: a few dozen touches, a demo, a year of prices.
fn signals() -> Signals {
    Signals {
        email_opens: 24,
        email_clicks: 7,
        page_views: 60,
        pricing_page_views: 9,
        demo_requested: true,
        trial_active: true,
        company_size: 450,
        annual_budget: 120_000.0,
        days_since_last_activity: 5,
        support_tickets: 4,
        industry: Industry::Software,
    }
}

fn forecasts(c: &mut Criterion) {
    let history: Vec<PricePoint> = (0..52)
        .map(|week| PricePoint {
            price: 90.0 + f64::from(week % 13) * 3.0,
            demand: 1.0,
            converted: week % 3 == 0,
            recorded_at: i64::from(week) * 7 * 86_400,
        })
        .collect();
    let previous = [61.0, 64.5, 66.0];
    let signals = signals();

    let mut group = c.benchmark_group("forecast");
    group.throughput(Throughput::Elements(SIMULATIONS as u64));
    group.bench_function("one_lead", |b| {
        b.iter(|| black_box(forecast::forecast(black_box(42), &signals, &history, &previous)))
    });
    group.finish();

    let mut group = c.benchmark_group("detect");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_lead", |b| b.iter(|| black_box(scoring::detect(black_box(&signals)))));
    group.finish();
}

criterion_group!(benches, forecasts);
criterion_main!(benches);
