//! End-to-end tests: the real `accel` sidecar on `127.0.0.1:0` in front of fake origins,
//! driven over sockets. One module per topic.

mod admin;
mod balancing;
mod cache;
mod cluster;
mod compress;
mod conformance;
mod failures;
mod h2_limits;
mod health;
mod hostile;
mod ignore;
mod insight;
mod isolation;
mod lifecycle;
mod limit;
mod query;
mod redis;
mod reload;
mod routing;
mod smoke;
mod targeted;
mod timing;
mod tls;
mod transparency;
mod upgrade;
mod upstream_framing;
mod upstream_tls;
