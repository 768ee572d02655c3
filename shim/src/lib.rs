//! apikey-shim: partners present keys over HTTP, operators manage keys over JSON. It maps
//! HTTP to the apikey extension's SQL functions and holds no key logic of its own.
//!
//! `config` (flags/env), `auth` (which key, which client IP), `caller` (the extractor of
//! both, and what handling a request noted of its key), `db` (pool, verify, acting as the
//! key holder), `replicas` (the hot standbys verification may use), `abandon` (connections
//! of requests that gave up), `rate` (rate-limit headers), `metrics`, `error` (one error
//! type), `extract` (extractors with that error as rejection), `app` (router + middleware), `serve`
//! (the accept loop and its connection limits), `routes/` one module per resource,
//! `openapi` (the OpenAPI document, generated from the routes),
//! `delivery` (the task that sends webhooks from the outbox), `github_signature` (the
//! signatures and key list of GitHub's secret scanning reports).

pub mod abandon;
pub mod app;
pub mod auth;
pub mod caller;
pub mod config;
pub mod db;
pub mod delivery;
pub mod error;
pub mod extract;
pub mod github_signature;
pub mod metrics;
pub mod openapi;
pub mod rate;
pub mod replicas;
pub mod routes;
pub mod serve;
pub mod state;
