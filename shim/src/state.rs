//! What every handler shares.

use crate::abandon::{self, Connection};
use crate::config::Config;
use crate::db;
use crate::github_signature::KeyFile;
use crate::metrics::Metrics;
use crate::replicas::Replicas;
use deadpool_postgres::{Pool, PoolError};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    /// The primary: `DATABASE_URL`.
    pub pool: Pool,
    /// Hot standbys verification may use: `APIKEY_SHIM_REPLICA_URLS`.
    pub replicas: Arc<Replicas>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// GitHub's secret scanning public keys, when APIKEY_SHIM_SECRET_SCANNING_KEYS is set.
    pub secret_scanning: Option<Arc<KeyFile>>,
}

impl AppState {
    /// The pools of `config` (no connection is opened yet).
    pub fn new(config: Config, secret_scanning: Option<Arc<KeyFile>>) -> Result<AppState, String> {
        let replica_timeout = Duration::from_millis(config.replica_timeout_ms);
        let make_pool = |url: &str, connect_timeout| {
            db::pool(
                url,
                config.pool_size,
                config.request_timeout(),
                connect_timeout,
            )
        };
        let pool = make_pool(&config.database_url, config.request_timeout())?;
        let replicas = Replicas::new(
            &config.replica_urls,
            |url| make_pool(url, replica_timeout),
            Duration::from_millis(config.max_replica_lag_ms),
            Duration::from_millis(config.replica_wait_ms),
            replica_timeout,
        )?;
        Ok(AppState {
            pool,
            replicas: Arc::new(replicas),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            secret_scanning,
        })
    }

    /// A pooled connection for the request being handled: cancelled and closed, not
    /// returned, if the request is abandoned while it holds it (see `abandon`).
    pub async fn connection(&self) -> Result<Connection, PoolError> {
        abandon::connection(&self.pool).await
    }
}
