package runner

import (
	"context"
	"io"

	"github.com/stratalog/strata/objectlog/objstore"
)

// NotifyPuts wraps st so that every successful Put is followed by notify(key): the
// in-process twin of an object-created notification, for `strata local`. notify runs
// on the Put's goroutine before Put returns, so it must not block (Enqueue does not).
// Every other method is st's own.
func NotifyPuts(st objstore.Store, notify func(key string)) objstore.Store {
	return &putNotifier{Store: st, notify: notify}
}

type putNotifier struct {
	objstore.Store
	notify func(string)
}

func (p *putNotifier) Put(ctx context.Context, key string, body io.Reader, size int64, opts objstore.PutOptions) (objstore.ObjectInfo, error) {
	info, err := p.Store.Put(ctx, key, body, size, opts)
	if err == nil {
		p.notify(key)
	}
	return info, err
}
