package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// envName is the environment twin of a flag: --s3-endpoint is STRATA_S3_ENDPOINT.
func envName(flagName string) string {
	return "STRATA_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// hiddenUsage begins the usage of a flag left out of the usage output: a test knob
// that users should not meet.
const hiddenUsage = "(hidden) "

// newFlagSet returns a flag set for a command whose usage output lists each flag's
// environment twin, except hidden ones.
func newFlagSet(env *environment, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: strata %s\n\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			if strings.HasPrefix(f.Usage, hiddenUsage) {
				return
			}
			fmt.Fprintf(out, "  --%s (env %s)\n    \t%s", f.Name, envName(f.Name), f.Usage)
			if f.DefValue != "" {
				fmt.Fprintf(out, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(out)
		})
	}
	return fs
}

// parseFlags parses args, then fills every flag not given on the command line from its
// STRATA_* environment variable. Errors name the variable so a bad environment is easy
// to find; all of them are reported at once.
func parseFlags(fs *flag.FlagSet, env *environment, args []string) error {
	// The flag package prints usage itself on every parse error; print it once, here:
	// help to stdout (it was asked for), errors to stderr.
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(env.stdout)
		fs.Usage()
		return err
	case err != nil:
		fs.SetOutput(env.stderr)
		fmt.Fprintf(env.stderr, "strata %s: %v\n", fs.Name(), err)
		fs.Usage()
		return errUsage
	}
	fs.SetOutput(env.stderr)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := envName(f.Name)
		if v := env.getenv(name); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("strata %s: %w", fs.Name(), errors.Join(errs...))
	}
	return nil
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level  slog.Level
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	l.format = "text"
	fs.TextVar(&l.level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", l.format, "log format: text or json")
}

// logger builds the slog logger the flags describe.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: l.level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", l.format)
}
