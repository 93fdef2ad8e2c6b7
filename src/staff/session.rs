//! The page's session: after signing in with a token once, the page holds
//! a random session id in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure`
//! unless on loopback, 12 h), so no token is kept by the page or put in a
//! URL. A changing request made with the cookie must also come from the
//! page's own origin.

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::dev::ServiceRequest;
use actix_web::http::header;

/// The cookie's name.
pub const COOKIE: &str = "orderflow_session";
/// How long a session lasts.
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// Whether the request's host is this machine (then the cookie may go
/// without `Secure`, for plain-HTTP development).
pub fn on_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The cookie that carries session `id`.
pub fn cookie(id: &str, host: &str) -> Cookie<'static> {
    Cookie::build(COOKIE, id.to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(!on_loopback(host))
        .max_age(time::Duration::seconds(LIFETIME.num_seconds()))
        .finish()
}

/// The cookie that ends the session in the browser.
pub fn removal(host: &str) -> Cookie<'static> {
    let mut c = cookie("", host);
    c.make_removal();
    c
}

/// Whether a request made with the cookie comes from our own origin: its
/// `Origin` is this server's scheme and host. (A browser sends `Origin` on
/// every cross-origin request and on same-origin POST, PATCH and DELETE.)
pub fn same_origin(req: &ServiceRequest) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let info = req.connection_info();
    origin == format!("{}://{}", info.scheme(), info.host())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_apart() {
        for h in [
            "127.0.0.1:8080",
            "localhost",
            "localhost:3000",
            "[::1]:8080",
            "127.0.0.2",
        ] {
            assert!(on_loopback(h), "{h}");
        }
        for h in [
            "ops.example.com",
            "10.0.0.1:8080",
            "[2001:db8::1]:443",
            "localhost.evil.com",
        ] {
            assert!(!on_loopback(h), "{h}");
        }
    }

    #[test]
    fn the_cookie_has_the_flags() {
        let c = cookie("ofs_x", "ops.example.com").to_string();
        for flag in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=43200",
        ] {
            assert!(c.contains(flag), "{c} lacks {flag}");
        }
        assert!(!cookie("ofs_x", "127.0.0.1:8080")
            .to_string()
            .contains("Secure"));
    }
}
