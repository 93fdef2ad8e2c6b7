//! `GET /api/v1/openapi.json`: the OpenAPI 3 document, generated from the
//! handlers' annotations and the wire types.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{dashboard, gateway, orders, products, views, webhooks};
use crate::orders::{actions, purchase};
use crate::staff::endpoints as staff;

#[derive(OpenApi)]
#[openapi(
    info(title = "orderflow", description = "Order-processing backend: storefront and ops API (docs/API.md)."),
    paths(
        purchase::purchase,
        orders::get_order,
        orders::list_orders,
        actions::cancel_order,
        actions::retry_delivery,
        actions::reconcile,
        products::list_products,
        products::create_product,
        products::patch_product,
        products::delete_product,
        dashboard::orders,
        dashboard::summary,
        dashboard::refresh,
        dashboard::events,
        orders::order_events,
        webhooks::create_endpoint,
        webhooks::list_endpoints,
        webhooks::patch_endpoint,
        webhooks::delete_endpoint,
        webhooks::rotate_secret,
        webhooks::endpoint_deliveries,
        webhooks::order_deliveries,
        webhooks::resend,
        gateway::receive,
        gateway::list_events,
        gateway::replay_event,
        actions::bulk_cancel,
        actions::bulk_retry_delivery,
        staff::list_staff,
        staff::create_staff,
        staff::revoke_staff,
        staff::sign_in,
        staff::whoami,
        staff::sign_out,
        staff::list_audit,
    ),
    components(schemas(
        views::OrderView, views::OrderList, views::ProductView, views::ProductList,
        views::ErrorBody, views::ErrorDetail, views::PurchaseBody, views::AddressBody,
        crate::error::FieldError, views::EventView, views::EventList, views::StuckView,
        views::RefundView, views::DisputeView,
        webhooks::EndpointView, webhooks::EndpointList, webhooks::EndpointBody, webhooks::RotateBody,
        webhooks::WebhookDeliveryView, webhooks::WebhookDeliveryList,
        gateway::GatewayEventView, gateway::GatewayEventList, crate::gateway::GatewayEventStatus,
        actions::BulkBody, actions::BulkResult, actions::BulkResults,
        staff::NewStaffBody, staff::NewAccount, staff::StaffList, staff::SessionView, staff::SignInBody,
        staff::AuditEntryView, staff::AuditList, crate::staff::store::Account, crate::staff::Role,
        crate::staff::audit::Outcome, crate::domain::actor::Actor, crate::domain::actor::ActorKind,
    )),
    modifiers(&OpsToken),
    tags((name = "storefront"), (name = "ops", description = "Requires `Authorization: Bearer <token>` (OPS_TOKEN or a staff token) or the page's session cookie; each route needs a role (viewer < operator < refunder < admin), else 403 forbidden"),
        (name = "staff", description = "Staff accounts, the page's session and the audit trail"),
        (name = "gateway", description = "The payment gateway's signed events (`Stripe-Signature`, no ops token)"))
)]
pub struct ApiDoc;

struct OpsToken;

impl Modify for OpsToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "ops_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
