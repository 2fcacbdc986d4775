//! What an instance pays for an envelope it did not need: a room broadcast that reaches an
//! instance with members in the namespace but none in the room is decoded and dropped.
//! This is the number behind the choice of namespace-level (not room-level) channels; the
//! encode+decode of the neffos frame that every real delivery needs is the baseline.
#![allow(missing_docs, clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use neffos_protocol::{DecodeOptions, Envelope, EnvelopeKind, EnvelopeTarget, Message, decode};
use uuid::Uuid;

fn envelope(c: &mut Criterion) {
    let msg = Message::new("chat", "message", Bytes::from(vec![b'x'; 64])).with_room("room-42");
    let env = Envelope::new(
        Uuid::new_v4(),
        7,
        EnvelopeKind::Broadcast,
        EnvelopeTarget::namespace("chat")
            .with_room("room-42")
            .with_except("user-1"),
        &msg,
    );
    let bytes = env.encode().unwrap();
    let mut group = c.benchmark_group("unneeded_room_envelope_64B");
    group.bench_function("envelope_decode_and_drop", |b| {
        b.iter(|| {
            let env = Envelope::decode(std::hint::black_box(&bytes)).unwrap();
            std::hint::black_box(env.target.room.as_deref() == Some("absent"))
        })
    });
    group.bench_function("frame_encode_decode_baseline", |b| {
        b.iter(|| {
            let frame = std::hint::black_box(&msg).to_frame();
            decode(frame.bytes, false, &DecodeOptions::default()).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
