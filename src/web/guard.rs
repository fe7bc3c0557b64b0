//! Who may use the page: the checks every request passes before a handler
//! sees it, as plain functions of the request's headers (unit-tested
//! here), and the middleware that applies them.
//!
//! - The `Host` header must name the bound address (or `localhost` on it),
//!   so a page on another site cannot reach this one by pointing a DNS name
//!   at 127.0.0.1 (DNS rebinding). On an unspecified address (`0.0.0.0`)
//!   any IP literal with the port is taken, never a DNS name.
//! - The secret must come with every request: in the `Cookie` the first
//!   visit sets (HttpOnly, SameSite=Strict), or in an
//!   `Authorization: Bearer` header. In the URL (`?token=`) it is taken
//!   only on the page itself, which answers with the cookie and a redirect
//!   to the address without it.
//! - Anything that is not GET or HEAD must carry an `Origin` header equal
//!   to the page's own origin (a cross-site form or fetch cannot).
//!
//! Each refusal is a 403 with one line saying why; every answer carries a
//! strict Content-Security-Policy and no-sniff, no-frame, no-referrer and
//! no-store headers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The page's policy: scripts, styles and connections from the page's own
/// origin only, no inline script or style, no frames, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// What a request must show; made once per server.
#[derive(Clone, Debug)]
pub struct Guard {
    secret: String,
    bound: SocketAddr,
    cookie: String,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Host,
    Origin,
    Secret,
}

impl Refusal {
    fn text(self) -> &'static str {
        match self {
            Refusal::Host => {
                "refused: the Host header does not name this page's address; open the address punchgate printed\n"
            }
            Refusal::Origin => {
                "refused: a change must come from this page itself (Origin header)\n"
            }
            Refusal::Secret => {
                "refused: no valid secret; open the address with ?token= that punchgate printed\n"
            }
        }
    }
}

/// What to do with a request that passed the checks.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the handler.
    Pass,
    /// The secret came in the URL: set the cookie and send the browser to
    /// the same page without it.
    SetCookie,
}

impl Guard {
    pub fn new(secret: String, bound: SocketAddr) -> Self {
        // Cookies are not kept apart by port: each page names its own.
        let cookie = format!("punchgate_{}", bound.port());
        Self {
            secret,
            bound,
            cookie,
        }
    }

    /// The cookie that carries the secret, as set on the first visit.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie, self.secret
        )
    }

    /// Whether `host` (the `Host` header) names the bound address.
    pub fn host_ok(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return false;
        };
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        if port != self.bound.port() {
            return false;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return self.bound.ip().is_loopback() || self.bound.ip().is_unspecified();
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip == self.bound.ip() || self.bound.ip().is_unspecified(),
            Err(_) => false,
        }
    }

    /// Whether `origin` is this page's origin, reached as `host`.
    pub fn origin_ok(&self, origin: Option<&str>, host: &str) -> bool {
        origin.is_some_and(|origin| {
            origin
                .strip_prefix("http://")
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        })
    }

    /// Whether `presented` is the secret (compared in constant time).
    pub fn secret_ok(&self, presented: &str) -> bool {
        let (a, b) = (presented.as_bytes(), self.secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The secret from the cookie or an `Authorization: Bearer` header.
    fn presented<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        bearer.or_else(|| {
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == self.cookie)
                .map(|(_, value)| value)
        })
    }

    /// The checks, in order: Host, Origin (for changes), secret.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Admit, Refusal> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !self.host_ok(host) {
            return Err(Refusal::Host);
        }
        let host = host.unwrap_or_default();
        if method != Method::GET && method != Method::HEAD {
            let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
            if !self.origin_ok(origin, host) {
                return Err(Refusal::Origin);
            }
        }
        if self.presented(headers).is_some_and(|s| self.secret_ok(s)) {
            return Ok(Admit::Pass);
        }
        let in_url = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "token")
            .map(|(_, value)| value);
        if method == Method::GET && path == "/" && in_url.is_some_and(|s| self.secret_ok(s)) {
            return Ok(Admit::SetCookie);
        }
        Err(Refusal::Secret)
    }
}

/// `name:port` or `[v6]:port`, split.
fn split_host(host: &str) -> Option<(&str, u16)> {
    if let Some(rest) = host.strip_prefix('[') {
        let (name, port) = rest.split_once("]:")?;
        return Some((name, port.parse().ok()?));
    }
    let (name, port) = host.rsplit_once(':')?;
    Some((name, port.parse().ok()?))
}

