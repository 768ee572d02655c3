//! The reference tables of `docs/src/http.md` that have a single source in the shim: its
//! settings (the clap definition of `Config`) and its metrics (what `/metrics` renders).
//! Each table sits between `<!-- generated: NAME ... -->` and `<!-- end generated -->`; a
//! stale one fails here. After changing a setting or a metric:
//! `APIKEY_WRITE_DOCS=1 cargo test -p apikey-shim --test reference`.

use apikey_shim::config::Config;
use apikey_tests::check_generated_blocks;
use clap::CommandFactory;

fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn settings_table() -> String {
    let mut table = String::from("| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for arg in Config::command().get_arguments() {
        let flag = arg
            .get_long()
            .map(|l| format!("`--{l}`"))
            .unwrap_or_default();
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match (defaults.is_empty(), arg.is_required_set()) {
            (false, _) => format!("`{}`", defaults.join(",")),
            (true, true) => "(required)".to_string(),
            (true, false) => "(none)".to_string(),
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| cell(&h.to_string()))
            .unwrap_or_default();
        table.push_str(&format!("| {flag} | {env} | {default} | {help} |\n"));
    }
    table
}

fn metrics_table() -> String {
    let mut table = String::from("| series | type | meaning |\n|---|---|---|\n");
    for m in apikey_shim::metrics::catalogue() {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            m.name,
            m.kind,
            cell(&m.help)
        ));
    }
    table
}

#[test]
fn the_reference_tables_are_generated_from_the_code() {
    check_generated_blocks(
        "http.md",
        &[
            ("shim-settings", settings_table()),
            ("shim-metrics", metrics_table()),
        ],
        "cargo test -p apikey-shim --test reference",
    );
}

#[test]
fn every_setting_has_a_flag_an_environment_variable_and_a_meaning() {
    for arg in Config::command().get_arguments() {
        let id = arg.get_id();
        assert!(arg.get_long().is_some(), "{id}: no --flag");
        assert!(arg.get_env().is_some(), "{id}: no environment variable");
        assert!(arg.get_help().is_some(), "{id}: no doc comment");
    }
    let names: Vec<String> = apikey_shim::metrics::catalogue()
        .into_iter()
        .map(|m| m.name)
        .collect();
    for expected in [
        "apikey_shim_requests_total",
        "apikey_shim_pool_waiting",
        "apikey_argon2_refused_total",
        "apikey_last_flush_timestamp_seconds",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}
