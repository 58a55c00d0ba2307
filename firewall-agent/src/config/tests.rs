use std::path::{Path, PathBuf};

use super::*;

const PATH: &str = "/etc/api-firewall/agent.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

fn minimal() -> Config {
    let mut config = Config::default();
    config.apply(Overrides {
        upstream: Some("http://127.0.0.1:9000".parse().expect("valid URL")),
        interfaces: vec!["veth0".into()],
        ..Overrides::default()
    });
    config
}

fn invalid_key(config: &Config) -> String {
    match config.validate(&ConfigOrigin::File(PathBuf::from(PATH))) {
        Err(ConfigError::Invalid { key, .. }) => key.to_owned(),
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

#[test]
fn example_limits_block_parses_when_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.toml");
    let text = std::fs::read_to_string(&path).expect("example config is readable");
    let block: String = text
        .lines()
        .skip_while(|line| *line != "# [limits]")
        .take_while(|line| line.starts_with('#'))
        .map(|line| line.strip_prefix("# ").unwrap_or(line.trim_start_matches('#')))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(block.contains("[[limits.rules]]"), "no commented [limits] block in the example");

    let config = Config::parse(&block, &path).expect("the uncommented block parses");

    assert_eq!(config.limits.rules.len(), 1);
    assert_eq!(config.limits.rules[0].tiers.len(), 2);
}

#[test]
fn example_route_block_parses_when_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.toml");
    let text = std::fs::read_to_string(&path).expect("example config is readable");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .windows(2)
        .position(|pair| pair[0] == "# [[routes]]" && pair[1] == "# name = \"uploads\"")
        .expect("commented uploads route in the example");
    // Settings and tables are uncommented; the prose between them stays out.
    let is_setting = |line: &str| {
        line.starts_with('[')
            || line
                .split_once('=')
                .is_some_and(|(key, _)| !key.trim().is_empty() && !key.trim().contains(' '))
    };
    let block: String = lines[start..]
        .iter()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| is_setting(line))
        .map(|line| format!("{line}\n"))
        .collect();

    let config = Config::parse(&block, &path).expect("the uncommented route block parses");

    assert_eq!(config.routes.len(), 1);
    assert!(config.routes[0].validation.is_some(), "no validation table");
    assert!(config.routes[0].headers.is_some(), "no headers table");
    assert!(config.routes[0].cors.is_some(), "no CORS table");
}

#[test]
fn example_file_parses_to_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.toml");
    let text = std::fs::read_to_string(&path).expect("example config is readable");

    let config = Config::parse(&text, &path).expect("example config parses");

    let mut expected = Config::default();
    expected.proxy.upstream = Some("http://127.0.0.1:9000".parse().expect("valid URL"));
    expected.xdp.interfaces = vec!["eth0".into()];
    assert_eq!(config, expected);
    config
        .validate(&ConfigOrigin::File(path))
        .expect("example config is valid");
}

#[test]
fn defaults_match_documented_values() {
    let config = Config::default();
    assert_eq!(config.proxy.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:9750");
    assert_eq!(
        config.admin.socket_path,
        PathBuf::from("/run/api-firewall/admin.sock")
    );
    assert_eq!(
        config.store.path,
        PathBuf::from("/var/lib/api-firewall/state.redb")
    );
    assert_eq!(config.log.format, LogFormat::Text);
}

#[test]
fn unknown_key_names_key_and_file() {
    let error = parse("[rate_limit]\nrequests = 10\nwindw = 5\n").expect_err("unknown key");

    let message = error.to_string();
    assert!(
        message.starts_with(&format!("config {PATH}: ")),
        "{message}"
    );
    assert!(
        message.contains("unknown key `rate_limit.windw`"),
        "{message}"
    );
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("window_seconds"), "{message}");
}

#[test]
fn unknown_section_is_rejected() {
    let error = parse("[ratelimit]\nrequests = 10\n").expect_err("unknown section");
    let message = error.to_string();
    assert!(message.contains("unknown key `ratelimit`"), "{message}");
}

