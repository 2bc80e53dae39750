//! Process and response hardening: TLS, security headers on every response, and no core
//! dumps (which would hold chats) unless the operator allows them.

use actix_web::middleware::DefaultHeaders;

/// Only this server's own origin may provide scripts, styles, images, media or sockets: no
/// third-party script, font or pixel can load. Images and voice notes a stranger sends are
/// shown from `blob:`/`data:` URLs the page makes itself; video comes as a `mediastream:`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Camera and microphone for this page only; nothing else.
pub const PERMISSIONS_POLICY: &str = "camera=(self), microphone=(self), geolocation=(), \
     payment=(), usb=(), interest-cohort=(), browsing-topics=()";

pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Permissions-Policy", PERMISSIONS_POLICY))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
        .add(("Cross-Origin-Resource-Policy", "same-origin"))
}

/// Turns core dumps off for this process: the core-size limit goes to 0 and the process is
/// marked not dumpable, so a crash writes nothing and other users cannot attach to read its
/// memory. Call once at start-up unless `allow_core_dumps` is set.
pub fn disable_core_dumps() -> std::io::Result<()> {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit and prctl only read the arguments passed here; no memory is shared.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no certificate in {0}")]
    NoCertificate(String),
    #[error("no private key in {0}")]
    NoKey(String),
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A rustls server configuration (TLS 1.3 and 1.2, ring crypto) from PEM files.
pub fn tls_config(cert_path: &str, key_path: &str) -> Result<rustls::ServerConfig, TlsError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_owned()));
    }
    let key_pem = read(key_path)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey(key_path.to_owned()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(config)
}
