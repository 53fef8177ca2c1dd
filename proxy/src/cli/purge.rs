//! The `accel purge` client of the admin listener's `POST /cache/purge`.

use http::{Uri, header};

use crate::cache::purge::{PurgeCounts, PurgeRequest};

/// The `accel purge` client: posts `request` to the admin listener at `admin` (`host:port`
/// or a URL) with `token`; returns the counts.
pub async fn send(admin: &str, token: &str, request: &PurgeRequest) -> anyhow::Result<PurgeCounts> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let base = if admin.contains("://") {
        admin.trim_end_matches('/').to_owned()
    } else {
        format!("http://{admin}")
    };
    let uri: Uri = format!("{base}/cache/purge").parse()?;
    let body = serde_json::to_vec(request)?;
    let request = http::Request::post(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!("{status}: {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(serde_json::from_slice(&body)?)
}