#[test]
fn unknown_key_in_dotted_form_is_named() {
    let error = parse("bans.strike = 3\n").expect_err("unknown key");
    let message = error.to_string();
    assert!(message.contains("unknown key `bans.strike`"), "{message}");
}

#[test]
fn wrong_type_names_key() {
    let error = parse("[rate_limit]\nrequests = \"ten\"\n").expect_err("wrong type");

    let ConfigError::Parse { key, message, .. } = &error else {
        panic!("expected a parse error, got {error:?}");
    };
    assert_eq!(key.as_deref(), Some("rate_limit.requests"));
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn negative_value_names_key() {
    let error = parse("[bans]\nban_seconds = -5\n").expect_err("negative value");
    let message = error.to_string();
    assert!(message.contains("`bans.ban_seconds`"), "{message}");
}

#[test]
fn value_in_table_array_names_key() {
    let route = "[[routes]]\nname = \"a\"\npath = \"/a\"\n[[routes]]\nname = \"b\"\npath = \"/b\"\n";
    let error = parse(&format!("{route}[routes.threat]\ndisabled = \"yes\"\n")).expect_err("string for a boolean");
    let unknown = parse(&format!("{route}[routes.cors]\norigins = []\n")).expect_err("unknown key");

    let message = error.to_string();
    assert!(message.contains("invalid value for `routes[1].threat.disabled` at line 8"), "{message}");
    let message = unknown.to_string();
    assert!(message.contains("unknown key `routes[1].cors.origins`"), "{message}");
}

#[test]
fn invalid_listen_address_names_key() {
    let error = parse("[proxy]\nlisten = \"localhost\"\n").expect_err("invalid address");
    let message = error.to_string();
    assert!(message.contains("`proxy.listen`"), "{message}");
}

#[test]
fn https_upstream_needs_ca_file() {
    let mut config = parse("[proxy]\nupstream = \"https://192.0.2.10\"\n").expect("https parses");
    config.xdp.interfaces = vec!["lo".into()];

    let error = config
        .validate(&ConfigOrigin::Flags)
        .expect_err("https without a CA file");

    let message = error.to_string();
    assert!(message.contains("tls.upstream_ca_path"), "{message}");
    config.tls.upstream_ca_path = Some("/etc/api-firewall/upstream-ca.pem".into());
    assert!(config.validate(&ConfigOrigin::Flags).is_ok());
}

#[test]
fn invalid_toml_reports_line() {
    let error = parse("[proxy\nlisten = 1\n").expect_err("syntax error");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("config {PATH}: invalid TOML at line 1")),
        "{message}"
    );
}

#[test]
fn zero_requests_is_invalid() {
    let mut config = minimal();
    config.rate_limit.requests = 0;

    let error = config
        .validate(&ConfigOrigin::File(PathBuf::from(PATH)))
        .expect_err("zero requests");

    assert_eq!(
        error.to_string(),
        format!("config {PATH}: rate_limit.requests must be at least 1")
    );
}

#[test]
fn zero_durations_are_invalid() {
    type Change = fn(&mut Config);
    let cases: [(Change, &str); 5] = [
        (
            |c| c.rate_limit.window_seconds = 0,
            "rate_limit.window_seconds",
        ),
        (
            |c| c.bans.strike_window_seconds = 0,
            "bans.strike_window_seconds",
        ),
        (|c| c.bans.ban_seconds = 0, "bans.ban_seconds"),
        (
            |c| c.bans.sweep_interval_seconds = 0,
            "bans.sweep_interval_seconds",
        ),
        (
            |c| c.proxy.request_timeout_seconds = 0,
            "proxy.request_timeout_seconds",
        ),
    ];
    for (change, key) in cases {
        let mut config = minimal();
        change(&mut config);
        assert_eq!(invalid_key(&config), key);
    }
}

