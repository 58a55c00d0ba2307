//! The `[threat]` section, the `threat` sub-table of a route, and the compiled policy that
//! decides what a request's findings mean.

use http::HeaderName;
use serde::Deserialize;

use super::{Family, Finding, MAX_PARANOIA_LEVEL, rules};

/// Default request threshold: one critical finding (weight 5) blocks a request.
pub const DEFAULT_REQUEST_THRESHOLD: u32 = 5;

/// Headers inspected by default besides `Cookie`.
pub const DEFAULT_HEADERS: [&str; 2] = ["user-agent", "referer"];

/// What the stage does with a request whose score reaches the threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreatMode {
    /// Reject it with 403.
    #[default]
    Block,
    /// Let it through and only report it, to tune exclusions before enforcing.
    Detect,
}

/// `[threat]` section.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThreatConfig {
    /// Whether the detectors run at all.
    pub enabled: bool,
    /// `block` rejects requests at or above `request_threshold` with 403; `detect` only
    /// reports them.
    pub mode: ThreatMode,
    /// Anomaly score at or above which a request is blocked: the sum of the weights of the
    /// distinct rules that matched (critical 5, error 4, warning 3, notice 2).
    pub request_threshold: u32,
    /// Paranoia level, from 1 to 4. Each level adds rules that catch more probes and flag more
    /// ordinary values. Level 1 is meant for every API.
    pub paranoia_level: u8,
    /// Headers to inspect besides `Cookie`, `User-Agent` and `Referer`, by name.
    pub headers: Vec<String>,
    /// Rules or families (`sqli-union`, `xss`) that are reported but never count toward
    /// blocking.
    pub detect_only: Vec<String>,
    /// Findings to ignore everywhere, or on one route.
    pub exclusions: Vec<Exclusion>,
    /// Whether responses carry `x-firewall-threat` with the score and rule ids. Off by
    /// default because it tells an attacker which rules fired; meant for tests and tuning.
    pub verdict_header: bool,
    /// `[threat.sources]`: per-source behaviour signals, scores and escalating bans.
    pub sources: crate::threat::SourcesConfig,
}

impl Default for ThreatConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: ThreatMode::Block,
            request_threshold: DEFAULT_REQUEST_THRESHOLD,
            paranoia_level: 1,
            headers: Vec::new(),
            detect_only: Vec::new(),
            exclusions: Vec::new(),
            verdict_header: false,
            sources: crate::threat::SourcesConfig::default(),
        }
    }
}

/// One exclusion: findings of `rules` in `fields` (on `route`, when set) are dropped. An
/// empty `rules` means every rule and an empty `fields` every field, but not both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Exclusion {
    /// Rule ids or family names, such as `sqli-boolean` or `xss`.
    pub rules: Vec<String>,
    /// Field names, such as `query:q` or `json:comment`. A trailing `*` matches a prefix:
    /// `json:profile.*`.
    pub fields: Vec<String>,
    /// Name of the route it applies to (only in `[threat]`; a route's own exclusions apply to
    /// that route).
    pub route: Option<String>,
}

/// The `threat` sub-table of a `[[routes]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteThreatConfig {
    /// Mode on this route, overriding `[threat] mode`.
    pub mode: Option<ThreatMode>,
    /// Whether the detectors skip this route entirely.
    pub disabled: bool,
    /// Paranoia level on this route, overriding `[threat] paranoia_level`: higher on a login
    /// form, lower on a route that takes free text.
    pub paranoia_level: Option<u8>,
    /// Rules or families reported but not enforced on this route.
    pub detect_only: Vec<String>,
    /// Exclusions on this route.
    pub exclusions: Vec<Exclusion>,
}

/// A problem in the threat configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ThreatConfigError {
    /// The offending key, such as `threat.exclusions[2].rules`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl ThreatConfig {
    /// Checks thresholds, header names and every rule and field name.
    ///
    /// # Errors
    ///
    /// [`ThreatConfigError`] naming the key.
    pub fn validate(&self) -> Result<(), ThreatConfigError> {
        if self.request_threshold == 0 {
            return Err(ThreatConfigError {
                key: "threat.request_threshold".into(),
                problem: "must be at least 1".into(),
            });
        }
        validate_paranoia_level(self.paranoia_level, "threat.paranoia_level")?;
        for name in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ThreatConfigError {
                    key: "threat.headers".into(),
                    problem: format!("`{name}` is not a valid header name"),
                });
            }
        }
        validate_rule_names(&self.detect_only, "threat.detect_only")?;
        validate_exclusions(&self.exclusions, "threat.exclusions")
    }

    /// Returns the headers to inspect besides `Cookie`, lowercase. Names were checked by
    /// [`ThreatConfig::validate`]; an invalid one is skipped.
    pub fn inspected_headers(&self) -> Vec<HeaderName> {
        DEFAULT_HEADERS
            .iter()
            .map(|name| (*name).to_owned())
            .chain(self.headers.iter().map(|name| name.to_ascii_lowercase()))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .fold(Vec::new(), |mut names, name| {
                if !names.contains(&name) {
                    names.push(name);
                }
                names
            })
    }
}

