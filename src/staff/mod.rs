//! Staff accounts and what they may do: the named tokens (`token`), the
//! roles and the one table that says which role each ops route needs
//! (`rules`), the principals a request can carry and their cache (`cache`),
//! the gate every `/api/v1` request passes (`gate`), the page's sessions
//! (`session`), the audit trail (`audit`), their SQL (`store`) and the
//! staff, session and audit endpoints (`endpoints`).

pub mod audit;
pub mod cache;
pub mod endpoints;
pub mod gate;
pub mod rules;
pub mod session;
pub mod store;
pub mod token;

use crate::domain::actor::Actor;
use crate::domain::status::text_enum;

text_enum! {
    /// What a principal may do; each role includes the ones before it:
    /// `viewer` (every GET, the board, the page), `operator` (retry a
    /// delivery, refresh the board, resend a webhook, replay a gateway
    /// event, reconcile), `refunder` (cancel and refund), `admin`
    /// (products, webhook endpoints, staff, the audit trail).
    Role {
        Viewer => "viewer",
        Operator => "operator",
        Refunder => "refunder",
        Admin => "admin",
    }
}

impl Role {
    /// Whether this role includes `needed` (the variants are in rank order).
    pub fn allows(self, needed: Role) -> bool {
        self as u8 >= needed as u8
    }
}

/// The name the bootstrap admin (`OPS_TOKEN`) goes by in the audit trail
/// and on events.
pub const BOOTSTRAP_NAME: &str = "ops_token";

/// The one a request acts for: a staff account (or the bootstrap admin)
/// and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor::staff(&self.name)
    }
}

/// A handler that takes a `Principal` runs only for a request the gate
/// found one for: a route the gate let through without one (a rule gone
/// missing) is refused, not served.
impl actix_web::FromRequest for Principal {
    type Error = crate::error::ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage as _;
        std::future::ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or(crate::error::ApiError::Unauthorized),
        )
    }
}

/// For the access log: the name of the principal a request acted for, or
/// `-` (public routes, refused credentials).
pub fn principal_name(res: &actix_web::dev::ServiceResponse) -> String {
    use actix_web::HttpMessage as _;
    res.request()
        .extensions()
        .get::<Principal>()
        .map_or_else(|| "-".to_owned(), |p| p.name.clone())
}
