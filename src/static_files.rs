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
    asset!("notify.js", JS),
    asset!("style.css", "text/css; charset=utf-8"),
];

/// Where the server fills in the topics of the e-mail list (empty: no list).
const TOPICS_PLACEHOLDER: &str = r#"<meta name="ephemera-notify-topics" content="">"#;

/// The page's index.html with this server's settings filled in: the e-mail list's topics, so
/// the page knows at once whether to offer its form, without a request of its own (and
/// without a 404 in the browser's console where the server keeps no list).
pub struct Index(web::Bytes);

impl Index {
    /// `topics`: those of the e-mail list, or none when it is off. Topic names are validated
    /// settings (lowercase letters, digits, - and _), so they need no escaping.
    pub fn render(topics: &[String]) -> Index {
        let template = ASSETS
            .iter()
            .find(|asset| asset.path == "index.html")
            .map(|asset| String::from_utf8_lossy(asset.body).into_owned())
            .unwrap_or_default();
        let filled = format!(
            r#"<meta name="ephemera-notify-topics" content="{}">"#,
            topics.join(",")
        );
        Index(template.replacen(TOPICS_PLACEHOLDER, &filled, 1).into())
    }
}

pub async fn index(page: web::Data<Index>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(page.0.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_names_the_list_topics_or_none() {
        let off = String::from_utf8(Index::render(&[]).0.to_vec()).unwrap();
        assert_eq!(off.matches(TOPICS_PLACEHOLDER).count(), 1);
        let on =
            String::from_utf8(Index::render(&["news".into(), "rules".into()]).0.to_vec()).unwrap();
        assert!(on.contains(r#"<meta name="ephemera-notify-topics" content="news,rules">"#));
        assert!(!on.contains(TOPICS_PLACEHOLDER));
    }
}
