package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawConn is a plain TCP connection to s, closed when the test ends.
func rawConn(t *testing.T, s *Server) *net.TCPConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*net.TCPConn)
}

func rawSend(t *testing.T, nc net.Conn, b []byte) {
	t.Helper()
	nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readResponse reads one response frame: its correlation id and the rest.
func rawResponse(t *testing.T, nc net.Conn) (int32, []byte) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var szb [4]byte
	if _, err := io.ReadFull(nc, szb[:]); err != nil {
		t.Fatalf("read response size: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint32(szb[:]))
	if _, err := io.ReadFull(nc, b); err != nil {
		t.Fatalf("read response: %v", err)
	}
	if len(b) < 4 {
		t.Fatalf("response of %d bytes", len(b))
	}
	return int32(binary.BigEndian.Uint32(b)), b[4:]
}

// expectClosed checks that the agent closes nc without answering: a read ends in
// EOF or a reset well before the deadline.
func expectRawClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, nc) // nil error: EOF
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("connection still open after 10s (read %d bytes)", n)
	case err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err):
		t.Fatalf("read: %v", err)
	case n != 0:
		t.Fatalf("got %d bytes before the close, want none", n)
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read" // ECONNRESET and friends
}

// apiVersions sends an ApiVersions v3 request with correlation id corr on nc and
// checks the answer lists our keys.
func rawAPIVersions(t *testing.T, nc net.Conn, corr int32) {
	t.Helper()
	rawSend(t, nc, sizePrefixed(requestFrame(kmsg.NewPtrApiVersionsRequest(), 3, corr)))
	checkRawAPIVersions(t, nc, corr, 3, 0)
}

func checkRawAPIVersions(t *testing.T, nc net.Conn, corr int32, version, code int16) {
	t.Helper()
	got, body := rawResponse(t, nc)
	if got != corr {
		t.Fatalf("correlation id %d, want %d", got, corr)
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(version)
	if err := resp.ReadFrom(body); err != nil {
		t.Fatalf("ApiVersions v%d response: %v", version, err)
	}
	if resp.ErrorCode != code {
		t.Fatalf("ApiVersions error code %d, want %d", resp.ErrorCode, code)
	}
	var keys []int16
	for _, k := range resp.ApiKeys {
		a, ok := apis[k.ApiKey]
		if !ok || k.MinVersion != a.min || k.MaxVersion != a.max {
			t.Fatalf("ApiVersions lists key %d v%d-%d; we serve %+v", k.ApiKey, k.MinVersion, k.MaxVersion, a)
		}
		keys = append(keys, k.ApiKey)
	}
	if !slices.Equal(keys, apiKeys()) {
		t.Fatalf("ApiVersions lists keys %v, want %v", keys, apiKeys())
	}
}

// checkClient produces one record with cl and asks for the metadata of topic.
func checkClientWorks(t *testing.T, cl *kgo.Client, topic string) {
	t.Helper()
	ctx := testContext(t)
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	if len(resp.Brokers) != 1 || len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("metadata: %d brokers, topics %+v", len(resp.Brokers), resp.Topics)
	}
}

func TestConnGarbageClosesOnlyThatConnection(t *testing.T) {
	s := startAgent(t)
	if _, err := adminClient(t, s).CreateTopic(testContext(t), 1, 1, nil, "t"); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	cl := kafkaClient(t, s)
	checkClientWorks(t, cl, "t")
	bystander := rawConn(t, s)
	rawAPIVersions(t, bystander, 1)

	random := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	random[0] |= 0x80 // a negative size: closed at once, not after the idle timeout
	metadata := requestFrame(kmsg.NewPtrMetadataRequest(), 12, 5)
	tests := []struct {
		name      string
		send      []byte
		closeSend bool // half-close after sending
		answers   int  // ApiVersions answers expected before the close
	}{
		{"random bytes", random, false, 0},
		{"random bytes then close", random[1:], true, 0},
		{"HTTP GET", []byte("GET / HTTP/1.1\r\nHost: strata\r\n\r\n"), false, 0},
		{"unknown API key 9999", sizePrefixed(requestHeader(9999, 0, 7, "x", false)), false, 0},
		{"unsupported Metadata v99", sizePrefixed(requestHeader(3, 99, 7, "x", true)), false, 0},
		{"size of 2 GiB", append(binary.BigEndian.AppendUint32(nil, 1<<31), "0123456789"...), false, 0},
		{"size of 2 GiB - 1", append(binary.BigEndian.AppendUint32(nil, 1<<31-1), "0123456789"...), false, 0},
		{"size under a header", append(binary.BigEndian.AppendUint32(nil, 7), "0123456"...), false, 0},
		{"body that does not decode", sizePrefixed(append(metadata[:len(metadata)-1:len(metadata)-1], 0xff, 0xff, 0xff, 0xff)), false, 0},
		{"bad client id length", sizePrefixed(append(requestHeader(18, 3, 7, "", true)[:8], 0x80, 0x00)), false, 0},
		{"truncated frame then close", sizePrefixed(metadata)[:len(metadata)/2], true, 0},
		{"answers before the garbage", append(sizePrefixed(requestFrame(kmsg.NewPtrApiVersionsRequest(), 3, 100)), "GET / HTTP/1.1\r\n\r\n"...), false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := rawConn(t, s)
			rawSend(t, nc, tt.send)
			if tt.closeSend {
				if err := nc.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tt.answers {
				checkRawAPIVersions(t, nc, 100+int32(i), 3, 0)
			}
			expectRawClosed(t, nc)
			rawAPIVersions(t, bystander, 2)
			checkClientWorks(t, cl, "t")
		})
	}
}

