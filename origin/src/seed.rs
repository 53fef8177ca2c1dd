//! Deterministic data sets: `accel-origin seed --size small|bench|N`.
//!
//! The same size and the same `now` give the same rows, byte for byte, on both backends: every
//! table draws from its own `fastrand` generator with a fixed seed, and times are offsets from
//! `now`. Tenants, users, contacts and leads get explicit ids; the other tables let the
//! database number their rows. The one exception is the API token issued to user 1: it comes
//! from the operating system's cryptographic RNG (see [`crate::token`]), never from the seed.

use indicatif::{ProgressBar, ProgressStyle};
use sqlx::QueryBuilder;

use crate::api::learning::KINDS;
use crate::clock::DAY;
use crate::db::Db;
use crate::model::price::{LOCATIONS, location_factor};
use crate::model::scoring::{self, Industry, Signals};
use crate::on_db;
use crate::text::{chunk, embedding};
use crate::token::{self, Token, TokenError};

/// Rows per INSERT statement (at most 7 parameters a row: far under both backends' limits).
const BATCH: usize = 1000;

/// How many rows of each kind to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Tenants.
    pub tenants: u64,
    /// Users.
    pub users: u64,
    /// Contacts.
    pub contacts: u64,
    /// Golden leads.
    pub leads: u64,
    /// Pricing history points.
    pub pricing_points: u64,
    /// Stored predictions.
    pub predictions: u64,
    /// Usage analytics rows.
    pub usage_rows: u64,
    /// Users (the first ones) who have study materials.
    pub users_with_materials: u64,
    /// Materials each of those users has.
    pub materials_per_user: u64,
    /// Users (the first ones) with a year of learning activity.
    pub learners: u64,
}

impl Size {
    /// The demo set: seeds in seconds.
    pub const SMALL: Self = Self {
        tenants: 3,
        users: 12,
        contacts: 300,
        leads: 2_000,
        pricing_points: 20_000,
        predictions: 4_000,
        usage_rows: 30_000,
        users_with_materials: 12,
        materials_per_user: 2,
        learners: 12,
    };

    /// The benchmark set: 100k leads, about a million usage rows and a million activity rows.
    pub const BENCH: Self = Self {
        tenants: 20,
        users: 1_000,
        contacts: 10_000,
        leads: 100_000,
        pricing_points: 500_000,
        predictions: 200_000,
        usage_rows: 1_000_000,
        users_with_materials: 100,
        materials_per_user: 2,
        learners: 1_000,
    };

    /// A set with `leads` leads, the other tables scaled like the benchmark set (never smaller
    /// than the demo set's tenants and users).
    pub fn with_leads(leads: u64) -> Self {
        let scale = |bench: u64, floor: u64| (bench.saturating_mul(leads) / Self::BENCH.leads).max(floor);
        let users = scale(Self::BENCH.users, Self::SMALL.users);
        Self {
            tenants: scale(Self::BENCH.tenants, Self::SMALL.tenants),
            users,
            contacts: scale(Self::BENCH.contacts, 10),
            leads: leads.max(1),
            pricing_points: scale(Self::BENCH.pricing_points, 100),
            predictions: scale(Self::BENCH.predictions, 10),
            usage_rows: scale(Self::BENCH.usage_rows, 100),
            users_with_materials: scale(Self::BENCH.users_with_materials, 1).min(users),
            materials_per_user: 2,
            learners: users,
        }
    }

