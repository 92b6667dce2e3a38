package objectlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// fuzzLimit is FuzzDecompress's output limit: small enough that bombs are cheap to
// find, large enough for real batches.
const fuzzLimit = 1 << 20

// decompressSeed is a named FuzzDecompress input and what Decompress must make of
// it, so that the checked-in corpus keeps meaning something.
type decompressSeed struct {
	name  string // file under testdata/fuzz/FuzzDecompress
	codec Codec
	data  []byte
	want  error // nil, ErrCorrupt or ErrTooLarge
}

func decompressSeeds(t testing.TB) []decompressSeed {
	compress := func(c Codec, b []byte) []byte {
		out, err := Compress(nil, c, b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	records := jsonRecords(3000, 20)
	var seeds []decompressSeed
	for _, c := range codecList {
		valid := compress(c, records)
		seeds = append(seeds,
			decompressSeed{c.String() + "-valid-records", c, valid, nil},
			decompressSeed{c.String() + "-valid-empty", c, compress(c, nil), nil},
		)
		if c == CodecNone {
			continue
		}
		seeds = append(seeds,
			decompressSeed{c.String() + "-corrupt-truncated", c, valid[:len(valid)*2/3], ErrCorrupt},
			decompressSeed{c.String() + "-corrupt-garbage", c, randomBytes(64, uint64(c)), ErrCorrupt},
		)
	}

	// What other clients write, rather than what Compress does.
	gz := func(level int, b []byte) []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, level)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	lz := func(b []byte, opts ...lz4.Option) []byte {
		var buf bytes.Buffer
		zw := lz4.NewWriter(&buf)
		if err := zw.Apply(opts...); err != nil {
			t.Fatal(err)
		}
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	zs := func(b []byte, opts ...zstd.EOption) []byte {
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf, append(opts, zstd.WithEncoderConcurrency(1))...)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(b[:len(b)/2])
		zw.Flush() // commits a header without a content size, as streaming producers do
		zw.Write(b[len(b)/2:])
		zw.Close()
		return buf.Bytes()
	}
	zeros := make([]byte, 2<<20)
	seeds = append(seeds,
		decompressSeed{"gzip-valid-concatenated", CodecGzip, append(gz(gzip.BestSpeed, records[:100]), gz(gzip.BestCompression, records[100:])...), nil},
		decompressSeed{"gzip-toolarge-zeros", CodecGzip, gz(gzip.BestCompression, zeros), ErrTooLarge},
		decompressSeed{"snappy-valid-raw", CodecSnappy, snappy.Encode(nil, records), nil},
		decompressSeed{"snappy-valid-xerial-hand-built", CodecSnappy, xerialFrame(snappyHello, snappyABC), nil},
		decompressSeed{"snappy-valid-xerial-concatenated", CodecSnappy, append(xerialFrame(snappyABC), xerialFrame(snappyHello)...), nil},
		decompressSeed{"snappy-corrupt-s2-repeat", CodecSnappy, []byte{0x07, 0x08, 'a', 'b', 'c', 0x01, 0x00}, ErrCorrupt},
		decompressSeed{"snappy-toolarge-raw-claim", CodecSnappy, append(binary.AppendUvarint(nil, 2<<20), 0x10, 'h', 'e', 'l', 'l', 'o'), ErrTooLarge},
		decompressSeed{"lz4-valid-4mib-blocks-checksums", CodecLZ4, lz(records, lz4.BlockChecksumOption(true), lz4.SizeOption(uint64(len(records)))), nil},
		decompressSeed{"lz4-toolarge-zeros", CodecLZ4, lz(zeros), ErrTooLarge},
		decompressSeed{"zstd-valid-streamed", CodecZstd, zs(records), nil},
		decompressSeed{"zstd-valid-skippable", CodecZstd, append([]byte{0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'x', 'y', 'z'}, zstdFrame(5, []byte("hello"))...), nil},
		decompressSeed{"zstd-corrupt-content-size-lie", CodecZstd, zstdFrame(3<<20, []byte("hello")), ErrCorrupt},
		decompressSeed{"zstd-toolarge-zeros", CodecZstd, zs(zeros), ErrTooLarge},
		decompressSeed{"unknown-codec", 5, []byte("data"), ErrCorrupt},
	)
	return seeds
}

// checkDecompress is FuzzDecompress's oracle, shared with the corpus test.
func checkDecompress(t *testing.T, c Codec, data []byte) error {
	prefix := []byte("dst")
	out, err := Decompress(prefix, c, data, fuzzLimit)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("error wraps neither ErrCorrupt nor ErrTooLarge: %v", err)
		}
		if string(out) != "dst" {
			t.Fatalf("failed Decompress returned %d bytes, want dst unchanged", len(out))
		}
		return err
	}
	if !bytes.HasPrefix(out, []byte("dst")) {
		t.Fatalf("output does not start with dst")
	}
	out = out[3:]
	if len(out) > fuzzLimit {
		t.Fatalf("%d bytes out, limit %d", len(out), fuzzLimit)
	}
	// The limit is exact: the output fits in its own size and not in one less.
	again, err := Decompress(nil, c, data, len(out))
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("with limit = output size: %d bytes, %v", len(again), err)
	}
	if len(out) > 0 {
		if _, err := Decompress(nil, c, data, len(out)-1); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("with limit = output size - 1: got %v, want ErrTooLarge", err)
		}
	}
	compressed, err := Compress(nil, c, out)
	if err != nil {
		t.Fatalf("Compress: %v", err)
	}
	if back, err := Decompress(nil, c, compressed, len(out)); err != nil || !bytes.Equal(back, out) {
		t.Fatalf("round trip of the output: %d bytes, %v", len(back), err)
	}
	return nil
}

// FuzzDecompress feeds Decompress arbitrary input for every codec. The codec byte's
// low three bits pick the codec, so 5-7 exercise unknown codecs.
func FuzzDecompress(f *testing.F) {
	for _, s := range decompressSeeds(f) {
		f.Add(byte(s.codec), s.data)
	}
	f.Fuzz(func(t *testing.T, codec byte, data []byte) {
		checkDecompress(t, Codec(codec&7), data)
	})
}

// TestFuzzDecompressCorpus checks that every seed still means what its name says
// and that testdata/fuzz/FuzzDecompress holds it, so that `go test -fuzz` starts
// from them; -update-corpus (declared in fuzz_test.go) rewrites the files.
func TestFuzzDecompressCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecompress")
	for _, s := range decompressSeeds(t) {
		t.Run(s.name, func(t *testing.T) {
			if err := checkDecompress(t, s.codec, s.data); !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
				t.Errorf("Decompress: got %v, want %v", err, s.want)
			}
			syncCorpusFile(t, filepath.Join(dir, s.name), fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", byte(s.codec), s.data))
		})
	}
}
