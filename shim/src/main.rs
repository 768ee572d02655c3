use apikey_shim::config::Config;
use apikey_shim::metrics::Metrics;
use apikey_shim::state::AppState;
use apikey_shim::{app, db, serve};
use clap::Parser;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // tokio-postgres logs bind parameters (tokens among them) at debug level: whatever
    // RUST_LOG asks for, these crates never log below info.
    let filter = [
        "tokio_postgres=info",
        "postgres_protocol=info",
        "hyper=info",
        "h2=info",
    ]
    .into_iter()
    .filter_map(|d| d.parse().ok())
    .fold(filter, |f, directive| f.add_directive(directive));
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "apikey-shim stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let pool = db::pool(&config.database_url, config.pool_size)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let state = AppState {
        pool,
        config: Arc::new(config),
        metrics: Arc::new(Metrics::default()),
    };
    tracing::info!(listen = %state.config.listen, "apikey-shim listening");
    let limits = state.config.connection_limits();
    serve::serve(listener, app::router(state), limits, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("apikey-shim stopped after finishing in-flight requests");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing in-flight requests");
}
