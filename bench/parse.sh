#!/usr/bin/env bash
# Parse time of a generated 1,000-instruction, 20-stage Dockerfile (release).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p imgfarm-common --test parser_bench -- --ignored --nocapture 2>&1 \
  | grep -E '^parse:|test result'
