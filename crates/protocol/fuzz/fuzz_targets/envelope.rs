//! Fuzzes the inter-instance envelope decoder; a decoded envelope must re-encode and
//! decode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use neffos_protocol::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        let bytes = env.encode().expect("a decoded envelope encodes");
        assert_eq!(Envelope::decode(&bytes).expect("and decodes again"), env);
    }
});
