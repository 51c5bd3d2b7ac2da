#!/usr/bin/env bash
# The project's whole test run: formatting, vet, staticcheck, race-detected tests.
# Usage: bash scripts/test.sh        (as root, the network-namespace tests run too)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$(go env GOPATH)/bin"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...
echo "== go test -race"
# testnet compares the machine's namespaces and links before and after each run: it runs
# after the other packages, alone (its Go code only drives scripts, so no -race there).
go test -race -count=1 -timeout 15m $(go list ./... | grep -v '/testnet$')
echo "== go test ./testnet/ (network namespaces; root)"
go test -count=1 -timeout 15m ./testnet/