#[test]
fn too_many_worker_threads_is_invalid() {
    let mut config = minimal();
    config.proxy.worker_threads = crate::proxy::MAX_WORKER_THREADS;
    let origin = ConfigOrigin::File(PathBuf::from(PATH));
    assert!(config.validate(&origin).is_ok());

    config.proxy.worker_threads = crate::proxy::MAX_WORKER_THREADS + 1;
    assert_eq!(invalid_key(&config), "proxy.worker_threads");
}

#[test]
fn zero_strikes_is_invalid() {
    let mut config = minimal();
    config.bans.strikes = 0;
    assert_eq!(invalid_key(&config), "bans.strikes");
}

#[test]
fn too_long_duration_is_invalid() {
    let mut config = minimal();
    config.bans.ban_seconds = MAX_DURATION_SECONDS + 1;
    assert_eq!(invalid_key(&config), "bans.ban_seconds");
}

#[test]
fn metrics_must_listen_on_loopback() {
    let mut config = minimal();
    config.metrics.listen = "0.0.0.0:9750".parse().expect("valid address");
    assert_eq!(invalid_key(&config), "metrics.listen");

    config.metrics.listen = "[::1]:9750".parse().expect("valid address");
    assert!(config.validate(&ConfigOrigin::Flags).is_ok());
}

#[test]
fn missing_upstream_names_flag() {
    let mut config = minimal();
    config.proxy.upstream = None;

    let error = config
        .validate(&ConfigOrigin::Flags)
        .expect_err("no upstream");

    let message = error.to_string();
    assert!(
        message.starts_with("config from command-line flags: proxy.upstream"),
        "{message}"
    );
    assert!(message.contains("--upstream"), "{message}");
}

#[test]
fn missing_interfaces_names_flag() {
    let mut config = minimal();
    config.xdp.interfaces.clear();

    let message = config
        .validate(&ConfigOrigin::Flags)
        .expect_err("no interfaces")
        .to_string();

    assert!(message.contains("xdp.interfaces"), "{message}");
    assert!(message.contains("--interface"), "{message}");
}

#[test]
fn invalid_interface_name_is_named() {
    let mut config = minimal();
    config.xdp.interfaces = vec!["a-name-longer-than-15".into()];
    assert_eq!(invalid_key(&config), "xdp.interfaces");
}

#[test]
fn socket_path_length_is_checked() {
    let mut config = minimal();
    config.admin.socket_path = PathBuf::from(format!("/run/{}.sock", "s".repeat(120)));
    assert_eq!(invalid_key(&config), "admin.socket_path");
}

#[test]
fn flags_override_file_values() {
    let mut config = parse(
        "[proxy]\nlisten = \"127.0.0.1:1000\"\nupstream = \"http://127.0.0.1:2000\"\n\
         [xdp]\ninterfaces = [\"eth0\"]\n[log]\nformat = \"json\"\n",
    )
    .expect("valid config");

    config.apply(Overrides {
        upstream: Some("http://127.0.0.1:3000".parse().expect("valid URL")),
        listen: Some("127.0.0.1:4000".parse().expect("valid address")),
        interfaces: vec!["veth1".into(), "veth2".into()],
        log_format: Some(LogFormat::Text),
        ..Overrides::default()
    });

    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:4000");
    assert_eq!(
        config.proxy.upstream.map(|url| url.to_string()),
        Some("http://127.0.0.1:3000".to_owned())
    );
    assert_eq!(config.xdp.interfaces, vec!["veth1", "veth2"]);
    assert_eq!(config.log.format, LogFormat::Text);
}

#[test]
fn load_without_file_uses_flags() {
    let config = Config::load(
        None,
        Overrides {
            upstream: Some("http://127.0.0.1:9000".parse().expect("valid URL")),
            listen: Some("127.0.0.1:8081".parse().expect("valid address")),
            interfaces: vec!["veth0".into()],
            ..Overrides::default()
        },
    )
    .expect("flags alone are enough");

    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(config.xdp.interfaces, vec!["veth0"]);
}

