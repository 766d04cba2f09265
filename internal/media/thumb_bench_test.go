package media

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"testing"
)

// BenchmarkThumbnail measures one photo's thumbnail (1024x768 JPEG): the
// CPU an image upload costs beyond its bytes.
func BenchmarkThumbnail(b *testing.B) {
	m := image.NewRGBA(image.Rect(0, 0, 1024, 768))
	for y := 0; y < 768; y++ {
		for x := 0; x < 1024; x++ {
			m.Set(x, y, color.RGBA{uint8(x / 4), uint8(y / 3), uint8(x * y), 255})
		}
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, m, &jpeg.Options{Quality: 80})
	th := newThumbnailer(1, 1, 50_000_000, 320)
	b.ResetTimer()
	for range b.N {
		if _, _, _, err := th.make(context.Background(), bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}
