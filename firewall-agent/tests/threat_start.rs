//! The threat stage compiles the detectors' patterns when it is created, so that the first
//! request after a start does not wait for them. This runs in a process of its own because
//! any detection elsewhere compiles them too.

use std::sync::Arc;

use firewall_agent::detect::{self, RouteThreatConfig, ThreatConfig, ThreatPolicy};
use firewall_agent::events::EventSinks;
use firewall_agent::proxy::stages::threat::ThreatStage;

#[test]
fn threat_stage_compiles_patterns() {
    assert!(!detect::patterns_compiled());

    let policy = Arc::new(ThreatPolicy::new(
        &ThreatConfig::default(),
        std::iter::empty::<(&str, &RouteThreatConfig)>(),
    ));
    let _stage = ThreatStage::new(policy, EventSinks::new(), Arc::new(|_| false));

    assert!(detect::patterns_compiled());
}
