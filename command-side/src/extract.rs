//! Extractors whose rejections use Fleetlog's error shape, so even a malformed query string
//! gets `{"error": {...}}`.

use axum::extract::FromRequestParts;

use crate::error::CommandError;

/// `axum::extract::Query` with our error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(CommandError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with our error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(CommandError))]
pub struct Path<T>(pub T);
