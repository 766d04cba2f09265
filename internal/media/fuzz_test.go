package media

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"os"
	"testing"

	"github.com/herald-im/herald"
)

// FuzzThumbnail feeds untrusted bytes to what an image upload goes
// through on completion: the type check, the header read with its pixel
// limit, and the decode and scale of what passed. Nothing may panic, an
// image over the limit must be refused, and a thumbnail must fit.
func FuzzThumbnail(f *testing.F) {
	var j bytes.Buffer
	jpeg.Encode(&j, image.NewRGBA(image.Rect(0, 0, 40, 30)), nil)
	f.Add(j.Bytes())
	if b, err := os.ReadFile("testdata/blue-purple-pink.lossless.webp"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"))
	f.Add([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\x00\x00\x00\x01\x00\x00\x08\x02\x00\x00\x00"))
	th := newThumbnailer(1, 1, 1<<20, 64)
	f.Fuzz(func(t *testing.T, b []byte) {
		head := b[:min(len(b), SniffLen)]
		for _, declared := range []string{"image/jpeg", "image/png", "image/gif", "image/webp"} {
			_ = checkType(herald.KindImage, declared, sniff(head))
		}
		w, h, err := th.measure(bytes.NewReader(b))
		if err != nil {
			return
		}
		if int64(w)*int64(h) > th.maxPixels {
			t.Fatalf("measure passed %dx%d over the limit %d", w, h, th.maxPixels)
		}
		_, tw, tht, err := th.make(context.Background(), bytes.NewReader(b))
		if err == nil && (tw > 64 || tht > 64 || tw < 1 || tht < 1) {
			t.Fatalf("thumbnail %dx%d does not fit 64x64", tw, tht)
		}
	})
}
