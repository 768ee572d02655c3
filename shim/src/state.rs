//! What every handler shares.

use crate::config::Config;
use crate::github_signature::KeyFile;
use crate::metrics::Metrics;
use deadpool_postgres::Pool;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// GitHub's secret scanning public keys, when APIKEY_SHIM_SECRET_SCANNING_KEYS is set.
    pub secret_scanning: Option<Arc<KeyFile>>,
}
