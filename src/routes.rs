//! The small HTTP endpoints: health, readiness, live counts, Prometheus metrics, and what the
//! server holds about the caller.

use actix_web::{http::header, web, HttpRequest, HttpResponse};

use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

/// Not ready while draining, so a load balancer stops sending new clients.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.hub.is_draining() {
        HttpResponse::ServiceUnavailable().body("draining\n")
    } else {
        HttpResponse::Ok().body("ready\n")
    }
}

/// Everything the server holds about the caller's client key, and nothing about anyone else.
pub async fn privacy_me(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(keys) = crate::client_identity::client_keys(&req) else {
        // The middleware that derives keys wraps every route; without it nothing is safe.
        tracing::error!("no client key on a request; is forget_client_address installed?");
        return HttpResponse::InternalServerError().body("server misconfigured\n");
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(state.hub.privacy_report(&keys))
}

/// This node's counts; in a cluster also `cluster`: the live nodes and everyone online on
/// them (from their heartbeats, so up to a second old).
pub async fn stats(state: web::Data<AppState>) -> HttpResponse {
    let stats = state.hub.stats();
    let Some(node) = &state.cluster else {
        return HttpResponse::Ok().json(stats);
    };
    let mut body = serde_json::to_value(stats).unwrap_or_default();
    if let Ok((nodes, online)) = node.cluster_online().await {
        body["cluster"] = serde_json::json!({ "nodes": nodes, "online": online });
    }
    HttpResponse::Ok().json(body)
}

/// Prometheus' scrape, on the admin listener only (`metrics_addr`).
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let Some(handle) = &state.metrics else {
        return HttpResponse::NotFound().body("metrics are not enabled\n");
    };
    state.hub.update_session_gauges();
    crate::telemetry::collect_process_metrics();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(handle.render())
}
