//! The one place that wires the server: it starts the chat hub, builds the HTTP app, binds
//! the listener, and runs until a shutdown signal, then drains.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{dev::ServerHandle, middleware, web, App, HttpServer};
use ephemera_actors::Hub;

use crate::client_identity;
use crate::hardening;
use crate::mqtt::MqttPublisher;
use crate::notify_routes;
use crate::privacy_page;
use crate::routes;
use crate::settings::Settings;
use crate::socket_watch::{self, SocketId};
use crate::state::AppState;
use crate::static_files;
use crate::telemetry;
use crate::ws;

/// A running server: where it listens, and how to stop it.
pub struct Server {
    pub local_addr: std::net::SocketAddr,
    /// The admin listener, which serves /metrics (not the public port).
    pub metrics_addr: std::net::SocketAddr,
    /// "https" with TLS, else "http".
    pub scheme: &'static str,
    pub hub: Arc<Hub>,
    http: ServerHandle,
    admin: ServerHandle,
    drain: Duration,
    /// Publishes the statistics to `mqtt_url`, when set; stopped at shutdown (or when dropped).
    mqtt: Option<MqttPublisher>,
    /// This node's place in a cluster (`cluster_redis_url`).
    cluster: Option<ephemera_actors::node::Node>,
}

impl Server {
    /// Binds `settings.listen_addr` and starts serving. Must run inside an actix system.
    pub async fn start(settings: &Settings) -> std::io::Result<(Server, actix_web::dev::Server)> {
        let listener = TcpListener::bind(settings.listen_addr).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("listen_addr {}: {error}", settings.listen_addr),
            )
        })?;
        Self::start_on(settings, listener).await
    }

    pub async fn start_on(
        settings: &Settings,
        listener: TcpListener,
    ) -> std::io::Result<(Server, actix_web::dev::Server)> {
        let local_addr = listener.local_addr()?;
        let admin_listener = TcpListener::bind(settings.metrics_addr).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("metrics_addr {}: {error}", settings.metrics_addr),
            )
        })?;
        let metrics_addr = admin_listener.local_addr()?;
        let metrics = telemetry::prometheus_handle();
        let geo = match settings.geoip_db_path.as_str() {
            "" => None,
            path => Some(Arc::new(
                crate::geo::GeoDb::open(std::path::Path::new(path))
                    .map_err(std::io::Error::other)?,
            )),
        };
        // Validated when the settings were loaded; settings built in code are checked here.
        let mqtt_publishing = settings
            .mqtt_publishing()
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let notify = crate::notify::Notifier::start(
            &settings.notify_db_path,
            &settings.notify_master_key_path,
            settings.notify_topics.clone(),
            Settings::duration(settings.http_request_timeout_seconds),
        )
        .map_err(std::io::Error::other)?;
        let cluster = settings
            .cluster()
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let (hub, cluster_node) = match cluster {
            None => (Hub::start(settings.chat_config()), None),
            Some(cluster) => {
                let (hub, node) = Hub::start_in_cluster(settings.chat_config(), &cluster)
                    .await
                    .map_err(std::io::Error::other)?;
                (hub, Some(node))
            }
        };
        let mqtt = mqtt_publishing
            .map(|publishing| MqttPublisher::start(hub.clone(), publishing))
            .transpose()?;
        let state = web::Data::new(AppState {
            hub: hub.clone(),
            allowed_origins: settings.allowed_origins.clone(),
            // Validated when the settings were loaded.
            trusted_proxies: settings.trusted_proxy_networks().unwrap_or_default(),
            client_address_header: settings.client_address_header,
            metrics,
            geo,
            notify,
            cluster: cluster_node.clone(),
        });
        if settings.memory_trim_interval_seconds > 0.0 {
            actix_web::rt::spawn(crate::memory::trim_every(Settings::duration(
                settings.memory_trim_interval_seconds,
            )));
        }
        let admin = Self::start_admin(admin_listener, state.clone())?;
        let privacy = web::Data::new(privacy_page::PrivacyPage(privacy_page::render(settings)));
        let listed_topics = match &state.notify {
            Some(notifier) => notifier.topics().to_vec(),
            None => Vec::new(),
        };
        let index = web::Data::new(static_files::Index::render(&listed_topics));
        let drain = Settings::duration(settings.shutdown_drain_seconds);
        let write_stall_timeout = Settings::duration(settings.write_stall_timeout_seconds);
        let mut http = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(privacy.clone())
                .app_data(index.clone())
                .wrap(hardening::security_headers())
                .wrap(middleware::from_fn(socket_watch::refuse_unread_pipelines))
                .wrap(middleware::from_fn(socket_watch::refuse_chunked_bodies))
                // Outermost (wrapped last): the address is forgotten before anything can answer.
                .wrap(middleware::from_fn(client_identity::forget_client_address))
                // The page is text: gzip makes it about a third of its size (README says what
                // it weighs). Nothing secret is in it, so compression leaks nothing.
                .service(
                    web::resource("/")
                        .wrap(middleware::Compress::default())
                        .route(web::get().to(static_files::index))
                        .route(web::head().to(static_files::index)),
                )
                .route("/ws", web::get().to(ws::upgrade))
                .service(
                    web::resource("/privacy")
                        .route(web::get().to(privacy_page::privacy))
                        .route(web::head().to(privacy_page::privacy)),
                )
                .route("/api/privacy/me", web::get().to(routes::privacy_me))
                .service(
                    web::resource("/api/notify")
                        .route(web::get().to(notify_routes::topics))
                        .route(web::post().to(notify_routes::sign_up))
                        .default_service(web::to(notify_routes::method_not_allowed)),
                )
                .service(
                    web::resource("/api/notify/delete")
                        .route(web::post().to(notify_routes::delete))
                        .default_service(web::to(notify_routes::method_not_allowed)),
                )
                // Load balancers and uptime checks often probe with HEAD.
                .service(
                    web::resource("/healthz")
                        .route(web::get().to(routes::healthz))
                        .route(web::head().to(routes::healthz)),
                )
                .service(
                    web::resource("/readyz")
                        .route(web::get().to(routes::readyz))
                        .route(web::head().to(routes::readyz)),
                )
                .service(
                    web::resource("/stats")
                        .route(web::get().to(routes::stats))
                        .route(web::head().to(routes::stats)),
                )
                .service(
                    web::resource("/static/{file}")
                        .wrap(middleware::Compress::default())
                        .route(web::get().to(static_files::asset)),
                )
                .route("/favicon.ico", web::get().to(static_files::favicon))
        })
        // Chat frames are small and latency-bound: send them at once, not when Nagle's
        // algorithm decides.
        .on_connect(move |connection, extensions| {
            use std::os::fd::AsRawFd as _;
            type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
            let tcp = connection
                .downcast_ref::<actix_web::rt::net::TcpStream>()
                .or_else(|| connection.downcast_ref::<Tls>().map(|tls| tls.get_ref().0));
            let Some(tcp) = tcp else { return };
            let _ = tcp.set_nodelay(true);
            // Known by descriptor, so a connection that does not take what it is sent can be
            // ended (socket_watch.rs); the WebSocket writer finds it in the extensions.
            if let Some(socket) = SocketId::of(tcp.as_raw_fd()) {
                socket_watch::watch(socket, write_stall_timeout, count_stalled_writer);
                extensions.insert(socket);
            }
        })
        // Signals are ours: a shutdown first ends every chat, then stops the HTTP server.
        .disable_signals()
        .shutdown_timeout(drain.as_secs().max(1))
        // A client gets this long to send its request's headers, so slow senders cannot hold
        // connections open; established WebSockets are not affected.
        .client_request_timeout(Settings::duration(settings.http_request_timeout_seconds))
        .client_disconnect_timeout(Duration::from_secs(2))
        .max_connections(settings.max_sessions.saturating_add(1024));
        http = if settings.tls_enabled() {
            let tls = hardening::tls_config(&settings.tls_cert_path, &settings.tls_key_path)
                .map_err(std::io::Error::other)?;
            http.listen_rustls_0_23(listener, tls)?
        } else {
            http.listen(listener)?
        };
        if settings.workers > 0 {
            http = http.workers(settings.workers);
        }
        let http = http.run();
        let server = Server {
            local_addr,
            metrics_addr,
            scheme: if settings.tls_enabled() {
                "https"
            } else {
                "http"
            },
            hub,
            http: http.handle(),
            admin,
            drain,
            mqtt,
            cluster: cluster_node,
        };
        Ok((server, http))
    }

    /// The admin listener: /metrics for Prometheus, on its own address (`metrics_addr`, by
    /// default loopback only), so the public port never serves it. One worker is plenty.
    fn start_admin(
        listener: TcpListener,
        state: web::Data<AppState>,
    ) -> std::io::Result<ServerHandle> {
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(hardening::security_headers())
                .route("/metrics", web::get().to(routes::metrics))
        })
        .disable_signals()
        .workers(1)
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = admin.handle();
        actix_web::rt::spawn(admin);
        Ok(handle)
    }

    /// Graceful shutdown: refuse new sessions, end every chat with `server_shutdown`, close
    /// every socket with a close frame, then stop the HTTP server; all within the drain time.
    pub async fn shutdown(&self) {
        self.hub.shutdown();
        let _ = tokio::time::timeout(self.drain, self.hub.drained()).await;
        // Close frames are queued; give writers a moment to flush them before stopping.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.http.stop(true).await;
        self.admin.stop(true).await;
        if let Some(mqtt) = &self.mqtt {
            mqtt.stop();
        }
        if let Some(node) = &self.cluster {
            node.depart().await;
        }
    }
}

