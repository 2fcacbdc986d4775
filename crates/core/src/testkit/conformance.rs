//! The exchange conformance suite (filled in below).