impl RouteThreatConfig {
    /// Checks every rule and field name; `route` names the route in errors.
    ///
    /// # Errors
    ///
    /// [`ThreatConfigError`] naming the key.
    pub fn validate(&self, route: &str) -> Result<(), ThreatConfigError> {
        if let Some(level) = self.paranoia_level {
            validate_paranoia_level(level, &format!("routes.{route}.threat.paranoia_level"))?;
        }
        validate_rule_names(&self.detect_only, &format!("routes.{route}.threat.detect_only"))?;
        validate_exclusions(&self.exclusions, &format!("routes.{route}.threat.exclusions"))
    }
}

fn validate_paranoia_level(level: u8, key: &str) -> Result<(), ThreatConfigError> {
    if (1..=MAX_PARANOIA_LEVEL).contains(&level) {
        return Ok(());
    }
    Err(ThreatConfigError {
        key: key.to_owned(),
        problem: format!("{level} is out of range; use 1 (the default) to {MAX_PARANOIA_LEVEL}"),
    })
}

fn validate_rule_names(names: &[String], key: &str) -> Result<(), ThreatConfigError> {
    for name in names {
        if RuleSelector::parse(name).is_none() {
            return Err(ThreatConfigError {
                key: key.to_owned(),
                problem: format!(
                    "`{name}` is neither a rule id (such as `sqli-union`) nor a family (sqli, xss, lfi, rfi, rce, ssti, php, java, deserialization, protocol, xxe)"
                ),
            });
        }
    }
    Ok(())
}

fn validate_exclusions(exclusions: &[Exclusion], key: &str) -> Result<(), ThreatConfigError> {
    for (index, exclusion) in exclusions.iter().enumerate() {
        let key = format!("{key}[{index}]");
        if exclusion.rules.is_empty() && exclusion.fields.is_empty() {
            return Err(ThreatConfigError {
                key,
                problem: "names neither rules nor fields, so it would turn detection off; set `rules`, `fields` or both".into(),
            });
        }
        validate_rule_names(&exclusion.rules, &format!("{key}.rules"))?;
        if let Some(field) = exclusion.fields.iter().find(|field| field.is_empty()) {
            return Err(ThreatConfigError {
                key: format!("{key}.fields"),
                problem: format!("`{field}` is empty; use a field name such as `query:q`"),
            });
        }
    }
    Ok(())
}

/// A rule id or a family, as named in config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RuleSelector {
    Rule(&'static str),
    Family(Family),
}

impl RuleSelector {
    fn parse(name: &str) -> Option<Self> {
        if let Some(rule) = rules::find(name) {
            return Some(RuleSelector::Rule(rule.id));
        }
        rules::ALL
            .iter()
            .map(|rule| rule.family)
            .find(|family| family.label() == name)
            .map(RuleSelector::Family)
    }

    fn matches(self, finding: &Finding) -> bool {
        match self {
            RuleSelector::Rule(id) => finding.rule.id == id,
            RuleSelector::Family(family) => finding.rule.family == family,
        }
    }
}

/// An exclusion with its names parsed.
#[derive(Clone, Debug)]
struct CompiledExclusion {
    rules: Vec<RuleSelector>,
    fields: Vec<String>,
    route: Option<String>,
}

impl CompiledExclusion {
    fn new(exclusion: &Exclusion, route: Option<&str>) -> Self {
        Self {
            rules: exclusion.rules.iter().filter_map(|name| RuleSelector::parse(name)).collect(),
            fields: exclusion.fields.clone(),
            route: route.map(str::to_owned).or_else(|| exclusion.route.clone()),
        }
    }

    fn matches(&self, finding: &Finding, route: Option<&str>) -> bool {
        if let Some(excluded_route) = &self.route
            && route != Some(excluded_route.as_str())
        {
            return false;
        }
        let rule_matches =
            self.rules.is_empty() || self.rules.iter().any(|selector| selector.matches(finding));
        let field_matches = self.fields.is_empty()
            || self.fields.iter().any(|pattern| field_matches(pattern, &finding.field));
        rule_matches && field_matches
    }
}

