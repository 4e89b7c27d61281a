//! Parse-time measurement for a 1,000-instruction, 20-stage Dockerfile.
//! Ignored by default; `bench/parse.sh` runs it in release mode.

use imgfarm_common::dockerfile::{dump::dump, parser::parse};
use std::time::Instant;

/// A realistic Dockerfile: 20 stages of 50 instructions each, with
/// continuations, JSON forms, flags, heredocs, ENV/LABEL pairs and comments.
pub fn generated_dockerfile() -> String {
    let mut df = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.20\n");
    let mut count = 1;
    for stage in 0..20 {
        df.push_str(&format!(
            "\n# stage {stage}\nFROM --platform=$BUILDPLATFORM ${{BASE}} AS s{stage}\n"
        ));
        count += 1;
        let mut i = 0;
        while count < (stage + 1) * 50 + 1 {
            let line = match i % 8 {
                0 => "RUN apk add --no-cache \\\n      curl \\\n      git \\\n    && rm -rf /var/cache/apk/*\n".to_string(),
                1 => format!("COPY --from=s{} --chown=1000:1000 /out/ /in/{i}/\n", stage.max(1) - 1),
                2 => format!("ENV A{i}=\"x y\" B{i}=z PATH=/opt/bin:$PATH\n"),
                3 => format!("LABEL org.example.n{i}=\"{i}\" other=\"v\"\n"),
                4 => "RUN --mount=type=cache,target=/root/.cache <<EOF\nset -eux\necho building\nEOF\n".to_string(),
                5 => format!("ARG V{i}=1\n"),
                6 => "CMD [\"/bin/sh\", \"-c\", \"echo hi\"]\n".to_string(),
                _ => format!("WORKDIR /work/{i}\n"),
            };
            df.push_str(&line);
            count += 1;
            i += 1;
        }
    }
    df
}

#[test]
#[ignore = "benchmark; run bench/parse.sh"]
fn parse_1000_instructions() {
    let df = generated_dockerfile();
    let r = parse(df.as_bytes()).expect("parses");
    assert_eq!(r.ast.children.len(), 1_001, "1 ARG + 1,000 instructions");
    let iterations = 200;
    let start = Instant::now();
    for _ in 0..iterations {
        let r = parse(df.as_bytes()).expect("parses");
        std::hint::black_box(&r);
    }
    let per_parse = start.elapsed() / iterations;
    let start = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(dump(&r.ast));
    }
    let per_dump = start.elapsed() / iterations;
    println!(
        "parse: {} bytes, {} instructions: {:.1} µs per parse, {:.1} µs per dump",
        df.len(),
        r.ast.children.len(),
        per_parse.as_secs_f64() * 1e6,
        per_dump.as_secs_f64() * 1e6
    );
}
