//! Test fixtures: a migrated and seeded database on either backend, and a client that drives
//! the origin's router in process.
//!
//! SQLite lives in a fresh temporary directory; PostgreSQL in a fresh schema of the `test`
//! database (`search_path` set on every connection), dropped when the fixture is. When
//! PostgreSQL is unreachable the fixture is `None` after printing `SKIPPED: …`, unless
//! `ACCEL_REQUIRE_SERVICES=1`, which turns that into a failure.

#![allow(dead_code)]

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use accel_origin::clock::Clock;
use accel_origin::db::{Db, PoolSize, Waits};
use accel_origin::seed::{self, Size};
use accel_origin::{App, router};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use tower::ServiceExt;

/// The PostgreSQL server the tests use.
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// "Now" of every test: 2026-03-15 12:00:00 UTC.
pub const NOW: i64 = 1_773_576_000;

/// A small data set: enough rows for every endpoint, seeded in well under a second.
pub const TEST_SIZE: Size = Size {
    tenants: 3,
    users: 4,
    contacts: 20,
    leads: 200,
    pricing_points: 2_000,
    predictions: 300,
    usage_rows: 2_000,
    users_with_materials: 2,
    materials_per_user: 2,
    learners: 3,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Which backend a fixture runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in a temporary directory.
    Sqlite,
    /// PostgreSQL in a fresh schema.
    Postgres,
}

/// A migrated (not yet seeded) database that cleans up after itself.
#[derive(Debug)]
pub struct TestDb {
    /// The pool.
    pub db: Db,
    /// The backend.
    pub backend: Backend,
    dir: Option<PathBuf>,
    schema: Option<String>,
}

impl TestDb {
    /// A fresh database on `backend`; `None` (after `SKIPPED: …`) when PostgreSQL is absent.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite().await),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh SQLite file in a new temporary directory.
    pub async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(unique("accel-origin-test"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let options =
            SqliteConnectOptions::from_str(&format!("sqlite://{}/origin.db?mode=rwc", dir.display()))
                .expect("sqlite url");
        let db = Db::connect_sqlite(options, PoolSize { max: 4, min: 1 }, Waits::default())
            .await
            .expect("sqlite opens");
        db.migrate().await.expect("sqlite migrations apply");
        Self { db, backend: Backend::Sqlite, dir: Some(dir), schema: None }
    }

    /// A fresh schema on the PostgreSQL server, or `None` when it is unreachable.
    pub async fn postgres() -> Option<Self> {
        let admin = match sqlx::PgPool::connect(POSTGRES_URL).await {
            Ok(admin) => admin,
            Err(e) => {
                if std::env::var("ACCEL_REQUIRE_SERVICES").as_deref() == Ok("1") {
                    panic!("PostgreSQL at {POSTGRES_URL} is required: {e}");
                }
                println!("SKIPPED: PostgreSQL at {POSTGRES_URL} is unreachable: {e}");
                return None;
            }
        };
        let schema = unique("origin_test");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create schema");
        admin.close().await;
        let options = PgConnectOptions::from_str(POSTGRES_URL)
            .expect("postgres url")
            .options([("search_path", schema.as_str())]);
        let db = Db::connect_postgres(options, PoolSize { max: 4, min: 1 }, Waits::default())
            .await
            .expect("postgres opens");
        let fixture = Self { db, backend: Backend::Postgres, dir: None, schema: Some(schema) };
        fixture.db.migrate().await.expect("postgres migrations apply");
        Some(fixture)
    }

    /// Seeds [`TEST_SIZE`] at [`NOW`]; returns user 1's token (user 1 is in tenant 2).
    pub async fn seeded(self) -> (Self, String) {
        let report = seed::seed(&self.db, TEST_SIZE, NOW, false).await.expect("seed");
        (self, report.demo_token.as_str().to_owned())
    }

    /// A new token for user `user`.
    pub async fn token_for(&self, user: i64) -> String {
        accel_origin::token::issue(&self.db, user, "test", NOW)
            .await
            .expect("token issued")
            .token
            .as_str()
            .to_owned()
    }

    /// A new token for the first user of tenant `tenant`.
    pub async fn token_of_tenant(&self, tenant: i64) -> String {
        let user = self.id("SELECT min(id) FROM users WHERE tenant_id = $1", tenant).await;
        self.token_for(user).await
    }

    /// The one `BIGINT` that `sql` (with `$1` bound to `param`) selects.
    pub async fn id(&self, sql: &'static str, param: i64) -> i64 {
        accel_origin::on_db!(&self.db, pool => sqlx::query_scalar::<_, i64>(sql).bind(param).fetch_one(pool).await)
            .expect(sql)
    }

    /// This database's URL, for the `accel-origin` binary.
    pub fn url(&self) -> String {
        match (&self.dir, &self.schema) {
            (Some(dir), _) => format!("sqlite://{}/origin.db", dir.display()),
            (None, Some(schema)) => format!("{POSTGRES_URL}?options=-c%20search_path%3D{schema}"),
            (None, None) => unreachable!("a fixture has a directory or a schema"),
        }
    }

    /// The origin over this database, with the clock fixed at [`NOW`].
    pub fn client(&self) -> Client {
        Client { app: App::new(self.db.clone()).with_clock(Clock::Fixed(NOW)) }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(schema) = self.schema.take() {
            // Drop runs inside the test's runtime: clean up from a thread with its own.
            let _ = std::thread::spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async move {
                    if let Ok(admin) = sqlx::PgPool::connect(POSTGRES_URL).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                            .execute(&admin)
                            .await;
                        admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// An answer: status, headers and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON.
    pub json: Value,
}

impl Answer {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// Drives the router in process.
#[derive(Debug, Clone)]
pub struct Client {
    /// The state (tests may change limits).
    pub app: App,
}

impl Client {
    /// Sends a request.
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body)).expect("request");
        let response = router(self.app.clone()).oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status: parts.status, headers: parts.headers, json }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], Vec::new()).await
    }

    /// `GET path` with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> Answer {
        self.get_with(token, path, &[]).await
    }

    /// `GET path` with a bearer token and more headers.
    pub async fn get_with(&self, token: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let auth = format!("Bearer {token}");
        let mut all = vec![(header::AUTHORIZATION.as_str(), auth.as_str())];
        all.extend_from_slice(headers);
        self.send(Method::GET, path, &all, Vec::new()).await
    }

    /// `method path` with a JSON body.
    pub async fn json(&self, method: Method, path: &str, token: Option<&str>, body: &str) -> Answer {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        self.send(method, path, &headers, body.as_bytes().to_vec()).await
    }
}

/// Runs `scenario` on SQLite and on PostgreSQL, as two tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn sqlite() {
                    super::$scenario(super::support::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$scenario(super::support::Backend::Postgres).await;
                }
            }
        )*
    };
}