fn field_matches(pattern: &str, field: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => field.starts_with(prefix),
        None => pattern == field,
    }
}

/// The threat configuration compiled for use per request.
#[derive(Clone, Debug)]
pub struct ThreatPolicy {
    mode: ThreatMode,
    threshold: u32,
    paranoia_level: u8,
    detect_only: Vec<RuleSelector>,
    exclusions: Vec<CompiledExclusion>,
    routes: Vec<(String, RouteThreatConfig, Vec<RuleSelector>)>,
    headers: Vec<HeaderName>,
    verdict_header: bool,
    enabled: bool,
}

/// What the policy makes of a request's findings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Findings left after exclusions.
    pub findings: Vec<Finding>,
    /// Anomaly score of those findings.
    pub score: u32,
    /// Score of the findings that are enforced (not detection-only).
    pub enforced_score: u32,
    /// Whether the request is to be rejected.
    pub block: bool,
}

impl ThreatPolicy {
    /// Compiles `config` and the `threat` sub-tables of the routes, given as route name and
    /// sub-table.
    pub fn new<'a>(
        config: &ThreatConfig,
        routes: impl IntoIterator<Item = (&'a str, &'a RouteThreatConfig)>,
    ) -> Self {
        let mut exclusions: Vec<CompiledExclusion> = config
            .exclusions
            .iter()
            .map(|exclusion| CompiledExclusion::new(exclusion, None))
            .collect();
        let mut compiled_routes = Vec::new();
        for (name, route) in routes {
            exclusions.extend(
                route
                    .exclusions
                    .iter()
                    .map(|exclusion| CompiledExclusion::new(exclusion, Some(name))),
            );
            let detect_only = route.detect_only.iter().filter_map(|rule| RuleSelector::parse(rule)).collect();
            compiled_routes.push((name.to_owned(), route.clone(), detect_only));
        }
        Self {
            mode: config.mode,
            threshold: config.request_threshold,
            paranoia_level: config.paranoia_level,
            detect_only: config.detect_only.iter().filter_map(|rule| RuleSelector::parse(rule)).collect(),
            exclusions,
            routes: compiled_routes,
            headers: config.inspected_headers(),
            verdict_header: config.verdict_header,
            enabled: config.enabled,
        }
    }

    /// Returns the headers to inspect besides `Cookie`.
    pub fn inspected_headers(&self) -> &[HeaderName] {
        &self.headers
    }

    /// Returns the paranoia level on `route`. The rules of this level and the levels below run.
    pub fn paranoia_level(&self, route: Option<&str>) -> u8 {
        self.route_config(route)
            .and_then(|(config, _)| config.paranoia_level)
            .unwrap_or(self.paranoia_level)
    }

    /// Whether responses carry the verdict header.
    pub fn verdict_header(&self) -> bool {
        self.verdict_header
    }

    /// Whether requests on `route` are inspected at all.
    pub fn inspects(&self, route: Option<&str>) -> bool {
        self.enabled && !self.route_config(route).is_some_and(|(config, _)| config.disabled)
    }

    fn route_config(&self, route: Option<&str>) -> Option<(&RouteThreatConfig, &[RuleSelector])> {
        let route = route?;
        self.routes
            .iter()
            .find(|(name, _, _)| name == route)
            .map(|(_, config, detect_only)| (config, detect_only.as_slice()))
    }

    /// Drops excluded findings, scores the rest and decides.
    pub fn judge(&self, findings: Vec<Finding>, route: Option<&str>) -> Verdict {
        let findings: Vec<Finding> = findings
            .into_iter()
            .filter(|finding| !self.exclusions.iter().any(|exclusion| exclusion.matches(finding, route)))
            .collect();
        let route_config = self.route_config(route);
        let mode = route_config.and_then(|(config, _)| config.mode).unwrap_or(self.mode);
        let route_detect_only = route_config.map_or(&[][..], |(_, detect_only)| detect_only);

        let score = super::anomaly_score(&findings);
        let enforced_score = super::anomaly_score(findings.iter().filter(|finding| {
            !self
                .detect_only
                .iter()
                .chain(route_detect_only)
                .any(|selector| selector.matches(finding))
        }));
        let block = mode == ThreatMode::Block && enforced_score >= self.threshold;
        Verdict {
            findings,
            score,
            enforced_score,
            block,
        }
    }
}
