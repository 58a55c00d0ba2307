//! Feeds arbitrary bytes to the strict JSON parser. It must never panic, and whatever it
//! accepts `serde_json` must accept with the same value. Every recorded string span must slice
//! a string literal that decodes to the recorded value.

#![no_main]

use firewall_agent::validation::json::{JsonLimits, PointerPattern, parse_watching};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = JsonLimits {
        max_depth: 32,
        max_bytes: 64 * 1024,
    };
    let watched = [
        PointerPattern::parse("/*").expect("valid pattern"),
        PointerPattern::parse("/*/*").expect("valid pattern"),
    ];

    let Ok(parsed) = parse_watching(data, limits, &watched) else {
        return;
    };

    let reference: serde_json::Value =
        serde_json::from_slice(data).expect("serde_json accepts what the strict parser accepts");
    assert_eq!(parsed.value, reference);
    for span in &parsed.strings {
        let literal: String = serde_json::from_slice(&data[span.range.clone()])
            .expect("a span is a complete string literal");
        assert_eq!(literal, span.value);
    }
});