    /// Parses `small`, `bench` or a number of leads.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "small" => Ok(Self::SMALL),
            "bench" => Ok(Self::BENCH),
            n => {
                n.parse::<u64>().ok().filter(|n| *n > 0).map(Self::with_leads).ok_or_else(|| {
                    format!("size must be small, bench or a positive number of leads, not {n:?}")
                })
            }
        }
    }

    /// Rows of the bulk tables, to decide whether a progress bar is worth it.
    pub fn rows(&self) -> u64 {
        self.leads + self.pricing_points + self.predictions + self.usage_rows + self.learners * 365 * 2
    }
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The database already has tenants: seeding would collide with them.
    #[error("the database is not empty ({tenants} tenants); seed an empty database")]
    NotEmpty {
        /// Tenants found.
        tenants: i64,
    },
    /// A write failed.
    #[error("cannot write the seed")]
    Database(#[from] sqlx::Error),
    /// The demo token could not be issued.
    #[error("cannot issue the demo token")]
    Token(#[from] TokenError),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows written per table, in writing order.
    pub tables: Vec<(&'static str, u64)>,
    /// A token issued to user 1 (the demo prints it).
    pub demo_token: Token,
}

/// Whether the database holds no tenants yet.
pub async fn is_empty(db: &Db) -> Result<bool, sqlx::Error> {
    let tenants: i64 =
        on_db!(db, pool => sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(pool).await)?;
    Ok(tenants == 0)
}

/// Ids to try the API with as one user: its tenant, and that tenant's first lead and contact
/// (a token reaches only its tenant's data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The user's tenant.
    pub tenant: i64,
    /// The tenant's first lead.
    pub lead: i64,
    /// The tenant's first contact.
    pub contact: i64,
}

/// The [`Sample`] of user `user` in a seeded database.
pub async fn sample(db: &Db, user: i64) -> Result<Sample, sqlx::Error> {
    let one = |sql: &'static str, param: i64| async move {
        on_db!(db, pool => sqlx::query_scalar::<_, i64>(sql).bind(param).fetch_one(pool).await)
    };
    let tenant = one("SELECT tenant_id FROM users WHERE id = $1", user).await?;
    let lead = one("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", tenant).await?;
    let contact = one("SELECT min(id) FROM contacts WHERE tenant_id = $1", tenant).await?;
    Ok(Sample { tenant, lead, contact })
}

/// Inserts `$rows` into the table in batches inside one transaction, pushing each row's binds
/// with `$push`, and advancing `$bar`.
macro_rules! insert_rows {
    ($db:expr, $bar:expr, $head:expr, $rows:expr, |$b:ident, $r:ident| $push:block) => {
        on_db!($db, pool => {
            let mut tx = pool.begin().await?;
            for batch in $rows.chunks(BATCH) {
                let mut insert = QueryBuilder::new($head);
                insert.push_values(batch, |mut $b, $r| $push);
                insert.build().execute(&mut *tx).await?;
                $bar.inc(batch.len() as u64);
            }
            tx.commit().await?;
        })
    };
}

