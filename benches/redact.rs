//! Criterion benchmarks for the output hot path: line framing, redaction as the
//! number of secrets grows (the cost must stay flat), and encoding a line as JSON
//! or pretty text. One line in fifty holds a secret: whole, a 24-byte prefix, or
//! hex.
//!
//! Run with `cargo bench --bench redact`. criterion is built without its default
//! features (no rayon, no plots) to keep the build small on 2 cores.

use std::hint::black_box;

use agentsup::output::{Format, LineFormatter, LineFramer, LineMeta, OutputConfig, Stream};
use agentsup::redact::{Redactor, SharedRedactor};
use agentsup::secret::Sensitive;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// About 1 MiB of log-like lines of varying length, with `secrets` embedded in
/// roughly one line out of fifty.
fn corpus(rng: &mut fastrand::Rng, secrets: &[String]) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "INFO",
        "planner",
        "request",
        "POST",
        "https://api.example.com/v1/chat",
        "tokens=512",
        "latency_ms=231",
        "ok",
        "retrying",
        "model=gpt-4o-mini",
        "status=200",
        "{\"id\":42}",
    ];
    let mut out = Vec::with_capacity(1 << 20);
    while out.len() < 1 << 20 {
        for _ in 0..rng.usize(3..20) {
            out.extend_from_slice(WORDS[rng.usize(..WORDS.len())].as_bytes());
            out.push(b' ');
        }
        if !secrets.is_empty() && rng.usize(..50) == 0 {
            let secret = secrets[rng.usize(..secrets.len())].as_bytes();
            // The forms issue 12 lists, in turn: whole, a 24-byte prefix, hex.
            match rng.usize(..3) {
                0 => {
                    out.extend_from_slice(b"Authorization: Bearer ");
                    out.extend_from_slice(secret);
                }
                1 => {
                    out.extend_from_slice(b"loaded key ");
                    out.extend_from_slice(&secret[..24]);
                }
                _ => {
                    out.extend_from_slice(b"digest ");
                    for b in secret {
                        out.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                }
            }
        }
        out.push(b'\n');
    }
    out
}

fn secrets(rng: &mut fastrand::Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let body: String = (0..40).map(|_| rng.alphanumeric()).collect();
            format!("sk-{body}")
        })
        .collect()
}

fn framing(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(1);
    let data = corpus(&mut rng, &[]);
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1MiB_in_64KiB_reads", |b| {
        b.iter(|| {
            let mut framer = LineFramer::new();
            let mut lines = 0usize;
            for read in data.chunks(64 * 1024) {
                let mut pos = 0;
                while let Some(frame) = framer.next_frame(read, &mut pos) {
                    black_box(frame);
                    lines += 1;
                }
            }
            black_box(framer.finish());
            lines
        });
    });
    group.finish();
}

fn redaction(c: &mut Criterion) {
    let mut group = c.benchmark_group("redact_lines");
    for n in [1usize, 10, 100, 1000] {
        let mut rng = fastrand::Rng::with_seed(n as u64);
        let values = secrets(&mut rng, n);
        let data = corpus(&mut rng, &values);
        let redactor = Redactor::new(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("KEY_{i}"), Sensitive::new(v.clone()))),
        );
        let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &lines, |b, lines| {
            let mut scratch = Vec::new();
            b.iter(|| {
                let mut bytes = 0usize;
                for line in lines {
                    bytes += redactor.redact_slice(line, &mut scratch).len();
                }
                bytes
            });
        });
    }
    group.finish();

    // The cost a rotation pays: rebuilding the automaton over every value seen.
    let mut group = c.benchmark_group("redactor_build");
    for n in [10usize, 1000] {
        let mut rng = fastrand::Rng::with_seed(7);
        let values = secrets(&mut rng, n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &values, |b, values| {
            b.iter(|| {
                SharedRedactor::new(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("KEY_{i}"), Sensitive::new(v.clone()))),
                )
            });
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let meta = LineMeta {
        worker: "planner".into(),
        replica: 3,
        pid: 12345,
        stream: Stream::Stdout,
    };
    let line =
        b"INFO request POST https://api.example.com/v1/chat tokens=512 \"quoted\" status=200";
    let mut group = c.benchmark_group("encode_line");
    group.throughput(Throughput::Elements(1));
    for (name, format) in [("json", Format::Json), ("pretty", Format::Pretty)] {
        let mut config = OutputConfig::new(format);
        config.label_width = 12;
        config.workers = vec!["planner".into()];
        config.color = true;
        let fmt = LineFormatter::new(&config);
        let prefix = fmt.prefix(&meta);
        group.bench_function(name, |b| {
            let mut out = Vec::with_capacity(256);
            b.iter(|| {
                out.clear();
                fmt.write_line(&mut out, &prefix, &meta, black_box(line), false);
                out.len()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, framing, redaction, encoding);
criterion_main!(benches);
