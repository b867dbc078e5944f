#!/bin/sh
# pre_package: compile bin/supply for linux (GOARCH from the environment, default this machine's).
# Static (CGO_ENABLED=0), standard library only, so it runs on any Cloud Foundry stack.
set -eu
cd "$(dirname "$0")/.."
rm -f bin/supply  # the source tree's placeholder script; go build will not overwrite it
CGO_ENABLED=0 GOOS=linux go build -C src/supply -trimpath -ldflags="-s -w" -o ../../bin/supply .
