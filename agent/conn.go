package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// conn is one client connection. One goroutine reads and decodes requests and runs
// each handler's in-order part; a second writes answers strictly in request order.
// A handler may finish later (a produce waiting for its segment, a long-poll fetch):
// its slot in the answer queue waits for it, so pipelined requests are answered in
// the order they arrived, as Kafka requires.
type conn struct {
	s      *Server
	nc     net.Conn
	log    *slog.Logger
	ctx    context.Context // ends when the connection closes
	cancel context.CancelFunc
	zone   string // from the client id's strata_zone=..., if any

	slots chan *slot
}

// slot is one request's place in the answer queue.
type slot struct {
	r    *request
	done chan struct{}
	resp kmsg.Response // nil: write nothing (acks=0)
	err  error         // close the connection after the answers before it
}

// reply is a handler's answer: ready now, computed later, or none at all.
type reply struct {
	resp  kmsg.Response
	later func() kmsg.Response
	err   error // close the connection
}

func now(resp kmsg.Response) reply       { return reply{resp: resp} }
func later(f func() kmsg.Response) reply { return reply{later: f} }
func closeWith(err error) reply          { return reply{err: err} }

func (s *Server) serveConn(nc net.Conn) {
	ctx, cancel := context.WithCancel(s.ctx)
	c := &conn{
		s:      s,
		nc:     nc,
		log:    s.log.With("remote", nc.RemoteAddr().String()),
		ctx:    ctx,
		cancel: cancel,
		slots:  make(chan *slot, s.cfg.MaxPipelined),
	}
	// Whoever ends the connection (the server closing, a write failing) also ends a
	// read in progress, whatever deadline the read loop set last.
	stop := context.AfterFunc(ctx, func() { nc.SetReadDeadline(time.Now()) })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(c.writeLoop)
	c.readLoop()
	close(c.slots)
	wg.Wait()
	cancel()
	nc.Close()
}

func (c *conn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		if err := c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.IdleTimeout)); err != nil || c.ctx.Err() != nil {
			return
		}
		frame, err := readFrame(br, c.s.cfg.MaxRequestBytes)
		if err != nil {
			c.readFailed(err)
			// Nobody is left to answer: pending long polls and produce waits end now
			// rather than hold the connection for their full timeouts.
			c.cancel()
			return
		}
		r, err := parseRequest(frame)
		if err != nil {
			c.log.Warn("agent: closing connection on a bad request", "err", err)
			return
		}
		if r.clientID != "" && c.zone == "" {
			c.zone = zoneOf(r.clientID)
		}
		rep := c.dispatch(r)
		sl := &slot{r: r, done: make(chan struct{})}
		switch {
		case rep.err != nil:
			sl.err = rep.err
			close(sl.done)
		case rep.later != nil:
			go func() {
				sl.resp = rep.later()
				close(sl.done)
			}()
		default:
			sl.resp = rep.resp
			close(sl.done)
		}
		select {
		case c.slots <- sl:
		case <-c.ctx.Done():
			return
		}
		if rep.err != nil {
			return
		}
	}
}

func (c *conn) readFailed(err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Debug("agent: closing idle connection")
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrBadFrame):
		c.log.Warn("agent: closing connection", "err", err)
	default:
		c.log.Debug("agent: connection read failed", "err", err)
	}
}

// dispatch runs a request's handler, or refuses a version it does not serve.
func (c *conn) dispatch(r *request) reply {
	a := apis[r.key]
	if r.msg == nil {
		if r.key == 18 { // ApiVersions: answer in v0 so the client can pick a version
			r.version = 0
			return now(unsupportedAPIVersions())
		}
		return closeWith(fmt.Errorf("agent: unsupported version %d of %s", r.version, kmsg.NameForKey(r.key)))
	}
	return a.serve(c, r)
}

func (c *conn) writeLoop() {
	bw := bufio.NewWriterSize(c.nc, 64<<10)
	var buf []byte
	broken := false
	for sl := range c.slots {
		select {
		case <-sl.done:
		default:
			// Send what is ready before waiting on a slow answer (a long poll, a
			// produce waiting for its segment).
			if err := bw.Flush(); err != nil && !broken {
				broken = c.writeFailed(err)
			}
			<-sl.done
		}
		if broken {
			continue
		}
		if sl.err != nil {
			c.log.Warn("agent: closing connection", "err", sl.err)
			bw.Flush()
			c.cancel()
			c.nc.Close()
			broken = true
			continue
		}
		if sl.resp == nil {
			continue
		}
		sl.resp.SetVersion(sl.r.version)
		buf = appendResponse(buf[:0], sl.r.key, sl.r.correlationID, sl.resp)
		if _, err := bw.Write(buf); err != nil {
			broken = c.writeFailed(err)
			continue
		}
		if len(c.slots) == 0 {
			if err := bw.Flush(); err != nil {
				broken = c.writeFailed(err)
			}
		}
		if cap(buf) > 1<<20 {
			buf = nil
		}
	}
	if !broken {
		bw.Flush()
	}
}

func (c *conn) writeFailed(err error) bool {
	c.log.Debug("agent: connection write failed", "err", err)
	c.cancel()
	c.nc.Close()
	return true
}

// zoneOf extracts strata_zone=... from a client id (e.g. "app,strata_zone=us-east-1a").
func zoneOf(clientID string) string {
	i := strings.Index(clientID, "strata_zone=")
	if i < 0 {
		return ""
	}
	z := clientID[i+len("strata_zone="):]
	if j := strings.IndexAny(z, ", ;"); j >= 0 {
		z = z[:j]
	}
	return z
}