fn bar(show: bool, table: &'static str, len: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_message(table);
    if let Ok(style) = ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} ({per_sec}, {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn rng(table: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(0xacce_1000 + table)
}

/// `i64` of a count that fits (seed sizes are far below `i64::MAX`).
fn id(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const PLANS: [&str; 3] = ["starter", "growth", "enterprise"];
const COMPANY_WORDS: [&str; 12] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Aperture",
];
const ENDPOINTS: [&str; 8] = [
    "/api/golden-leads",
    "/api/golden-leads/{id}",
    "/api/golden-leads/detect",
    "/api/predictions/{lead_id}",
    "/api/pricing/{contact_id}",
    "/api/pricing/analytics",
    "/api/materials",
    "/api/retrieval/query",
];

/// Writes the data set `size` with times relative to `now` (unix seconds); `progress` shows a
/// bar per table on stderr.
pub async fn seed(db: &Db, size: Size, now: i64, progress: bool) -> Result<Report, SeedError> {
    let tenants: i64 =
        on_db!(db, pool => sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(pool).await)?;
    if tenants > 0 {
        return Err(SeedError::NotEmpty { tenants });
    }
    let mut tables = Vec::new();

    let rows: Vec<(i64, String, &str)> =
        (1..=size.tenants).map(|t| (id(t), format!("Tenant {t}"), PLANS[(t % 3) as usize])).collect();
    let pb = bar(progress, "tenants", size.tenants);
    insert_rows!(db, pb, "INSERT INTO tenants (id, name, plan) ", rows, |b, r| {
        b.push_bind(r.0).push_bind(r.1.clone()).push_bind(r.2);
    });
    pb.finish();
    tables.push(("tenants", size.tenants));

    let rows: Vec<(i64, i64, String)> =
        (1..=size.users).map(|u| (id(u), id(1 + u % size.tenants), format!("User {u}"))).collect();
    let pb = bar(progress, "users", size.users);
    insert_rows!(db, pb, "INSERT INTO users (id, tenant_id, name) ", rows, |b, r| {
        b.push_bind(r.0).push_bind(r.1).push_bind(r.2.clone());
    });
    pb.finish();
    tables.push(("users", size.users));
    let demo_token = token::issue(db, 1, "demo", now).await?.token;

    let mut r = rng(2);
    let contact_location = |r: &mut fastrand::Rng| LOCATIONS[r.usize(..LOCATIONS.len())].0;
    let rows: Vec<(i64, i64, String, &str)> = (1..=size.contacts)
        .map(|c| (id(c), id(1 + c % size.tenants), format!("Contact {c}"), contact_location(&mut r)))
        .collect();
    let homes: Vec<&str> = rows.iter().map(|c| c.3).collect();
    let pb = bar(progress, "contacts", size.contacts);
    insert_rows!(db, pb, "INSERT INTO contacts (id, tenant_id, name, location) ", rows, |b, r| {
        b.push_bind(r.0).push_bind(r.1).push_bind(r.2.clone()).push_bind(r.3);
    });
    pb.finish();
    tables.push(("contacts", size.contacts));

    let mut r = rng(3);
    let pb = bar(progress, "golden_leads", size.leads);
    let mut lead_scores = Vec::with_capacity(size.leads as usize);
    let mut next = 1;
    while next <= size.leads {
        let last = (next + 50 * BATCH as u64 - 1).min(size.leads);
        let rows: Vec<_> = (next..=last)
            .map(|l| {
                let contact = 1 + r.u64(..size.contacts);
                let signals = signals(&mut r);
                let detection = scoring::detect(&signals);
                let company = format!("{} {}", COMPANY_WORDS[r.usize(..COMPANY_WORDS.len())], l);
                (
                    id(l),
                    id(1 + contact % size.tenants),
                    id(contact),
                    company,
                    detection,
                    signals,
                    now - r.i64(0..90 * DAY),
                )
            })
            .collect();
        lead_scores.extend(rows.iter().map(|l| l.4.score));
        insert_rows!(
            db,
            pb,
            "INSERT INTO golden_leads (id, tenant_id, contact_id, company, tier, probability, score, signals, analyzed_at) ",
            rows,
            |b, r| {
                b.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3.clone())
                    .push_bind(r.4.tier.as_str())
                    .push_bind(r.4.probability)
                    .push_bind(r.4.score)
                    .push_bind(sqlx::types::Json(r.5.clone()))
                    .push_bind(r.6);
            }
        );
        next = last + 1;
    }
    pb.finish();
    tables.push(("golden_leads", size.leads));

    let mut r = rng(4);
    let rows: Vec<(i64, &str, f64, f64, bool, i64)> = (0..size.pricing_points)
        .map(|_| {
            let contact = 1 + r.u64(..size.contacts);
            let home = homes[(contact - 1) as usize];
            let location = if r.f64() < 0.7 { home } else { LOCATIONS[r.usize(..LOCATIONS.len())].0 };
            // Each contact has its own price level, stable across its points.
            let level = 0.8 + 0.4 * ((contact.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0);
            let base = 100.0 * location_factor(location) * level;
            let demand = 0.6 + r.f64();
            let price = scoring::round2(base * (0.9 + 0.2 * demand) * (0.95 + 0.1 * r.f64()));
            let converted = r.f64() < (0.45 - 1.5 * (price / base - 1.0)).clamp(0.05, 0.9);
            (id(contact), location, price, scoring::round2(demand), converted, now - r.i64(0..90 * DAY))
        })
        .collect();
    let pb = bar(progress, "pricing_history", size.pricing_points);
    insert_rows!(
        db,
        pb,
        "INSERT INTO pricing_history (contact_id, location, price, demand, converted, recorded_at) ",
        rows,
        |b, r| {
            b.push_bind(r.0).push_bind(r.1).push_bind(r.2).push_bind(r.3).push_bind(r.4).push_bind(r.5);
        }
    );
    pb.finish();
    tables.push(("pricing_history", size.pricing_points));

    let mut r = rng(5);
    let rows: Vec<(i64, f64, i64)> = (0..size.predictions)
        .map(|_| {
            let lead = r.usize(..lead_scores.len());
            let score = scoring::round2((lead_scores[lead] + 20.0 * (r.f64() - 0.5)).clamp(0.0, 100.0));
            (id(lead as u64 + 1), score, now - r.i64(DAY..60 * DAY))
        })
        .collect();
    let pb = bar(progress, "predictions", size.predictions);
    insert_rows!(
        db,
        pb,
        "INSERT INTO predictions (lead_id, score, model_version, predicted_at) ",
        rows,
        |b, r| {
            b.push_bind(r.0).push_bind(r.1).push_bind("mc-1").push_bind(r.2);
        }
    );
    pb.finish();
    tables.push(("predictions", size.predictions));

    let mut r = rng(6);
    let pb = bar(progress, "usage_analytics", size.usage_rows);
    let mut left = size.usage_rows;
    while left > 0 {
        let n = left.min(50 * BATCH as u64);
        let rows: Vec<(i64, &str, i64, f64, i64)> = (0..n)
            .map(|_| {
                let roll = r.f64();
                let status = if roll < 0.02 {
                    [500, 502, 503][r.usize(..3)]
                } else if roll < 0.07 {
                    [400, 401, 404, 422, 429][r.usize(..5)]
                } else {
                    200
                };
                let duration =
                    if r.f64() < 0.03 { 1000.0 + 4000.0 * r.f64() } else { 5.0 + 300.0 * r.f64() * r.f64() };
                let endpoint = ENDPOINTS[r.usize(..ENDPOINTS.len())];
                (
                    id(1 + r.u64(..size.tenants)),
                    endpoint,
                    status,
                    scoring::round2(duration),
                    now - r.i64(0..90 * DAY),
                )
            })
            .collect();
        insert_rows!(
            db,
            pb,
            "INSERT INTO usage_analytics (tenant_id, endpoint, status, duration_ms, recorded_at) ",
            rows,
            |b, r| {
                b.push_bind(r.0).push_bind(r.1).push_bind(r.2).push_bind(r.3).push_bind(r.4);
            }
        );
        left -= n;
    }
    pb.finish();
    tables.push(("usage_analytics", size.usage_rows));

    let mut r = rng(7);
    let materials = size.users_with_materials * size.materials_per_user;
    let pb = bar(progress, "materials", materials);
    let mut chunk_total = 0;
    for user in 1..=size.users_with_materials {
        for n in 0..size.materials_per_user {
            let (title, text) = material_text(&mut r, n);
            let chunks = chunk::chunks(&text);
            let embeddings: Vec<Vec<u8>> =
                embedding::embed_all(&chunks).iter().map(embedding::to_bytes).collect();
            chunk_total += chunks.len() as u64;
            let created_at = now - r.i64(DAY..180 * DAY);
            let size_bytes = id(text.len() as u64);
            let chunk_count = id(chunks.len() as u64);
            on_db!(db, pool => {
                let mut tx = pool.begin().await?;
                let material: i64 = sqlx::query_scalar(
                    "INSERT INTO materials (user_id, title, content_type, size_bytes, chunk_count, created_at) \
                     VALUES ($1, $2, 'text/markdown', $3, $4, $5) RETURNING id",
                )
                .bind(id(user))
                .bind(&title)
                .bind(size_bytes)
                .bind(chunk_count)
                .bind(created_at)
                .fetch_one(&mut *tx)
                .await?;
                let mut insert = QueryBuilder::new("INSERT INTO material_chunks (material_id, user_id, ordinal, content, embedding) ");
                insert.push_values(chunks.iter().zip(&embeddings).enumerate(), |mut b, (ordinal, (content, vector))| {
                    b.push_bind(material).push_bind(id(user)).push_bind(id(ordinal as u64)).push_bind(content.clone()).push_bind(vector.clone());
                });
                insert.build().execute(&mut *tx).await?;
                tx.commit().await?;
            });
            pb.inc(1);
        }
    }
    pb.finish();
    tables.push(("materials", materials));
    tables.push(("material_chunks", chunk_total));

    let mut r = rng(8);
    let today = now.div_euclid(DAY);
    let pb = bar(progress, "learning_activity", size.learners);
    let mut activity = 0;
    let mut learner = 1;
    while learner <= size.learners {
        let last = (learner + 99).min(size.learners);
        let mut rows: Vec<(i64, &str, i64, i64, i64)> = Vec::new();
        for user in learner..=last {
            let diligence = 0.25 + 0.65 * r.f64();
            for day in (today - 364)..=today {
                if r.f64() >= diligence {
                    continue;
                }
                for _ in 0..r.u32(1..=3) {
                    let kind = KINDS[r.usize(..KINDS.len())];
                    let minutes = r.i64(5..=60);
                    let xp = minutes * 2 + if kind == "quiz" { r.i64(0..=50) } else { 0 };
                    let second = if day == today { r.i64(0..=now.rem_euclid(DAY)) } else { r.i64(0..DAY) };
                    rows.push((id(user), kind, minutes, xp, day * DAY + second));
                }
            }
            pb.inc(1);
        }
        activity += rows.len() as u64;
        insert_rows!(
            db,
            ProgressBar::hidden(),
            "INSERT INTO learning_activity (user_id, kind, minutes, xp, occurred_at) ",
            rows,
            |b, r| {
                b.push_bind(r.0).push_bind(r.1).push_bind(r.2).push_bind(r.3).push_bind(r.4);
            }
        );
        learner = last + 1;
    }
    pb.finish();
    tables.push(("learning_activity", activity));

    db.refresh_views().await.map_err(|e| match e {
        crate::db::DbError::Refresh(e) | crate::db::DbError::Connect(e) => SeedError::Database(e),
        other => SeedError::Database(sqlx::Error::Protocol(other.to_string())),
    })?;
    Ok(Report { tables, demo_token })
}

/// Signals of a lead whose overall interest is drawn skewed low (most leads are cold).
fn signals(r: &mut fastrand::Rng) -> Signals {
    let heat = r.f64().powf(1.6);
    let count = |r: &mut fastrand::Rng, max: f64| (max * heat * (0.5 + r.f64())).round() as u32;
    let email_opens = count(r, 40.0);
    Signals {
        email_opens,
        email_clicks: (f64::from(email_opens) * heat * r.f64()).round() as u32,
        page_views: count(r, 150.0),
        pricing_page_views: count(r, 12.0),
        demo_requested: r.f64() < heat * 0.8,
        trial_active: r.f64() < heat * 0.6,
        company_size: 1 + (10f64.powf(1.0 + 3.0 * r.f64())) as u32,
        annual_budget: scoring::round2(10f64.powf(3.0 + 3.0 * r.f64())),
        days_since_last_activity: ((1.0 - heat) * 60.0 * r.f64()).round() as u32,
        support_tickets: r.u32(0..8),
        industry: Industry::ALL[r.usize(..Industry::ALL.len())],
    }
}

const TOPICS: [(&str, [&str; 8]); 4] = [
    (
        "Biology",
        [
            "photosynthesis",
            "chlorophyll",
            "mitochondria",
            "cell membrane",
            "enzymes",
            "glucose",
            "DNA replication",
            "ribosomes",
        ],
    ),
    (
        "History",
        [
            "the French revolution",
            "the printing press",
            "the Roman republic",
            "the industrial revolution",
            "the Silk Road",
            "feudal Europe",
            "the Cold War",
            "ancient Egypt",
        ],
    ),
    (
        "Physics",
        [
            "momentum",
            "electric fields",
            "thermodynamics",
            "wave interference",
            "relativity",
            "quantum tunnelling",
            "friction",
            "orbital mechanics",
        ],
    ),
    (
        "Programming",
        [
            "ownership and borrowing",
            "hash maps",
            "binary search",
            "async runtimes",
            "garbage collection",
            "type inference",
            "recursion",
            "database indexes",
        ],
    ),
];
const TEMPLATES: [&str; 6] = [
    "{a} is closely related to {b}, and understanding one makes the other easier.",
    "A common exam question asks how {a} affects {b}.",
    "Remember: {a} explains most of what we observe about {b}.",
    "Students often confuse {a} with {b}; the difference matters.",
    "In practice, {a} appears whenever {b} is studied in depth.",
    "Summary: {a} first, then {b}, then review both with flashcards.",
];

/// A Markdown study note: a title and some paragraphs about one topic.
fn material_text(r: &mut fastrand::Rng, n: u64) -> (String, String) {
    let (topic, terms) = TOPICS[(n as usize + r.usize(..TOPICS.len())) % TOPICS.len()];
    let title = format!("{topic} notes {}", r.u32(1..100));
    let mut text = format!("# {title}\n\n");
    for _ in 0..r.usize(6..12) {
        for _ in 0..r.usize(3..7) {
            let template = TEMPLATES[r.usize(..TEMPLATES.len())];
            let a = terms[r.usize(..terms.len())];
            let b = terms[r.usize(..terms.len())];
            text.push_str(&template.replace("{a}", a).replace("{b}", b));
            text.push(' ');
        }
        text.push_str("\n\n");
    }
    (title, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(Size::parse("small"), Ok(Size::SMALL));
        assert_eq!(Size::parse("bench"), Ok(Size::BENCH));
        assert_eq!(Size::parse("100000"), Ok(Size { learners: 1_000, ..Size::BENCH }));
        assert!(Size::parse("0").is_err());
        assert!(Size::parse("lots").is_err());
    }

    #[test]
    fn generators_are_deterministic() {
        let (mut a, mut b) = (rng(3), rng(3));
        assert_eq!(signals(&mut a), signals(&mut b));
        assert_eq!(material_text(&mut a, 1), material_text(&mut b, 1));
    }
}
