//! `edge-bench-agent`: the agent's proxy run in-process on loopback with a memory blocklist,
//! for `cargo xtask bench http`, which needs the proxy without loading the XDP program.
//!
//! Usage: `edge-bench-agent UPSTREAM_ADDR [--edge] [--tls CERT KEY]`. Prints the proxy's port
//! on the first line of stdout and serves until stdin is closed. `--edge` turns on the
//! per-route features, request validation among them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use firewall_agent::proxy::headers::{CorsConfig, CorsPolicy, HeaderRules, HeadersConfig};
use firewall_agent::routes::RouteConfig;
use firewall_agent::validation::RouteValidationConfig;
use integration_tests::bench;
use integration_tests::edge::EdgeAgent;

/// The agent binary's allocator, so that the bench measures what the daemon runs.
#[global_allocator]
static ALLOCATOR: firewall_agent::MiMalloc = firewall_agent::MiMalloc;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let upstream = bench::upstream_arg(&mut args)?;
    let mut edge = false;
    let mut tls: Option<(PathBuf, PathBuf)> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--edge" => edge = true,
            "--tls" => {
                let cert = args.next().context("--tls needs a certificate path")?;
                let key = args.next().context("--tls needs a key path")?;
                tls = Some((cert.into(), key.into()));
            }
            other => bail!("unknown argument `{other}`: expected --edge or --tls CERT KEY"),
        }
    }

    let name = format!("bench-{}", std::process::id());
    let query_schema = std::env::temp_dir().join(format!("fw-{name}-query-schema.json"));
    if edge {
        std::fs::write(&query_schema, QUERY_SCHEMA)
            .with_context(|| format!("failed to write {}", query_schema.display()))?;
    }
    let agent = EdgeAgent::start(&name, upstream, |config| {
        if let Some((cert, key)) = tls {
            config.tls.cert_path = Some(cert);
            config.tls.key_path = Some(key);
        }
        if edge {
            configure_edge(config, query_schema.clone());
        }
    });
    bench::announce_port(agent.addr.port())?;
    bench::wait_for_stdin_close();
    drop(agent);
    if edge {
        let _ = std::fs::remove_file(&query_schema);
    }
    Ok(())
}

/// JSON Schema of the bench route's query: an optional numeric `page` and nothing else.
const QUERY_SCHEMA: &str = r#"{
    "type": "object",
    "properties": { "page": { "type": "string", "pattern": "^[0-9]{1,6}$" } },
    "additionalProperties": false
}"#;

/// Turns on the configurable edge features that run per request: a matched route with
/// request validation (methods, content types, body size and a query schema), header
/// overrides and a CORS policy, and trusted-proxy resolution.
fn configure_edge(config: &mut firewall_agent::config::Config, query_schema: PathBuf) {
    let headers = HeadersConfig {
        set: [("cache-control".to_owned(), "private, max-age=5".to_owned())].into(),
        remove: vec!["x-frame-options".into()],
    };
    let cors = CorsConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..CorsConfig::default()
    };
    let validation = RouteValidationConfig {
        methods: vec!["GET".into(), "POST".into()],
        content_types: vec!["application/json".into()],
        max_body_bytes: Some(64 * 1024),
        query_schema: Some(query_schema),
        ..RouteValidationConfig::default()
    };
    config.routes.push(RouteConfig {
        path: "/{*rest}".into(),
        validation: Some(validation),
        headers: HeaderRules::new(&headers).ok(),
        cors: CorsPolicy::new(&cors).ok(),
        ..RouteConfig::default()
    });
    if let Ok(range) = "198.51.100.0/24".parse() {
        config.proxy.trusted_proxies = vec![range];
    }
}