// TestConnAPIVersionsUnknownVersion: KIP-511. A client newer than us asks in its own
// version; we answer in v0 with UNSUPPORTED_VERSION and our ranges, and stay open.
func TestConnAPIVersionsUnknownVersion(t *testing.T) {
	s := startAgent(t)
	nc := rawConn(t, s)
	future := append(requestHeader(18, 99, 42, "future-client", true), "some v99 body"...)
	rawSend(t, nc, sizePrefixed(future))
	checkRawAPIVersions(t, nc, 42, 0, kerr.UnsupportedVersion.Code)
	rawAPIVersions(t, nc, 43)
	rawAPIVersions(t, nc, 44)
}

func TestConnPipelining(t *testing.T) {
	s := startAgent(t)
	if _, err := adminClient(t, s).CreateTopic(testContext(t), 3, 1, nil, "p"); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	nc := rawConn(t, s)
	const n = 50
	var out []byte
	for i := range n {
		corr := int32(1000 + i*7)
		if i%2 == 0 {
			req := kmsg.NewPtrMetadataRequest()
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr("p")
			req.Topics = append(req.Topics, rt)
			out = append(out, sizePrefixed(requestFrame(req, 12, corr))...)
		} else {
			out = append(out, sizePrefixed(requestFrame(kmsg.NewPtrApiVersionsRequest(), 3, corr))...)
		}
	}
	rawSend(t, nc, out) // all of them before reading any answer
	for i := range n {
		corr := int32(1000 + i*7)
		if i%2 == 1 {
			checkRawAPIVersions(t, nc, corr, 3, 0)
			continue
		}
		got, body := rawResponse(t, nc)
		if got != corr {
			t.Fatalf("response %d: correlation id %d, want %d", i, got, corr)
		}
		if body[0] != 0 {
			t.Fatalf("response %d: header tag section %#x", i, body[0])
		}
		resp := kmsg.NewPtrMetadataResponse()
		resp.SetVersion(12)
		if err := resp.ReadFrom(body[1:]); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 3 {
			t.Fatalf("response %d: topics %+v", i, resp.Topics)
		}
	}
}

func TestConnMaxRequestBytes(t *testing.T) {
	const limit = 1024
	s := startAgent(t, withConfig(func(c *Config) {
		c.MaxRequestBytes = limit
		c.MessageMaxBytes = limit
	}))
	// A frame of exactly the limit is served.
	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName = "pad"
	req.ClientSoftwareVersion = "1"
	frame := requestFrame(req, 3, 1)
	req.ClientSoftwareName += string(bytes.Repeat([]byte("x"), limit-len(frame)-1)) // the compact length grows a byte
	if frame = requestFrame(req, 3, 1); len(frame) != limit {
		t.Fatalf("built a %d-byte frame, want %d", len(frame), limit)
	}
	nc := rawConn(t, s)
	rawSend(t, nc, sizePrefixed(frame))
	checkRawAPIVersions(t, nc, 1, 3, 0)

	// One byte more closes the connection, before the body is sent.
	req.ClientSoftwareName += "x"
	big := sizePrefixed(requestFrame(req, 3, 2))
	rawSend(t, nc, big[:4])
	expectRawClosed(t, nc)

	other := rawConn(t, s)
	rawAPIVersions(t, other, 3)
}

func TestConnIdleTimeout(t *testing.T) {
	s := startAgent(t, withConfig(func(c *Config) { c.IdleTimeout = time.Second }))

	// A connection that keeps talking stays open past the timeout.
	busy := rawConn(t, s)
	start := time.Now()
	for i := int32(0); time.Since(start) < 2500*time.Millisecond; i++ {
		rawAPIVersions(t, busy, i)
		time.Sleep(300 * time.Millisecond) // pacing, below the idle timeout
	}

	// A silent one is closed after about a second: not before, and well within 10s.
	idle := rawConn(t, s)
	start = time.Now()
	expectRawClosed(t, idle)
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("idle connection closed after %v, before the 1s idle timeout", d)
	}

	// A partial frame is not activity that resets the clock forever: the read of the
	// rest times out too.
	partial := rawConn(t, s)
	rawSend(t, partial, []byte{0, 0, 0, 100, 0, 18})
	expectRawClosed(t, partial)
	rawAPIVersions(t, rawConn(t, s), 100)
}
