//! Platform adapters (placeholder, being written).
