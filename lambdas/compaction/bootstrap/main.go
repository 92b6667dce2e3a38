// Command bootstrap is the compaction function for AWS Lambda's provided.al2023
// runtime: `make lambdas` builds it (GOOS=linux, -tags lambda.norpc) and zips it as
// bin/lambdas/compaction.zip. Trigger it with S3 event notifications for the store's
// segments (s3:ObjectCreated:*, prefix PREFIX/segments/, suffix .seg) and an
// EventBridge schedule (rate(1 minute)) for retention and GC when nothing arrives.
//
// It is configured by the environment (see compaction.EnvVars): STRATA_METASTORE and
// STRATA_STORE are required. The metastore client is dialed once per container, at
// init, and reused by every invocation.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/stratalog/strata/lambdas/compaction"
)

func main() {
	var level slog.Level
	if v := os.Getenv(compaction.EnvLogLevel); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			fail(fmt.Errorf("%s=%q: want debug, info, warn or error", compaction.EnvLogLevel, v))
		}
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := compaction.ConfigFromEnv(os.Getenv)
	if err != nil {
		fail(err)
	}
	h, err := compaction.Open(context.Background(), cfg, log)
	if err != nil {
		fail(err)
	}
	lambda.Start(h)
}

// fail ends the init phase: Lambda reports Runtime.ExitError with this output in the
// function's log, and the next invocation starts a fresh container.
func fail(err error) {
	fmt.Fprintf(os.Stderr, "strata compaction function: %v\n", err)
	os.Exit(1)
}