#[test]
fn load_missing_file_names_path() {
    let error = Config::load(
        Some(Path::new("/nonexistent/agent.toml")),
        Overrides::default(),
    )
    .expect_err("missing file");
    assert!(
        error.to_string().contains("/nonexistent/agent.toml"),
        "{error}"
    );
}

#[test]
fn upstream_url_forms() {
    let url: UpstreamUrl = "http://127.0.0.1:9000/api/".parse().expect("valid URL");
    assert_eq!(url.authority().as_str(), "127.0.0.1:9000");
    assert_eq!(url.base_path(), "/api");
    assert_eq!(url.to_string(), "http://127.0.0.1:9000/api");

    let root: UpstreamUrl = "http://[::1]:9000".parse().expect("valid URL");
    assert_eq!(root.base_path(), "");

    for invalid in [
        "127.0.0.1:9000",
        "ftp://192.0.2.1",
        "http://user@192.0.2.1",
        "http://192.0.2.1/?q=1",
    ] {
        assert!(
            invalid.parse::<UpstreamUrl>().is_err(),
            "{invalid} must be rejected"
        );
    }
}

#[test]
fn routes_parse_and_an_invalid_pattern_names_the_entry() {
    let config = parse(
        "[[routes]]\nname = \"users\"\npath = \"/users/{id}\"\nmethods = [\"GET\"]\nmax_body_bytes = 4096\n\n[[routes]]\npath = \"/files/{*rest}/x\"\n",
    )
    .expect("routes parse");
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.routes[0].max_body_bytes, Some(4096));

    let mut invalid = minimal();
    invalid.routes = config.routes;
    let error = invalid
        .validate(&ConfigOrigin::File(PathBuf::from(PATH)))
        .expect_err("the second route is invalid");
    let message = error.to_string();
    assert!(message.contains("routes"), "{message}");
    assert!(message.contains("entry 2"), "{message}");
    assert!(message.contains("must be the last segment"), "{message}");
}

#[test]
fn zero_body_limit_is_invalid() {
    let mut config = minimal();
    config.proxy.max_body_bytes = 0;

    assert_eq!(invalid_key(&config), "proxy.max_body_bytes");
}

#[test]
fn zero_ban_table_entries_is_invalid() {
    let mut config = minimal();
    config.xdp.ban_table_entries = 0;

    assert_eq!(invalid_key(&config), "xdp.ban_table_entries");
}

/// Returns the keys that a table of the config accepts, read from the parser's error for an
/// unknown key, so a key added to a config struct needs no list updated. `prefix` contains the
/// headers that lead to the probed table.
fn accepted_keys(prefix: &str) -> Vec<String> {
    let text = format!("{prefix}\nzz_unknown_probe = 1\n");
    let message = match parse(&text) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("an unknown key was accepted after {prefix:?}"),
    };
    let (_, expected) = message
        .split_once("zz_unknown_probe")
        .unwrap_or_else(|| panic!("no unknown-key message after {prefix:?}: {message}"));
    expected
        .split('`')
        .skip(2)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Returns the example's lines under every header of `table`, commented out or not. Each
/// section ends at the next header.
fn example_section(text: &str, table: &str) -> String {
    let header_of = |line: &str| {
        let line = line.trim_start_matches('#').trim();
        let inner = line.strip_prefix("[[").and_then(|rest| rest.strip_suffix("]]"));
        let inner = inner.or_else(|| line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')));
        inner.filter(|name| !name.contains([' ', '"', '=', ','])).map(str::to_owned)
    };
    let mut section = String::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some(name) = header_of(line) {
            inside = name == table;
        } else if inside {
            section.push_str(line);
            section.push('\n');
        }
    }
    section
}

