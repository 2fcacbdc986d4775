//! Codec throughput: encode, decode and encode+decode of one neffos frame, next to a plain
//! copy of the same frame as the baseline, for 64 B, 1 KiB and 16 KiB bodies.
//!
//! Run: `cargo bench -p neffos-benches --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use neffos_benches::sample_message;
use neffos_protocol::{DecodeOptions, decode};

fn codec(c: &mut Criterion) {
    let opts = DecodeOptions::default();
    for (name, len) in [("64B", 64), ("1KiB", 1024), ("16KiB", 16 * 1024)] {
        let msg = sample_message(len);
        let frame: Bytes = msg.to_frame().bytes;
        let mut group = c.benchmark_group(format!("codec/{name}"));
        group.throughput(Throughput::Bytes(frame.len() as u64));

        group.bench_function("encode", |b| b.iter(|| black_box(&msg).to_frame()));
        group.bench_function("decode", |b| {
            b.iter(|| decode(black_box(&frame).clone(), false, &opts).expect("the fixture decodes"))
        });
        group.bench_function("encode+decode", |b| {
            b.iter(|| {
                let encoded = black_box(&msg).to_frame();
                decode(encoded.bytes, encoded.binary, &opts).expect("the fixture decodes")
            })
        });
        // Baseline: the plain copy of the same encoded frame into a fresh buffer.
        group.bench_function("copy", |b| {
            b.iter(|| BytesMut::from(&black_box(&frame)[..]).freeze())
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
