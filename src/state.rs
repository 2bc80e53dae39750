//! `AppState`: what every request handler is handed (the chat hub and the request-level
//! settings), so no handler imports the start-up code for a type.

use std::sync::Arc;

use ephemera_actors::Hub;

use crate::settings::AddressHeader;

/// Shared with every request handler.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub client_address_header: AddressHeader,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The country database, when `geoip_db_path` names one.
    pub geo: Option<Arc<crate::geo::GeoDb>>,
    /// The e-mail list, when `notify_db_path` is set.
    pub notify: Option<crate::notify::Notifier>,
    /// This node's place in a cluster, when `cluster_redis_url` is set.
    pub cluster: Option<ephemera_actors::node::Node>,
}
