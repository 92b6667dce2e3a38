# Strata: the quick start is `make run` and `make test`. Everything here works on a fresh
# machine with Go installed; tools are pinned and fetched through the module proxy.

GO          ?= go
BIN         := $(CURDIR)/bin
# The MinIO server the S3 tests run against, built from source at a pinned version.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 5m
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)

.PHONY: all build run test test-short lint minio fuzz bench bench-go clean lambdas

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/strata ./cmd/strata

# AWS Lambda functions for the provided.al2023 runtime: bin/lambdas/<fn>.zip holds one
# static executable named bootstrap (LAMBDA_ARCH=arm64 for Graviton). The zip is made
# by a small Go program, so no zip tool is needed.
LAMBDAS     := compaction
LAMBDA_ARCH ?= amd64
lambdas:
	@for fn in $(LAMBDAS); do \
		echo "== $$fn -> $(BIN)/lambdas/$$fn.zip"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$(LAMBDA_ARCH) $(GO) build -tags lambda.norpc -trimpath \
			-o $(BIN)/lambdas/$$fn/bootstrap ./lambdas/$$fn/bootstrap || exit 1; \
		$(GO) run ./lambdas/internal/mkzip -o $(BIN)/lambdas/$$fn.zip $(BIN)/lambdas/$$fn/bootstrap || exit 1; \
	done

# Everything in one process: Kafka on 127.0.0.1:9092, data in ./strata-data.
run: build
	$(BIN)/strata local

# All tests, with the race detector, including the S3 acceptance suite on a real MinIO
# server (built by `make minio`). Seed corpora of the fuzz targets replay as tests.
test: minio
	STRATA_MINIO_BIN=$(BIN)/minio $(GO) test -race -count=1 -timeout 20m ./...

# Unit tests only (no race detector, MinIO suites skip if the binary is absent).
test-short:
	$(GO) test -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Build the MinIO server into ./bin (skipped when present).
minio: $(BIN)/minio
$(BIN)/minio:
	GOBIN=$(BIN) GOFLAGS=-buildvcs=false $(GO) install github.com/minio/minio@$(MINIO_VERSION)

# Long fuzzing: each target for FUZZTIME (make fuzz FUZZTIME=30s for a short run).
FUZZ_TARGETS := FuzzParseBatch FuzzRecords FuzzDecodeSegment FuzzSegmentIndex FuzzDecompress
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "== $$t ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./objectlog/ || exit 1; \
	done
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) ./agent/

# The short default suite of strata bench (under 5 minutes): throughput and latency of
# strata local beside franz-go's kfake, latency with S3-like store latency, and a
# 3 + 2 process cluster. Tables, JSON and plots go to BENCH_OUT.
BENCH_OUT ?= bench-results/quick
bench: build
	$(BIN)/strata bench --suite quick --out $(BENCH_OUT)

# The Go micro-benchmarks (testing.B) of the format and the metastore.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./objectlog/... ./metastore/...

clean:
	rm -rf $(BIN)

# Regenerate the protobuf and gRPC code (committed, so building never needs protoc).
# Needs protoc (apt-get install protobuf-compiler); the Go plugins are pinned here.
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
.PHONY: generate
generate:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(BIN):$$PATH protoc --proto_path=metastore/metastorepb \
		--go_out=paths=source_relative:metastore/metastorepb \
		--go-grpc_out=paths=source_relative:metastore/metastorepb \
		metastore/metastorepb/metastore.proto
