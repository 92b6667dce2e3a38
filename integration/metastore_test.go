package integration

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/stratalog/strata/internal/syncbuf"
	"github.com/stratalog/strata/metastore"
	pb "github.com/stratalog/strata/metastore/metastorepb"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// strataBinary builds cmd/strata once per test run.
func strataBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "strata-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "strata")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/stratalog/strata/cmd/strata").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type metastoreProc struct {
	id, raft, api, data string
	args                []string
	cmd                 *exec.Cmd
	out                 *syncbuf.Buffer
	exited              chan error
}

func (p *metastoreProc) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(strataBinary(t), p.args...)
	p.out = &syncbuf.Buffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(p.cmd, p.exited)
}

func (p *metastoreProc) signal(sig syscall.Signal) {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(sig)
	}
}

// TestMetastoreProcesses runs three `strata metastore` processes on loopback, commits
// through the Go client, SIGKILLs the leader, commits more, restarts the killed node
// with the same flags on its data directory, and checks that it catches up and that
// every partition's offsets run without gap or overlap. Then every node stops cleanly
// on SIGTERM.
func TestMetastoreProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	procs := make([]*metastoreProc, 3)
	var peers []string
	for i := range procs {
		p := &metastoreProc{id: fmt.Sprint(i + 1), raft: freePort(t), api: freePort(t), data: t.TempDir()}
		procs[i] = p
		peers = append(peers, fmt.Sprintf("%s=%s/%s", p.id, p.raft, p.api))
	}
	for _, p := range procs {
		p.args = []string{"metastore", "--node-id", p.id, "--data", p.data, "--raft-addr", p.raft, "--api-addr", p.api,
			"--initial-cluster", strings.Join(peers, ","), "--election-timeout", "500ms", "--heartbeat-timeout", "500ms"}
		p.start(t)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.signal(syscall.SIGKILL)
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("node %s output:\n%s", p.id, p.out)
			}
		}
	})
	var apis []string
	for _, p := range procs {
		apis = append(apis, p.api)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := metastore.Dial(ctx, apis, metastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	created, err := cl.CreateTopics(ctx, &pb.CreateTopicsRequest{Topics: []*pb.TopicSpec{{Name: "proc", Partitions: 2, ReplicationFactor: -1}}})
	if err != nil || created.Results[0].Error != pb.ErrorCode_NONE {
		t.Fatalf("create topic: %v %v", err, created)
	}
	topic := created.Results[0].TopicId
	committed := map[int32]int64{}
	commitN := func(n int) {
		t.Helper()
		for i := range n {
			seg := make([]byte, 16)
			rand.Read(seg)
			seg[0] |= 1
			p := int32(i % 2)
			records := int32(1 + i%7)
			resp, err := cl.CommitSegment(ctx, &pb.CommitSegmentRequest{SegmentId: seg, Size: 100, AgentId: "it", Chunks: []*pb.ChunkCommit{{
				TopicId: topic, Partition: p, Length: 100,
				Batches: []*pb.BatchInfo{{OffsetCount: records, RecordCount: records, ProducerId: -1}},
			}}})
			if err != nil {
				t.Fatalf("commit: %v", err)
			}
			ch := resp.Chunks[0]
			if ch.Error != pb.ErrorCode_NONE || ch.BaseOffset != committed[p] {
				t.Fatalf("partition %d: commit got base %d (%v), want %d", p, ch.BaseOffset, ch.Error, committed[p])
			}
			committed[p] += int64(records)
		}
	}
	commitN(40)

	info, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var leader *metastoreProc
	for _, m := range info.Members {
		if m.Leader {
			for _, p := range procs {
				if p.id == m.Id {
					leader = p
				}
			}
		}
	}
	if leader == nil {
		t.Fatalf("no leader in %v", info)
	}
	t.Logf("SIGKILL leader %s", leader.id)
	leader.signal(syscall.SIGKILL)
	<-leader.exited
	commitN(40) // the client finds the new leader

	leader.start(t) // same flags, same data directory
	want := uint64(0)
	if info, err := cl.Cluster(ctx); err == nil {
		want = info.AppliedIndex
	}
	conn, err := grpc.NewClient(leader.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	direct := pb.NewMetastoreClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ci, err := direct.Cluster(ctx, &pb.ClusterRequest{})
		if err == nil && ci.AppliedIndex >= want && len(ci.Members) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted node %s did not catch up to index %d: %v %v", leader.id, want, ci, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Every partition: entries from offset 0 tile [0, head) exactly.
	for p := range int32(2) {
		next := int64(0)
		for next < committed[p] {
			lk, err := cl.Lookup(ctx, &pb.LookupRequest{TopicId: topic, Partition: p, Offset: next, MaxEntries: 100})
			if err != nil || lk.Error != pb.ErrorCode_NONE || len(lk.Entries) == 0 {
				t.Fatalf("lookup %d/%d: %v %v", p, next, lk, err)
			}
			for _, e := range lk.Entries {
				if e.BaseOffset != next {
					t.Fatalf("partition %d: entry at %d, expected %d (gap or overlap)", p, e.BaseOffset, next)
				}
				next = e.LastOffset + 1
			}
			if lk.Head.NextOffset != committed[p] {
				t.Fatalf("partition %d: head %d, committed %d", p, lk.Head.NextOffset, committed[p])
			}
		}
	}

	for _, p := range procs {
		p.signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case err := <-p.exited:
			if err != nil {
				t.Errorf("node %s exited with %v after SIGTERM", p.id, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("node %s did not stop within 30s of SIGTERM", p.id)
		}
	}
}
