package state

import (
	"maps"
	"slices"
)

// sortedKeys returns m's keys in order: Apply never depends on map iteration order.
func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
