//! Tests of normalisation and the detectors.
