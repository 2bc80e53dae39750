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

pub async fn stats(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.hub.stats())
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