fn count_stalled_writer() {
    metrics::counter!(
        "ephemera_disconnects_total",
        "reason" => ephemera_actors::metrics::Disconnect::WriteStalled.label()
    )
    .increment(1);
}

/// Runs the server until SIGINT or SIGTERM, then drains.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let (server, http) = Server::start(&settings).await?;
    let shown = if server.local_addr.ip().is_unspecified() {
        format!(
            "{}://127.0.0.1:{}/",
            server.scheme,
            server.local_addr.port()
        )
    } else {
        format!("{}://{}/", server.scheme, server.local_addr)
    };
    // The banner; a closed standard output (a supervisor that stopped reading) is no reason
    // to stop serving, so write errors are ignored.
    let mut banner = String::new();
    banner.push_str(&format!(
        "ephemera is listening; open {shown} in a browser\n"
    ));
    banner.push_str(&format!(
        "metrics for Prometheus: http://{}/metrics\n",
        server.metrics_addr
    ));
    if !settings.notify_db_path.is_empty() {
        banner.push_str(&format!(
            "e-mail list on: {} (topics: {})\n",
            settings.notify_db_path,
            settings.notify_topics.join(", ")
        ));
    }
    if let Some(node) = &server.cluster {
        banner.push_str(&format!(
            "cluster node {} on {}\n",
            node.id(),
            redacted_url(&settings.cluster_redis_url)
        ));
    }
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    tracing::info!(addr = %server.local_addr, "listening");
    let http_task = actix_web::rt::spawn(http);
    wait_for_signal().await;
    tracing::info!("shutdown signal received, draining");
    server.shutdown().await;
    let _ = http_task.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    // Registering a handler only fails when signals are unavailable, which Linux never is.
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// A Redis URL without its password, fit to print.
fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
