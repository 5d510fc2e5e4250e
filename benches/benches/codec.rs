//! Criterion benches of the stripe encoder/decoder building blocks in `cairn-common`:
//! Reed-Solomon encode and data reconstruction for 3+1 and 2+1 with 1 MiB blocks, and the
//! per-block crc32c. Throughput is logical (data) bytes per stripe, or block bytes for crc.
//!
//! `cargo bench -p cairn-benches --features codec-bench --bench codec -- --measurement-time 3 --warm-up-time 1`

use std::hint::black_box;

use cairn_common::erasure::Codec;
use cairn_common::ids::ObjectId;
use cairn_common::protocol::ShardRef;
use cairn_common::shard::{block_crc, ShardKey};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BLOCK: usize = 1 << 20;

fn blocks(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            (0..BLOCK)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 33) as u8
                })
                .collect()
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("rs_encode_1MiB_blocks");
    for (k, m) in [(3u8, 1u8), (2, 1)] {
        let codec = Codec::new(k, m).expect("codec");
        let data = blocks(k as usize, 1);
        let mut parity = vec![vec![0u8; BLOCK]; m as usize];
        g.throughput(Throughput::Bytes((k as usize * BLOCK) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("{k}+{m}")), |b| {
            b.iter(|| {
                let d: Vec<&[u8]> = data.iter().map(|v| v.as_slice()).collect();
                let mut p: Vec<&mut [u8]> = parity.iter_mut().map(|v| v.as_mut_slice()).collect();
                codec.encode(black_box(&d), &mut p).expect("encode");
            })
        });
    }
    g.finish();
}

fn reconstruct(c: &mut Criterion) {
    let mut g = c.benchmark_group("rs_reconstruct_data_1MiB_blocks");
    for (k, m) in [(3u8, 1u8), (2, 1)] {
        let codec = Codec::new(k, m).expect("codec");
        let data = blocks(k as usize, 2);
        let mut parity = vec![vec![0u8; BLOCK]; m as usize];
        {
            let d: Vec<&[u8]> = data.iter().map(|v| v.as_slice()).collect();
            let mut p: Vec<&mut [u8]> = parity.iter_mut().map(|v| v.as_mut_slice()).collect();
            codec.encode(&d, &mut p).expect("encode");
        }
        let mut stripe: Vec<Option<Vec<u8>>> = data
            .iter()
            .chain(parity.iter())
            .cloned()
            .map(Some)
            .collect();
        g.throughput(Throughput::Bytes((k as usize * BLOCK) as u64));
        // Degraded read: data block 0 lost, rebuilt from the others and parity (this
        // includes allocating the rebuilt block, as the gateway's decoder does).
        g.bench_function(
            BenchmarkId::from_parameter(format!("{k}+{m}/lost_data_0")),
            |b| {
                b.iter(|| {
                    stripe[0] = None;
                    codec
                        .reconstruct_data(black_box(&mut stripe))
                        .expect("rebuild");
                })
            },
        );
        assert_eq!(stripe[0].as_deref(), Some(data[0].as_slice()));
    }
    g.finish();
}

fn crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_crc32c");
    let data = blocks(1, 3);
    g.throughput(Throughput::Bytes(BLOCK as u64));
    g.bench_function("1MiB", |b| b.iter(|| block_crc(black_box(&data[0]))));
    g.finish();
}

/// The keyed tag every stored block carries (shard format 2), next to its crc32c: what
/// authenticating shard content costs per byte, on the gateway (every block written and
/// read) and on a node (every block uploaded, and in scrub).
fn tag(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_tag");
    let data = blocks(1, 5);
    let key = ShardKey::derive(b"bench");
    let shard = ShardRef {
        object: ObjectId([1; 16]),
        segment: 0,
        index: 0,
    };
    g.throughput(Throughput::Bytes(BLOCK as u64));
    g.bench_function("1MiB", |b| {
        b.iter(|| key.block_tag(&shard, 0, black_box(&data[0])))
    });
    // As the encoder feeds it: pieces of a request body (64 KiB).
    g.bench_function("1MiB_in_64KiB_pieces", |b| {
        b.iter(|| {
            let mut t = key.block_tagger(&shard, 0);
            for piece in black_box(&data[0]).chunks(64 << 10) {
                t.update(piece);
            }
            t.finish()
        })
    });
    g.finish();
}

criterion_group!(benches, encode, reconstruct, crc, tag);
criterion_main!(benches);
