// Command strata is Strata's one binary: the embedded single-process server, the agent,
// the metastore, the functions runner, the schema registry, the benchmark, and admin
// verbs, each a subcommand. It only wires packages together; behaviour lives in them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand. run gets the arguments after the command name.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

// environment is what commands share: their output streams and the process
// environment (for STRATA_* variables), injectable for tests.
type environment struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// commands lists every subcommand; later issues add local, agent, metastore, ...
func commands() []command {
	return []command{
		{"local", "run everything in one process: Kafka on 127.0.0.1:9092, data in ./strata-data", runLocal},
		{"agent", "run a Kafka agent against a metastore cluster and an object store", runAgent},
		{"version", "print the version and build information", runVersion},
		{"metastore", "run a metastore node; metastore leave|cluster manage membership", runMetastore},
		{"functions", "run the functions (compaction, retention, GC) on MinIO webhook notifications", runFunctions},
		{"bench", "measure throughput, latency, CPU and request cost, beside a reference broker", runBench},
		{"help", "show this help, or a command's flags: strata help <command>", runHelp},
	}
}

// errUsage means the arguments were wrong; the message has been printed already.
var errUsage = errors.New("usage error")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := &environment{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	err := run(ctx, env, os.Args[1:])
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "strata: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 {
		usage(env.stderr)
		return errUsage
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "-help" {
		usage(env.stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, env, args[1:])
		}
	}
	fmt.Fprintf(env.stderr, "strata: unknown command %q\n\n", name)
	usage(env.stderr)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Strata: a Kafka-compatible event log on object storage.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: strata <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flag --some-name can also be set with the environment variable STRATA_SOME_NAME;")
	fmt.Fprintln(w, "a flag given on the command line wins.")
}

func runHelp(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 {
		usage(env.stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] && c.name != "help" {
			return c.run(ctx, env, []string{"-h"})
		}
	}
	if args[0] == "help" {
		usage(env.stdout)
		return nil
	}
	fmt.Fprintf(env.stderr, "strata: unknown command %q\n", args[0])
	return errUsage
}
