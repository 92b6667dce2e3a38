package state

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"
)

// scanProtos decodes every value under prefix, in key order, as a message of type M
// and hands it to fn; a value that does not decode is ErrCorrupt.
func scanProtos[M any, PM interface {
	*M
	proto.Message
}](r pebble.Reader, prefix byte, fn func(PM) error) error {
	return scanProtosUnder[M](r, []byte{prefix}, fn)
}

// scanProtosUnder is scanProtos over the keys starting with lo.
func scanProtosUnder[M any, PM interface {
	*M
	proto.Message
}](r pebble.Reader, lo []byte, fn func(PM) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upperBound(lo)})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		m := PM(new(M))
		if err := proto.Unmarshal(it.Value(), m); err != nil {
			return fmt.Errorf("%w: key %x: %v", ErrCorrupt, it.Key(), err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return it.Error()
}