#[test]
fn example_file_names_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.toml");
    let text = std::fs::read_to_string(&path).expect("example config is readable");
    // (headers leading to the probed table, table whose example section names its keys)
    let tables = [
        ("[proxy]", "proxy"),
        ("[http]", "http"),
        ("[tls]", "tls"),
        ("[xdp]", "xdp"),
        ("[rate_limit]", "rate_limit"),
        ("[limits]", "limits"),
        ("[[limits.rules]]", "limits.rules"),
        ("[[limits.rules]]\n[[limits.rules.tiers]]", "limits.rules"),
        ("[limits.redis]", "limits.redis"),
        ("[bans]", "bans"),
        ("[admin]", "admin"),
        ("[metrics]", "metrics"),
        ("[store]", "store"),
        ("[log]", "log"),
        ("[threat]", "threat"),
        ("[[threat.exclusions]]", "threat.exclusions"),
        ("[threat.sources]", "threat.sources"),
        ("[validation]", "validation"),
        ("[openapi]", "openapi"),
        ("[[routes]]", "routes"),
        ("[[routes]]\n[routes.threat]", "routes.threat"),
        ("[[routes]]\n[routes.validation]", "routes.validation"),
        ("[[routes]]\n[routes.headers]", "routes.headers"),
        ("[[routes]]\n[routes.cors]", "routes.cors"),
        ("[[routes]]\n[routes.auth]", "routes.auth"),
        ("[tokens]", "tokens"),
        ("[[tokens.issuers]]", "tokens.issuers"),
        ("[audit]", "audit"),
        ("[oauth]", "oauth"),
        ("[[oauth.clients]]", "oauth.clients"),
    ];
    let mut missing = Vec::new();

    for (prefix, table) in tables {
        let section = example_section(&text, table);
        assert!(!section.is_empty(), "the example has no [{table}] section");
        let keys = accepted_keys(prefix);
        assert!(!keys.is_empty(), "no keys reported for {prefix:?}");
        for key in keys {
            let named = section.lines().any(|line| {
                let line = line.trim_start_matches('#').trim_start();
                line.starts_with(&format!("{key} ="))
                    || line.contains(&format!("{{ {key} ="))
                    || line.contains(&format!(", {key} ="))
            });
            // Sub-tables are probed on their own.
            if !named && !is_sub_table(prefix, &key) {
                missing.push(format!("{table}.{key}"));
            }
        }
    }

    assert!(missing.is_empty(), "keys the example does not name: {missing:?}");
}

/// Returns whether `key` of the table after `prefix` is a table probed on its own.
fn is_sub_table(prefix: &str, key: &str) -> bool {
    let table = prefix.lines().last().unwrap_or_default().trim_matches(['[', ']']);
    let sub = format!("{table}.{key}");
    matches!(
        sub.as_str(),
        "limits.rules" | "limits.redis" | "threat.exclusions" | "threat.sources" | "routes.threat"
            | "routes.validation" | "routes.headers" | "routes.cors" | "routes.auth"
            | "tokens.issuers" | "oauth.clients"
    )
}

#[test]
fn upstream_idle_connections_parse() {
    let config = parse("[proxy]\nupstream = \"http://127.0.0.1:8080\"\n").expect("valid config");
    assert_eq!(
        config.proxy.upstream_idle_connections,
        crate::proxy::DEFAULT_UPSTREAM_IDLE_CONNECTIONS
    );

    let config = parse("[proxy]\nupstream = \"http://127.0.0.1:8080\"\nupstream_idle_connections = 0\n")
        .expect("valid config");
    assert_eq!(config.proxy.upstream_idle_connections, 0);

    let error = parse("[proxy]\nupstream_idle_connections = -1\n").expect_err("negative count");
    let message = error.to_string();
    assert!(message.contains("upstream_idle_connections"), "{message}");
    assert!(message.contains("expected a whole number, 0 or more"), "{message}");
    assert!(!message.contains("usize"), "{message}");
}

#[test]
fn type_errors_name_no_rust_types() {
    let error = parse("[rate_limit]\nrequests = \"many\"\n").expect_err("a string for a count");
    let message = error.to_string();
    assert!(message.contains("expected a whole number from 0 to 4294967295"), "{message}");
    assert!(!message.contains("u32"), "{message}");

    assert_eq!(
        plain_type_names("expected u8, expected u16x"),
        "expected a whole number from 0 to 255, expected u16x"
    );
}
