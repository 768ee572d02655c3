use apikey_shim::config::Config;
use apikey_shim::github_signature::KeyFile;
use apikey_shim::state::AppState;
use apikey_shim::{app, delivery, serve};
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
    let secret_scanning = match &config.secret_scanning_keys {
        Some(path) => {
            let keys = KeyFile::load(path)
                .map_err(|e| format!("APIKEY_SHIM_SECRET_SCANNING_KEYS: {e}"))?;
            tracing::info!(
                path = %path.display(),
                keys = keys.keys().len(),
                action = config.secret_scanning_action.as_str(),
                "GitHub secret scanning reports accepted at POST /v1/secret-scanning"
            );
            Some(Arc::new(keys))
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let state = AppState::new(config, secret_scanning)?;
    if !state.replicas.is_empty() {
        let names: Vec<&str> = state
            .replicas
            .servers()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        tracing::info!(replicas = %names.join(", "), "verifying with hot standbys");
        state.replicas.spawn_probe(state.pool.clone());
    }
    // One signal stops both the server and the webhook delivery task.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let deliverer = if state.config.webhook_delivery {
        Some(delivery::spawn(
            state.pool.clone(),
            state.config.webhook_settings(),
            Arc::clone(&state.metrics),
            stopping.clone(),
        )?)
    } else {
        tracing::info!("webhook delivery is off (APIKEY_SHIM_WEBHOOK_DELIVERY=false)");
        None
    };
    tracing::info!(listen = %state.config.listen, "apikey-shim listening");
    let limits = state.config.connection_limits();
    let mut stopped = stopping;
    serve::serve(listener, app::router(state), limits, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    })
    .await
    .map_err(|e| format!("server error: {e}"))?;
    if let Some(deliverer) = deliverer {
        // The task bounds its own shutdown (it abandons attempts after a grace period).
        let _ = deliverer.await;
    }
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
