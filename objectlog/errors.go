package objectlog

import "errors"

// ErrCorrupt marks every error caused by bytes that are not a valid segment or record batch.
var ErrCorrupt = errors.New("objectlog: corrupt data")

// ErrTooLarge marks data that would decompress past the caller's limit (a compression bomb or an oversize batch).
var ErrTooLarge = errors.New("objectlog: data too large")
