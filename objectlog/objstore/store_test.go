package objstore_test

import (
	"testing"

	"github.com/stratalog/strata/objectlog/objstore"
	"github.com/stratalog/strata/objectlog/objstore/storetest"
)

func TestMemoryAcceptance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.NewMemory() })
}

func TestDirAcceptance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store {
		d, err := objstore.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
