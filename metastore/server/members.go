package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
)

// addressBook maps Raft server ids to members' addresses, above all their API
// addresses, which Raft does not know: a follower needs the leader's to forward
// calls or to tell clients where to go.
//
// It is not replicated state. It is seeded from InitialCluster and this node's own
// addresses, learned from Join calls this node handles or forwards, and filled in
// from other members' Cluster answers (Node.syncMembers) for ids it lacks. It is kept
// in DataDir/members.json so a restarted node knows it at once. Entries learned
// from others only fill gaps, never overwrite, so two nodes cannot flip a stale
// address back and forth.
type addressBook struct {
	path string

	mu sync.Mutex
	m  map[string]Peer
}

type bookFile struct {
	Version int             `json:"version"`
	Members map[string]Peer `json:"members"`
}

func loadBook(path string) (*addressBook, error) {
	b := &addressBook{path: path, m: map[string]Peer{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metastore server: %w", err)
	}
	var f bookFile
	if err := json.Unmarshal(data, &f); err != nil || f.Version != 1 {
		// A cache: start afresh rather than refuse to start.
		return b, nil
	}
	for id, p := range f.Members {
		if validID(id) == nil {
			b.m[id] = p
		}
	}
	return b, nil
}

func (b *addressBook) get(id string) (Peer, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.m[id]
	return p, ok
}

func (b *addressBook) all() map[string]Peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.m)
}

// set records id's addresses; empty fields keep what was known.
func (b *addressBook) set(id string, p Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.m[id]
	if p.RaftAddr == "" {
		p.RaftAddr = old.RaftAddr
	}
	if p.APIAddr == "" {
		p.APIAddr = old.APIAddr
	}
	if old == p {
		return nil
	}
	b.m[id] = p
	return b.save()
}

// fill records what is missing about id, never overwriting.
func (b *addressBook) fill(id string, p Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.m[id]
	n := old
	if n.RaftAddr == "" {
		n.RaftAddr = p.RaftAddr
	}
	if n.APIAddr == "" {
		n.APIAddr = p.APIAddr
	}
	if n == old {
		return nil
	}
	b.m[id] = n
	return b.save()
}

func (b *addressBook) remove(id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[id]; !ok {
		return nil
	}
	delete(b.m, id)
	return b.save()
}

// save writes the book atomically. Call with mu held.
func (b *addressBook) save() error {
	data, err := json.MarshalIndent(bookFile{Version: 1, Members: b.m}, "", "  ")
	if err != nil {
		return fmt.Errorf("metastore server: %w", err)
	}
	tmp := b.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("metastore server: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, b.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("metastore server: save members: %w", err)
	}
	if d, err := os.Open(filepath.Dir(b.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