/// Adds the headers every answer carries.
pub fn harden(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// The middleware: refuses, sets the cookie, or passes to the handler.
pub async fn middleware(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let verdict = guard.check(
        request.method(),
        request.uri().path(),
        request.uri().query(),
        request.headers(),
    );
    let mut response = match verdict {
        Ok(Admit::Pass) => next.run(request).await,
        Ok(Admit::SetCookie) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(cookie) = HeaderValue::from_str(&guard.set_cookie()) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/"));
            response
        }
        Err(refusal) => {
            tracing::debug!(?refusal, path = request.uri().path(), "web request refused");
            (StatusCode::FORBIDDEN, refusal.text()).into_response()
        }
    };
    harden(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new("s3cret".into(), "127.0.0.1:8080".parse().unwrap())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn host_must_name_the_bound_address() {
        let g = guard();
        assert!(g.host_ok(Some("127.0.0.1:8080")));
        assert!(g.host_ok(Some("localhost:8080")));
        assert!(g.host_ok(Some("LOCALHOST:8080")));
        assert!(!g.host_ok(Some("evil.example:8080")));
        assert!(!g.host_ok(Some("127.0.0.1:8081")));
        assert!(!g.host_ok(Some("127.0.0.2:8080")));
        assert!(!g.host_ok(Some("127.0.0.1")));
        assert!(!g.host_ok(None));
        let any = Guard::new("s".into(), "0.0.0.0:9000".parse().unwrap());
        assert!(any.host_ok(Some("192.0.2.7:9000")));
        assert!(!any.host_ok(Some("rebind.example:9000")));
        let v6 = Guard::new("s".into(), "[::1]:9000".parse().unwrap());
        assert!(v6.host_ok(Some("[::1]:9000")));
        assert!(!v6.host_ok(Some("[::2]:9000")));
    }

    #[test]
    fn changes_need_the_pages_own_origin() {
        let g = guard();
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("cookie", "other=1; punchgate_8080=s3cret"),
        ]);
        assert_eq!(
            g.check(&Method::POST, "/api/command", None, &ok),
            Ok(Admit::Pass)
        );
        let foreign = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
            ("cookie", "punchgate_8080=s3cret"),
        ]);
        assert_eq!(
            g.check(&Method::POST, "/api/command", None, &foreign),
            Err(Refusal::Origin)
        );
        let none = headers(&[
            ("host", "127.0.0.1:8080"),
            ("cookie", "punchgate_8080=s3cret"),
        ]);
        assert_eq!(
            g.check(&Method::POST, "/api/command", None, &none),
            Err(Refusal::Origin)
        );
        // Reads need no Origin.
        assert_eq!(
            g.check(&Method::GET, "/api/state", None, &none),
            Ok(Admit::Pass)
        );
    }

    #[test]
    fn the_secret_is_required_and_taken_from_the_url_only_on_the_page() {
        let g = guard();
        let bare = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(
            g.check(&Method::GET, "/", None, &bare),
            Err(Refusal::Secret)
        );
        assert_eq!(
            g.check(&Method::GET, "/", Some("token=s3cret"), &bare),
            Ok(Admit::SetCookie)
        );
        assert_eq!(
            g.check(&Method::GET, "/", Some("token=s3cre"), &bare),
            Err(Refusal::Secret)
        );
        assert_eq!(
            g.check(&Method::GET, "/api/state", Some("token=s3cret"), &bare),
            Err(Refusal::Secret)
        );
        let bearer = headers(&[
            ("host", "localhost:8080"),
            ("authorization", "Bearer s3cret"),
        ]);
        assert_eq!(
            g.check(&Method::GET, "/api/events", None, &bearer),
            Ok(Admit::Pass)
        );
        let wrong_cookie = headers(&[("host", "127.0.0.1:8080"), ("cookie", "punchgate_9=s3cret")]);
        assert_eq!(
            g.check(&Method::GET, "/api/state", None, &wrong_cookie),
            Err(Refusal::Secret)
        );
        assert!(g.set_cookie().contains("HttpOnly"));
        assert!(g.set_cookie().contains("SameSite=Strict"));
    }
}
