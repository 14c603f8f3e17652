//! The accounts a `snapfs run` selects (placeholder: filled in next).
