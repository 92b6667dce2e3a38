package groups

import (
	"fmt"
	"time"
)

// Config holds the coordinator's settings: Kafka's group.* and offsets.* broker
// configs.
type Config struct {
	// InitialRebalanceDelay is group.initial.rebalance.delay.ms: how long the first
	// join phase of an empty group waits for more members (each new member extends
	// it by as much, up to the rebalance timeout). 0 completes at once.
	InitialRebalanceDelay time.Duration
	// MinSessionTimeout and MaxSessionTimeout are group.min.session.timeout.ms and
	// group.max.session.timeout.ms: a JoinGroup outside them is
	// INVALID_SESSION_TIMEOUT.
	MinSessionTimeout, MaxSessionTimeout time.Duration
	// MaxSize is group.max.size: members (including those still to rejoin with the
	// id they were given) beyond it are GROUP_MAX_SIZE_REACHED. 0: unlimited.
	MaxSize int
	// OffsetsRetention is offsets.retention.minutes: how long an empty group's
	// committed offsets are kept. 0: forever.
	OffsetsRetention time.Duration
	// OffsetsRetentionCheck is offsets.retention.check.interval.ms.
	OffsetsRetentionCheck time.Duration
	// ConsumerSessionTimeout and ConsumerHeartbeatInterval are
	// group.consumer.session.timeout.ms and group.consumer.heartbeat.interval.ms:
	// KIP-848 members' sessions are the coordinator's to set.
	ConsumerSessionTimeout, ConsumerHeartbeatInterval time.Duration
}

// DefaultConfig is Kafka's defaults.
func DefaultConfig() Config {
	return Config{
		InitialRebalanceDelay: 3 * time.Second,
		MinSessionTimeout:     6 * time.Second,
		MaxSessionTimeout:     30 * time.Minute,
		OffsetsRetention:      7 * 24 * time.Hour,
		OffsetsRetentionCheck: 10 * time.Minute,

		ConsumerSessionTimeout:    45 * time.Second,
		ConsumerHeartbeatInterval: 5 * time.Second,
	}
}

// Validate reports a setting out of range.
func (c Config) Validate() error {
	switch {
	case c.InitialRebalanceDelay < 0:
		return fmt.Errorf("groups: initial rebalance delay %v is negative", c.InitialRebalanceDelay)
	case c.MinSessionTimeout <= 0 || c.MaxSessionTimeout < c.MinSessionTimeout:
		return fmt.Errorf("groups: session timeouts must satisfy 0 < min (%v) <= max (%v)", c.MinSessionTimeout, c.MaxSessionTimeout)
	case c.MaxSize < 0:
		return fmt.Errorf("groups: max size %d is negative", c.MaxSize)
	case c.OffsetsRetention < 0:
		return fmt.Errorf("groups: offsets retention %v is negative", c.OffsetsRetention)
	case c.ConsumerHeartbeatInterval <= 0 || c.ConsumerSessionTimeout <= c.ConsumerHeartbeatInterval:
		return fmt.Errorf("groups: consumer heartbeat interval (%v) must be positive and below the session timeout (%v)", c.ConsumerHeartbeatInterval, c.ConsumerSessionTimeout)
	case c.OffsetsRetention > 0 && c.OffsetsRetentionCheck <= 0:
		return fmt.Errorf("groups: offsets retention check interval must be positive")
	}
	return nil
}
