#!/bin/sh
# Parsing + graph construction for a generated 1,000-instruction, 20-stage
# Dockerfile (issue 3 target: <= 10 ms). Release build; prints the figures.
set -eu
cd "$(dirname "$0")/../.."
exec cargo bench -p imgfarm-common --bench graph_build "$@"
