//! API tokens: issued from a cryptographic RNG, stored as a hash, compared in constant time.
//!
//! A token reads `acc_<selector>_<secret>` (24 and 64 hex digits: 96 and 256 random bits).
//! The `api_tokens` table keeps the selector, which finds the row, and the SHA-256 of the
//! secret, which is compared in constant time with the hash of the secret presented. A copy of
//! the database therefore authenticates no one, and a wrong secret takes as long to refuse
//! whatever its prefix. `accel-origin token issue|revoke` manages them.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::User;
use crate::db::Db;
use crate::on_db;

/// What every token starts with (so that a leaked one is recognisable in logs and scanners).
pub const PREFIX: &str = "acc_";
const SELECTOR_BYTES: usize = 12;
const SECRET_BYTES: usize = 32;
/// Longest label, in characters.
pub const MAX_LABEL: usize = 100;

/// A token as clients send it. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The text to put after `Authorization: Bearer `.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A token split into its parts, when it has the shape of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts<'a> {
    selector: &'a str,
    secret: &'a str,
}

fn parse(text: &str) -> Option<Parts<'_>> {
    let rest = text.strip_prefix(PREFIX)?;
    let (selector, secret) = rest.split_once('_')?;
    let hex = |s: &str, bytes: usize| s.len() == bytes * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(selector, SELECTOR_BYTES) && hex(secret, SECRET_BYTES)).then_some(Parts { selector, secret })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Why a token could not be issued or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The operating system's random source failed.
    #[error("no randomness from the operating system: {0}")]
    Random(getrandom::Error),
    /// No user has this id.
    #[error("no user {id}")]
    NoSuchUser {
        /// The id given.
        id: i64,
    },
    /// The label is empty or too long.
    #[error("a label is 1 to {MAX_LABEL} characters")]
    Label,
    /// The text given is not a token.
    #[error("not a token (expected {PREFIX}<24 hex digits>_<64 hex digits>)")]
    Malformed,
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// A newly issued token: the only time its text exists outside the client.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The token's row id.
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// The token to hand to the client.
    pub token: Token,
}

/// Issues a new token for user `user_id`, labelled `label` (who or what holds it), at `now`.
pub async fn issue(db: &Db, user_id: i64, label: &str, now: i64) -> Result<Issued, TokenError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > MAX_LABEL {
        return Err(TokenError::Label);
    }
    let exists: Option<i64> = on_db!(db, pool => sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
    if exists.is_none() {
        return Err(TokenError::NoSuchUser { id: user_id });
    }
    let mut random = [0u8; SELECTOR_BYTES + SECRET_BYTES];
    getrandom::fill(&mut random).map_err(TokenError::Random)?;
    let (selector, secret) = random.split_at(SELECTOR_BYTES);
    let (selector, secret) = (hex(selector), hex(secret));
    let id: i64 = on_db!(db, pool => sqlx::query_scalar(
        "INSERT INTO api_tokens (user_id, selector, secret_hash, label, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(user_id)
    .bind(&selector)
    .bind(secret_hash(&secret))
    .bind(label)
    .bind(now)
    .fetch_one(pool)
    .await)?;
    Ok(Issued { id, user_id, token: Token(format!("{PREFIX}{selector}_{secret}")) })
}

/// Revokes `token` at `now`; whether a live token was revoked.
pub async fn revoke(db: &Db, token: &str, now: i64) -> Result<bool, TokenError> {
    let parts = parse(token.trim()).ok_or(TokenError::Malformed)?;
    if authenticate(db, token.trim()).await?.is_none() {
        return Ok(false);
    }
    let revoked = on_db!(db, pool => sqlx::query(
        "UPDATE api_tokens SET revoked_at = $1 WHERE selector = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(parts.selector)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(revoked > 0)
}

/// Revokes every live token of user `user_id` at `now`; how many.
pub async fn revoke_all(db: &Db, user_id: i64, now: i64) -> Result<u64, TokenError> {
    let revoked = on_db!(db, pool => sqlx::query(
        "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(revoked)
}

#[derive(sqlx::FromRow)]
struct Stored {
    secret_hash: Vec<u8>,
    user_id: i64,
    tenant_id: i64,
}

/// The user a live `token` belongs to; `None` for anything else (malformed, unknown, revoked,
/// wrong secret).
pub async fn authenticate(db: &Db, token: &str) -> Result<Option<User>, sqlx::Error> {
    let Some(parts) = parse(token) else { return Ok(None) };
    let stored = on_db!(db, pool => sqlx::query_as::<_, Stored>(
        "SELECT t.secret_hash, u.id AS user_id, u.tenant_id FROM api_tokens t \
         JOIN users u ON u.id = t.user_id WHERE t.selector = $1 AND t.revoked_at IS NULL",
    )
    .bind(parts.selector)
    .fetch_optional(pool)
    .await)?;
    Ok(stored.and_then(|stored| {
        let matches: bool = secret_hash(parts.secret).ct_eq(&stored.secret_hash).into();
        matches.then_some(User { id: stored.user_id, tenant_id: stored.tenant_id })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_shape() {
        let token = format!("{PREFIX}{}_{}", "a".repeat(24), "0".repeat(64));
        assert_eq!(parse(&token), Some(Parts { selector: &"a".repeat(24), secret: &"0".repeat(64) }));
        for bad in [
            "tok_0123",
            "acc_",
            &format!("{PREFIX}{}_{}", "a".repeat(23), "0".repeat(64)),
            &format!("{PREFIX}{}_{}", "a".repeat(24), "0".repeat(63)),
            &format!("{PREFIX}{}_{}", "g".repeat(24), "0".repeat(64)),
            &format!("{PREFIX}{}{}", "a".repeat(24), "0".repeat(64)),
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_stored_hash_is_not_the_secret() {
        let hash = secret_hash("00ff");
        assert_eq!(hash.len(), 32);
        assert_ne!(hash, b"00ff".to_vec());
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        assert!(!format!("{:?}", Token("acc_secret".into())).contains("secret"));
    }
}
