//! The exchange conformance suite on the in-process `MemoryExchange`.
#![cfg(feature = "testkit")]

use std::sync::Arc;

use neffos::{Exchange, MemoryExchange};

/// Each test gets its own bus; each instance its own handle on it.
fn bus() -> impl Fn() -> std::future::Ready<Arc<dyn Exchange>> {
    let bus = MemoryExchange::new();
    move || std::future::ready(Arc::new(bus.clone()) as Arc<dyn Exchange>)
}

neffos::conformance_tests!(bus());
