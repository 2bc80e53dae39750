//! The web page, embedded in the binary at build time so the server is one file and never
//! loads anything from elsewhere.

use actix_web::{http::header, web, HttpResponse};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// An embedded file of `web/`.
macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", JS),
    asset!("client.js", JS),
    asset!("call.js", JS),
    asset!("prefs.js", JS),
    asset!("style.css", "text/css; charset=utf-8"),
];

pub async fn index() -> HttpResponse {
    serve("index.html")
}

/// No icon: answering 204 keeps browsers from logging a 404 on every visit.
pub async fn favicon() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

pub async fn asset(path: web::Path<String>) -> HttpResponse {
    serve(&path)
}

fn serve(path: &str) -> HttpResponse {
    match ASSETS.iter().find(|asset| asset.path == path) {
        Some(asset) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, asset.content_type))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(asset.body),
        None => HttpResponse::NotFound().body("not found\n"),
    }
}
