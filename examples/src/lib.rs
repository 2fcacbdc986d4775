//! Shared pieces of the neffos-rs examples (nothing yet; each example is a binary).
