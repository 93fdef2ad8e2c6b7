//! Who may call what: the one table of every `/api/v1` route's access, read
//! by the gate before any handler runs. A route missing here is refused to
//! all but admins (and a test reads the route table against this one).

use actix_web::http::Method;

use super::Role;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No ops principal: the storefront, the gateway's signed events, the
    /// sign-in itself.
    Public,
    /// A principal with at least this role; reads are not audited.
    Read(Role),
    /// A principal with at least this role; audited as `action`.
    Change(Role, &'static str),
}

/// What `method` on `pattern` needs: its rule; for a method the route
/// does not have, nothing (the router answers 405); for a route without
/// any rule, an admin (audited as `unlisted`).
pub fn access(method: &Method, pattern: &str) -> Access {
    if let Some(rule) = rule(method, pattern) {
        return rule;
    }
    let methods = [
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::PUT,
    ];
    if methods.iter().any(|m| rule(m, pattern).is_some()) {
        return Access::Public;
    }
    if method == Method::GET || method == Method::HEAD {
        Access::Read(Role::Admin)
    } else {
        Access::Change(Role::Admin, "unlisted")
    }
}

/// The access rule written for `method` on `pattern` (the route's match
/// pattern under `/api/v1`, e.g. `/orders/{id}/cancel`).
pub fn rule(method: &Method, pattern: &str) -> Option<Access> {
    use Access::*;
    use Role::*;
    let m = method.as_str();
    Some(match (m, pattern) {
        ("GET", "/openapi.json")
        | ("POST", "/purchase")
        | ("GET", "/products")
        | ("GET", "/orders/{id}")
        | ("POST", "/gateway/webhooks")
        | ("POST", "/session") => Public,

        ("GET", "/session") => Read(Viewer),
        ("DELETE", "/session") => Change(Viewer, "session.end"),

        ("POST", "/products") => Change(Admin, "product.create"),
        ("PATCH", "/products/{sku}") => Change(Admin, "product.update"),
        ("DELETE", "/products/{sku}") => Change(Admin, "product.deactivate"),

        ("GET", "/orders")
        | ("GET", "/orders/{id}/events")
        | ("GET", "/orders/{id}/webhook-deliveries") => Read(Viewer),
        ("POST", "/orders/{id}/cancel") => Change(Refunder, "order.cancel"),
        ("POST", "/orders/bulk/cancel") => Change(Refunder, "order.cancel"),
        ("POST", "/orders/{id}/retry-delivery") => Change(Operator, "order.retry_delivery"),
        ("POST", "/orders/bulk/retry-delivery") => Change(Operator, "order.retry_delivery"),
        ("POST", "/orders/{id}/reconcile") => Change(Operator, "order.reconcile"),

        ("GET", "/webhook-endpoints") | ("GET", "/webhook-endpoints/{id}/deliveries") => {
            Read(Viewer)
        }
        ("POST", "/webhook-endpoints") => Change(Admin, "webhook_endpoint.create"),
        ("PATCH", "/webhook-endpoints/{id}") => Change(Admin, "webhook_endpoint.update"),
        ("DELETE", "/webhook-endpoints/{id}") => Change(Admin, "webhook_endpoint.delete"),
        ("POST", "/webhook-endpoints/{id}/rotate-secret") => {
            Change(Admin, "webhook_endpoint.rotate_secret")
        }
        ("POST", "/webhook-endpoints/{id}/events/{event_id}/resend") => {
            Change(Operator, "webhook_event.resend")
        }

        ("GET", "/gateway-events") => Read(Viewer),
        ("POST", "/gateway-events/{id}/replay") => Change(Operator, "gateway_event.replay"),

        ("GET", "/dashboard/orders")
        | ("GET", "/dashboard/summary")
        | ("GET", "/dashboard/events") => Read(Viewer),
        ("POST", "/dashboard/refresh") => Change(Operator, "dashboard.refresh"),

        ("GET", "/staff") | ("GET", "/audit") => Read(Admin),
        ("POST", "/staff") => Change(Admin, "staff.create"),
        ("DELETE", "/staff/{name}") => Change(Admin, "staff.revoke"),

        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_before_them() {
        assert!(Role::Admin.allows(Role::Refunder));
        assert!(Role::Refunder.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Operator.allows(Role::Refunder));
        assert!(!Role::Viewer.allows(Role::Operator));
    }

    #[test]
    fn an_unlisted_route_is_for_admins_only() {
        assert_eq!(
            access(&Method::POST, "/new-thing"),
            Access::Change(Role::Admin, "unlisted")
        );
        assert_eq!(
            access(&Method::GET, "/new-thing"),
            Access::Read(Role::Admin)
        );
        assert_eq!(
            rule(&Method::GET, "/audit"),
            Some(Access::Read(Role::Admin))
        );
    }
}
