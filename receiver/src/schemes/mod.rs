//! Signature schemes (placeholder, being written).
