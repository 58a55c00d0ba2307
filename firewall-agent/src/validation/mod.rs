//! Request validation, the positive security model: JSON limits, JSON Schema, OpenAPI and
//! HTML sanitization of declared rich-text fields.

pub mod json;
pub mod problem;
pub mod sanitize;
pub mod schema;
pub mod path;
pub mod openapi;
