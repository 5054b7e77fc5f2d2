//! Who is asking: the users of `[[dashboard.users]]` (token, role, sources, brand), bearer
//! tokens for the API, and browser sessions (a login form sets an HttpOnly, SameSite=Strict
//! cookie; each session carries its own CSRF token for the forms that change something).
//!
//! Tokens are compared by their SHA-256 digests in constant time; sessions live in memory (a
//! restart logs everyone out), expire after `session_ttl`, and are bounded in number.

use super::view::Scope;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use stockhook_shared::config::{BrandConfig, DashboardConfig, DashboardRole};

/// The session cookie's name.
pub const COOKIE: &str = "stockhook_session";

/// At most this many live sessions; the oldest goes when a new one would exceed it.
const MAX_SESSIONS: usize = 10_000;

/// One configured user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: DashboardRole,
    pub scope: Scope,
    pub brand: Brand,
    digest: [u8; 32],
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == DashboardRole::Admin
    }
}

/// The look of a user's pages.
#[derive(Debug, Clone)]
pub struct Brand {
    pub name: String,
    /// `#rrggbb` (validated by the config loader).
    pub accent: String,
    /// The logo, embedded as a data: URI (`None`: no logo).
    pub logo: Option<String>,
}

impl Brand {
    fn from_config(b: Option<&BrandConfig>, fallback: Option<&Brand>) -> anyhow::Result<Brand> {
        let base = fallback.cloned().unwrap_or(Brand {
            name: "stockhook".into(),
            accent: "#0b6e4f".into(),
            logo: None,
        });
        let Some(b) = b else { return Ok(base) };
        let logo = match &b.logo {
            None => base.logo,
            Some(p) => {
                use base64::Engine as _;
                let bytes = std::fs::read(p)
                    .map_err(|e| anyhow::anyhow!("dashboard brand logo {}: {e}", p.display()))?;
                let mime = if p.extension().is_some_and(|e| e == "svg") {
                    "image/svg+xml"
                } else {
                    "image/png"
                };
                Some(format!(
                    "data:{mime};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                ))
            }
        };
        Ok(Brand {
            name: b.name.clone().unwrap_or(base.name),
            accent: b.accent.clone().unwrap_or(base.accent),
            logo,
        })
    }
}

/// A logged-in browser.
#[derive(Debug, Clone)]
struct Session {
    user: usize,
    csrf: String,
    expires: Instant,
}

/// The users and the live sessions.
pub struct Auth {
    users: Vec<User>,
    sessions: Mutex<HashMap<String, Session>>,
    ttl: Duration,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Auth {
    /// The users of `[dashboard]` (tokens already resolved by the loader).
    pub fn from_config(d: &DashboardConfig) -> anyhow::Result<Auth> {
        let default_brand = Brand::from_config(d.brand.as_ref(), None)?;
        let mut users = Vec::new();
        for u in &d.users {
            let Some(token) = &u.token else {
                anyhow::bail!("dashboard user {}: no token", u.name);
            };
            users.push(User {
                name: u.name.clone(),
                role: u.role,
                scope: match &u.sources {
                    Some(s) => Scope::Only(s.clone()),
                    None => Scope::All,
                },
                brand: Brand::from_config(u.brand.as_ref(), Some(&default_brand))?,
                digest: digest(token.expose()),
            });
        }
        Ok(Auth {
            users,
            sessions: Mutex::new(HashMap::new()),
            ttl: d.session_ttl.get(),
        })
    }

    /// The user whose token this is.
    pub fn by_token(&self, token: &str) -> Option<&User> {
        let d = digest(token.trim());
        // Every user is compared, so the time does not tell which one matched.
        let mut found = None;
        for (i, u) in self.users.iter().enumerate() {
            if same(&u.digest, &d) {
                found = Some(i);
            }
        }
        found.map(|i| &self.users[i])
    }

    /// A new session for the user of `token`: (session id, its lifetime).
    pub fn login(&self, token: &str) -> Option<(String, Duration)> {
        let d = digest(token.trim());
        let user = self.users.iter().position(|u| same(&u.digest, &d))?;
        let id = random_hex();
        let now = Instant::now();
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, v| v.expires > now);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s
                .iter()
                .min_by_key(|(_, v)| v.expires)
                .map(|(k, _)| k.clone())
            {
                s.remove(&oldest);
            }
        }
        s.insert(
            id.clone(),
            Session {
                user,
                csrf: random_hex(),
                expires: now + self.ttl,
            },
        );
        Some((id, self.ttl))
    }

    /// The user and CSRF token of a live session.
    pub fn session(&self, id: &str) -> Option<(&User, String)> {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let v = s.get(id).filter(|v| v.expires > Instant::now())?;
        Some((&self.users[v.user], v.csrf.clone()))
    }

    pub fn logout(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// The session id in a `Cookie:` header.
pub fn session_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_read_among_others() {
        assert_eq!(
            session_cookie("a=1; stockhook_session=abc; b=2"),
            Some("abc")
        );
        assert_eq!(session_cookie("a=1"), None);
        let c = set_cookie("x", Duration::from_secs(60), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
    }
}
