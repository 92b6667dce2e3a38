package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/stratalog/strata/metastore/raftlog"
)

// streamLayer is Raft's TCP stream layer over a listener we were given (or opened),
// so tests and embedders can hand in a listener and know its port up front.
type streamLayer struct {
	net.Listener
	advertise net.Addr
}

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(address), timeout)
}

// Addr is what Raft records as this node's address: the advertised one.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// advertiseAddr is a net.Addr for a host:port string (which may be a DNS name).
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// logStore wraps the Raft log so that a storage failure (raftlog.ErrFailed: an fsync
// failed, nothing the disk says can be trusted) stops the node instead of leaving
// Raft to retry against a broken disk forever.
type logStore struct {
	*raftlog.Store
	onFail func(error)
}

func (s logStore) check(err error) error {
	if err != nil && errors.Is(err, raftlog.ErrFailed) {
		s.onFail(err)
	}
	return err
}

func (s logStore) GetLog(index uint64, l *raft.Log) error {
	return s.check(s.Store.GetLog(index, l))
}
func (s logStore) StoreLog(l *raft.Log) error     { return s.check(s.Store.StoreLog(l)) }
func (s logStore) StoreLogs(ls []*raft.Log) error { return s.check(s.Store.StoreLogs(ls)) }
func (s logStore) DeleteRange(lo, hi uint64) error {
	return s.check(s.Store.DeleteRange(lo, hi))
}
func (s logStore) Set(k, v []byte) error { return s.check(s.Store.Set(k, v)) }
func (s logStore) Get(k []byte) ([]byte, error) {
	v, err := s.Store.Get(k)
	return v, s.check(err)
}
func (s logStore) SetUint64(k []byte, v uint64) error { return s.check(s.Store.SetUint64(k, v)) }
func (s logStore) GetUint64(k []byte) (uint64, error) {
	v, err := s.Store.GetUint64(k)
	return v, s.check(err)
}

// hclogger adapts hashicorp's logger (which Raft wants) to slog: hclog writes JSON
// lines, slogWriter turns each into a record.
func hclogger(log *slog.Logger, name string) hclog.Logger {
	level := hclog.Info
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     &slogWriter{log: log},
		JSONFormat: true,
	})
}

type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			w.log.Info(string(bytes.TrimSpace(line)))
			continue
		}
		level := slog.LevelInfo
		switch rec["@level"] {
		case "trace", "debug":
			level = slog.LevelDebug
		case "warn":
			level = slog.LevelWarn
		case "error":
			level = slog.LevelError
		}
		msg, _ := rec["@message"].(string)
		if mod, _ := rec["@module"].(string); mod != "" {
			msg = mod + ": " + msg
		}
		attrs := make([]slog.Attr, 0, len(rec))
		for _, k := range sortedIDs(rec) {
			if len(k) > 0 && k[0] == '@' {
				continue
			}
			attrs = append(attrs, slog.Any(k, rec[k]))
		}
		w.log.LogAttrs(context.Background(), level, msg, attrs...)
	}
	return len(p), nil
}
