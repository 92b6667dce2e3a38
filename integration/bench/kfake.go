package bench

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// ServeKfake runs franz-go's in-memory fake Kafka cluster, one broker on addr, until
// ctx ends: the reference the bench measures Strata against, run by
// `strata bench --serve-kfake ADDR` in a process of its own so its CPU and memory are
// measured as a server's are.
func ServeKfake(ctx context.Context, addr string, partitions int) error {
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("kfake address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("kfake address %q: want a port from 1 to 65535", addr)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DefaultNumPartitions(max(partitions, 1)))
	if err != nil {
		return fmt.Errorf("kfake: %w", err)
	}
	defer c.Close()
	<-ctx.Done()
	return nil
}
