package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// buildInfo describes the running binary.
func buildInfo() string {
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
	}
	s := fmt.Sprintf("strata %s %s %s/%s", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if rev != "" {
		s += " " + rev
	}
	return s
}

func runVersion(_ context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "version", "version [--json]")
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := parseFlags(fs, env, args); err != nil {
		return err
	}
	if *asJSON {
		fmt.Fprintf(env.stdout, "{\"version\":%q,\"go\":%q,\"os\":%q,\"arch\":%q}\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
	fmt.Fprintln(env.stdout, buildInfo())
	return nil
}
