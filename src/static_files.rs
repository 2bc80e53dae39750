//! The web page, embedded in the binary at build time so the server is one file and never
//! loads anything from elsewhere.

use actix_web::{http::header, web, HttpResponse};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "client.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/client.js"),
    },
    Asset {
        path: "call.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/call.js"),
    },
    Asset {
        path: "prefs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/prefs.js"),
    },
    Asset {
        path: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/style.css"),
    },
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
