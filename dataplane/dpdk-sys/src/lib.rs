//! Placeholder: filled in by a parallel change.
